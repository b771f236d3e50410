"""`GrowthCallback`: grow inside `model.fit` on a schedule."""

import inspect
import logging

import keras

from keras_split.growing.growing_model import GrowingModel
from keras_split.growing.growth_settings import (GrowthSettings, capped_growth_ratio,
                                                  validate_max_macs)
from keras_split.growing.twins import twin_statistics
from keras_split.select.flops import count_flops

logger = logging.getLogger(__name__)


class GrowthCallback(keras.callbacks.Callback):
    """Runs a growth stage every ``every_n_epochs`` epochs, up to ``max_stages`` or ``max_macs``.

    Growing inside one ``fit`` keeps one learning-rate schedule (a split keeps
    the optimizer's iteration count). What was measured on CIFAR-10 (README):
    grow early, e.g. ``every_n_epochs = epochs // 6`` with ``max_stages=3``, so
    that the network trains at its final width for the second half of the run
    (74 % of the final width's training MAC-epochs); ``epochs // 9`` was 0.5
    points better on validation, on 83 % of them.

    After every epoch the callback adds ``macs``, ``growth_stages`` and
    ``twin_fraction`` (see :func:`keras_split.twin_statistics`) to ``logs``, so
    that callbacks after it in the list (TensorBoard, CSVLogger, History) record
    them.

    Args:
        data: the batches for eigen estimation (see ``GrowingModel.grow``).
        every_n_epochs: grow after every this many epochs (>= 1).
        max_macs: stop growing once the model has this many MACs; the last
            stage's ratio is reduced so as not to pass it. None: no limit.
        max_stages: at most this many stages. None: no limit.
        **grow_kwargs: passed to ``GrowingModel.grow``: ``settings`` (a
            GrowthSettings) and settings by name (``growth_ratio``, ``cost``,
            ``method``, ``split_rule``...); checked here, not at epoch N.

    Raises:
        ValueError: for a bad schedule argument or a bad ``grow`` argument.

    Example:
        >>> model.fit(train, epochs=24, callbacks=[
        ...     GrowthCallback(train.take(8), every_n_epochs=4, max_stages=3)])
    """

    def __init__(self, data, every_n_epochs=5, max_macs=None, max_stages=None, **grow_kwargs):
        super().__init__()
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError("every_n_epochs must be a positive integer. "
                             f"Received: every_n_epochs={every_n_epochs!r}")
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
        self.max_macs = max_macs
        self.max_stages = max_stages
        self.grow_kwargs = dict(grow_kwargs)
        self.stages = []
        # EarlyStopping callbacks of the same fit that restore best weights (see
        # prepare_fit_callbacks): their best weights are of the narrower network.
        self.restorers = []
        self._counted = (None, None)  # (network, its MACs): counted once per architecture

    def on_epoch_end(self, epoch, logs=None):
        stage = None
        if not (epoch + 1) % self.every_n_epochs and (
                self.max_stages is None or len(self.stages) < self.max_stages):
            stage = self._grow()
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
        when the model is at the cap."""
        ratio = self._settings.growth_ratio
        if self.max_macs is not None:
            ratio = capped_growth_ratio(self._macs(), ratio, self.max_macs)
            if ratio is None:
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
