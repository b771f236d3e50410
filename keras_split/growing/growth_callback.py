"""`GrowthCallback`: grow inside `model.fit` on a schedule."""

import inspect
import logging

import keras

from keras_split.growing import input_data
from keras_split.growing.estimation_data import MIN_EXAMPLES
from keras_split.growing.growing_model import GrowingModel
from keras_split.growing.growth import prepare_log_dir
from keras_split.growing.growth_settings import (GrowthSettings, capped_growth_ratio,
                                                  validate_max_macs)
from keras_split.growing.twins import twin_statistics
from keras_split.select.flops import count_flops
from keras_split.select.limits import check_budgets, exceeded_budget

logger = logging.getLogger(__name__)


# Default placement: DEFAULT_STAGES stages, one every max(1, epochs // STAGE_SPACING)
# epochs, none in the second half of the run (the new units then train for at least
# half of it). For 16 epochs: after epochs 2, 4 and 6.
DEFAULT_STAGES = 3
STAGE_SPACING = 8


def default_stage_epochs(epochs, stages=DEFAULT_STAGES):
    """The epochs after which :class:`GrowthCallback` grows by default in a ``fit`` of
    ``epochs`` epochs.

    Args:
        epochs: the number of epochs of the ``fit``.
        stages: at most this many stages.

    Returns:
        A sorted list of 1-based epoch numbers: ``k * max(1, epochs // 8)`` for ``k =
        1..stages``, those in the first half of the run only (empty below 2 epochs).

    Example:
        >>> default_stage_epochs(16)
        [2, 4, 6]
        >>> default_stage_epochs(60)
        [7, 14, 21]
    """
    every = max(1, int(epochs) // STAGE_SPACING)
    return [k * every for k in range(1, stages + 1) if k * every <= int(epochs) // 2]


class GrowthCallback(keras.callbacks.Callback):
    """Grows the model during ``model.fit``: at evidence-based epochs, or on a fixed period.

    By default (``every_n_epochs=None``) the callback reads the number of
    epochs ``N`` of the ``fit`` it runs in and grows ``max_stages`` (default 3)
    times, after epochs ``k * max(1, N // 8)``, never in the second half of the
    run (see :func:`default_stage_epochs`): chosen on CIFAR-10 validation splits
    across network families, growing early lets the new units train for most of
    the run at a modest cost in MAC-epochs. With ``every_n_epochs`` it grows
    after every that many epochs instead (up to ``max_stages``, unlimited by
    default), but never after the last epoch, where the new units could not
    train. A growing ``fit`` keeps one learning-rate schedule (a split keeps
    the optimizer's iteration count).

    After every epoch the callback adds ``macs``, ``growth_stages`` and
    ``twin_fraction`` (see :func:`keras_split.twin_statistics`) to ``logs``, so
    that callbacks after it in the list (TensorBoard, CSVLogger, History) record
    them. ``stage_epochs`` lists the epochs after which it grew.

    Args:
        data: the batches for eigen estimation (see ``GrowingModel.grow``).
        every_n_epochs: None (the default placement) or grow after every this
            many epochs (>= 1).
        max_macs: stop growing once the model has this many MACs; the last
            stage's ratio is reduced so as not to pass it. None: no limit.
        max_stages: at most this many stages (None: 3 with the default
            placement, unlimited with ``every_n_epochs``).
        grow_after: instead of the default placement or ``every_n_epochs``:
            grow after exactly these (1-based) epochs, an increasing list
            (those at or after the fit's last epoch are dropped with a warning).
        **grow_kwargs: passed to ``GrowingModel.grow``: ``settings`` (a
            GrowthSettings) and settings by name (``growth_ratio``, ``cost``,
            ``method``, ``split_rule``...); checked here, not at epoch N. With
            ``budgets``, a due stage finding the network above a limit (a measured
            cost such as a latency can move between stages) is skipped with a
            warning, and the fit goes on.

    Raises:
        ValueError: for a bad schedule argument or a bad ``grow`` argument; when
            ``fit`` begins, for data whose first batch does not fit the model or
            holds NaN, data of fewer than 2 examples, a ``log_dir`` that
            cannot be written or a network above one of its ``budgets`` (before
            any training step).
        TypeError: in ``fit``, for a model that is not a ``GrowingModel``, or a
            ``log_dir`` that is not a path.

    Example:
        >>> model.fit(train, epochs=16, callbacks=[GrowthCallback(train.take(16))])
        >>> # grows after epochs 2, 4 and 6
    """

    def __init__(self, data, every_n_epochs=None, max_macs=None, max_stages=None,
                 grow_after=None, **grow_kwargs):
        super().__init__()
        if every_n_epochs is not None and (isinstance(every_n_epochs, bool)
                                           or not isinstance(every_n_epochs, int)
                                           or every_n_epochs < 1):
            raise ValueError("every_n_epochs must be None or a positive integer. "
                             f"Received: every_n_epochs={every_n_epochs!r}")
        if grow_after is not None:
            if every_n_epochs is not None:
                raise ValueError("Pass every_n_epochs or grow_after, not both. Received: "
                                 f"every_n_epochs={every_n_epochs!r}, "
                                 f"grow_after={grow_after!r}")
            if (not isinstance(grow_after, (list, tuple)) or not grow_after
                    or any(isinstance(e, bool) or not isinstance(e, int) or e < 1
                           for e in grow_after)
                    or list(grow_after) != sorted(set(grow_after))):
                raise ValueError("grow_after must be a non-empty increasing list of "
                                 "positive epoch numbers (1-based). "
                                 f"Received: grow_after={grow_after!r}")
        validate_max_macs(max_macs)
        if max_stages is not None and (isinstance(max_stages, bool)
                                       or not isinstance(max_stages, int) or max_stages < 0):
            raise ValueError("max_stages must be a non-negative integer. "
                             f"Received: max_stages={max_stages!r}")
        # grow()'s own arguments besides the data and the settings by name.
        per_call = set(inspect.signature(GrowingModel.grow).parameters) - {
            "self", "x", "y", "overrides"}
        # Checked now, not at epoch N: a bad or unknown setting is named here.
        self._settings = GrowthSettings.from_arguments(
            grow_kwargs.get("settings"),
            **{k: v for k, v in grow_kwargs.items() if k not in per_call})
        self.data = data
        self.every_n_epochs = every_n_epochs
        self.grow_after = None if grow_after is None else list(grow_after)
        self.max_macs = max_macs
        self.max_stages = max_stages
        self.grow_kwargs = dict(grow_kwargs)
        self.stages = []
        self.stage_epochs = []
        self._planned = None  # the default placement's epochs, set when fit begins
        # EarlyStopping callbacks of the same fit that restore best weights (see
        # prepare_fit_callbacks): their best weights are of the narrower network.
        self.restorers = []
        self._counted = (None, None)  # (network, its MACs): counted once per architecture

    def set_model(self, model):
        """Refuses a model that cannot grow before ``fit`` trains it."""
        if not isinstance(model, GrowingModel):
            raise TypeError(
                "GrowthCallback grows a keras_split GrowingModel: wrap the model before "
                "compiling it, model = ks.GrowingModel(model). "
                f"Received: model={type(model).__name__} '{getattr(model, 'name', '')}'")
        super().set_model(model)

    def on_train_begin(self, logs=None):
        # One batch of the growth data, checked before the first training step (shapes,
        # numbers, NaN, enough examples), rather than at the first stage; the same for
        # the TensorBoard folder.
        input_data.check_batch(self.model, input_data.model_dataset(
            self.model, self.data, self._settings.estimation_batch_size), finite=True,
            min_examples=MIN_EXAMPLES)
        if self.grow_kwargs.get("log_dir") is not None:
            prepare_log_dir(self.grow_kwargs["log_dir"])
        check_budgets(self.model.channel_graph, self._settings.budget_models)
        epochs = (self.params or {}).get("epochs")
        if self.grow_after is not None:
            self._planned = {e for e in self.grow_after if epochs is None or e < epochs}
            if len(self._planned) < len(self.grow_after):
                logger.warning("GrowthCallback: no stage after epoch %s of %s (the new units "
                               "would not train).", max(self.grow_after), epochs)
        elif self.every_n_epochs is None:
            stages = DEFAULT_STAGES if self.max_stages is None else self.max_stages
            self._planned = set(default_stage_epochs(epochs or 0, stages))
            if not self._planned:
                logger.warning("GrowthCallback: a fit of %s epochs is too short to grow in "
                               "(the new units would not train); no stage will run.", epochs)

    def _due(self, epoch):
        """Whether to grow after the 0-based ``epoch``."""
        done = epoch + 1
        if self.max_stages is not None and len(self.stages) >= self.max_stages:
            return False
        if self.every_n_epochs is None:   # the default placement or grow_after
            return done in (self._planned or ())
        if done % self.every_n_epochs:
            return False
        last = (self.params or {}).get("epochs")
        if last is not None and done >= last:
            logger.info("GrowthCallback: no stage after the last epoch (%d): the new units "
                        "would never train.", done)
            return False
        return True

    def on_epoch_end(self, epoch, logs=None):
        stage = None
        if self._due(epoch):
            stage = self._grow()
            if stage is not None:
                self.stage_epochs.append(epoch + 1)
        if logs is not None:
            logs["macs"] = float(self._macs())
            logs["growth_stages"] = float(len(self.stages))
            # A stage measured the twins of the weights it left: the same as now.
            twins = getattr(stage, "twins", None) or twin_statistics(self.model)
            logs["twin_fraction"] = float(twins["twin_fraction"])

    def _macs(self):
        """The model's MACs, counted again only when its network changed."""
        network = self.model.network
        if self._counted[0] is not network:
            self._counted = (network, count_flops(self.model))
        return self._counted[1]

    def _grow(self):
        """Grows the model once (under the MACs cap); returns the GrowthStage, or None
        when the model is at the cap or already above a further budget (measured costs,
        such as a latency, can move between stages: the fit goes on without growing)."""
        ratio = self._settings.growth_ratio
        if self.max_macs is not None:
            ratio = capped_growth_ratio(self._macs(), ratio, self.max_macs)
            if ratio is None:
                return None
        over = exceeded_budget(self.model.channel_graph, self._settings.budget_models)
        if over is not None:
            logger.warning("GrowthCallback: no stage at this epoch: %s.", over.describe())
            return None
        kwargs = dict(self.grow_kwargs, growth_ratio=ratio)
        stage = self.model.grow(self.data, **kwargs)
        self.stages.append(stage)
        if not stage.dry_run and stage.macs_after != stage.macs_before:
            for early in self.restorers:
                # The best weights kept so far are of the narrower network: the best epoch
                # is now looked for among the grown network's epochs.
                early.best, early.best_weights, early.wait = None, None, 0
                logger.info("EarlyStopping: the best epoch is counted again from the growth "
                            "after epoch %d (the best weights so far are of the narrower "
                            "network).", len(self.stages))
        return stage


def prepare_fit_callbacks(callbacks):
    """Checks the callbacks of a ``fit`` that grows, and links those that must follow it.

    With a :class:`GrowthCallback` in the list:

    * ``EarlyStopping(restore_best_weights=True)`` works: after every split it
      forgets the best weights of the narrower network, so that it restores the
      best epoch of the final width;
    * ``ModelCheckpoint`` works when it saves whole models (a ``.keras`` file
      holds the grown architecture); weights-only checkpoints are refused,
      since they could not be loaded into the model as built;
    * ``BackupAndRestore`` is refused: on a restart it would restore grown
      weights into the model as built. ``keras_split.grow_schedule`` resumes
      growth runs from their run directory instead.

    Args:
        callbacks: the ``callbacks`` argument of ``fit`` (None or a list).

    Raises:
        ValueError: for a callback that cannot follow a growing model, naming it.
    """
    callbacks = list(callbacks or [])
    growers = [cb for cb in callbacks if isinstance(cb, GrowthCallback)]
    if not growers:
        return
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.BackupAndRestore):
            raise ValueError(
                "BackupAndRestore cannot follow a GrowthCallback: on a restart it restores "
                "the grown network's weights into the model as built. Use "
                "keras_split.grow_schedule(build_model, data, out_dir), which resumes "
                "growth runs from out_dir.")
        if isinstance(cb, keras.callbacks.ModelCheckpoint) and cb.save_weights_only:
            raise ValueError(
                "ModelCheckpoint(save_weights_only=True) cannot follow a GrowthCallback: "
                "its files hold weights of several widths that the model as built cannot "
                "load. Use save_weights_only=False (a .keras file keeps the architecture).")
    for grower in growers:
        grower.restorers = [cb for cb in callbacks
                            if isinstance(cb, keras.callbacks.EarlyStopping)
                            and cb.restore_best_weights]
