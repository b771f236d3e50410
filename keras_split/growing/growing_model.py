"""`GrowingModel`: a Keras model that can estimate splitting eigenpairs and widen itself."""

import logging

import keras

from keras_split import compat
from keras_split.estimate import exact
from keras_split.graph.activations import SOFTPLUS_BETA
from keras_split.graph.channel_graph import ChannelGraph
from keras_split.graph.functional_model import as_functional
from keras_split.growing import distributed, input_data
from keras_split.growing.compiled_loss import loss_function
from keras_split.growing.eigen_methods import run_method
from keras_split.growing.growth import run_stage
from keras_split.growing.growth_stage import GrowthStage
from keras_split.growing.growth_settings import (EIGEN_EPOCHS, EIGEN_TOL, GrowthSettings,
                                                  validate_eigen_args)
from keras_split.surgery import widening
from keras_split.surgery.catch_up import CatchUp
from keras_split.surgery.optimizer_state import rebuild_optimizer
from keras_split.surgery.split_rule import SplitRule

logger = logging.getLogger(__name__)

@keras.saving.register_keras_serializable(package="keras_split")
class GrowingModel(distributed.MultiWorkerSteps, keras.Model):
    """A Keras model that grows by splitting steepest descent.

    It behaves as the wrapped model for ``compile``, ``fit``, ``evaluate``,
    ``predict``, ``save`` and ``summary``, and adds
    :meth:`splitting_eigenpairs` and :meth:`split`. Ordinary training runs the
    wrapped model's own layers and nothing else.

    Args:
        model: a functional or Sequential ``keras.Model`` built from supported
            layers (see :mod:`keras_split.graph.handlers`).
        surrogate: ``"softplus"`` (default) gives piecewise-linear activations
            (ReLU family, identity) the second derivative of ``softplus(beta z) /
            beta``, as the splitting papers' code does; None uses the true second
            derivative everywhere (zero for those activations).
        surrogate_beta: that ``beta`` (3 by default; larger is sharper).
        growth_history: earlier :class:`~keras_split.GrowthStage` objects or their
            dicts (as ``.keras`` files hold them); the attribute lists objects.
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Raises:
        ValueError: for an unsupported layer, a nested or shared layer, or a
            bad ``surrogate`` or ``surrogate_beta``; the message names the layer.

    Example:
        >>> model = GrowingModel(keras.Sequential([keras.Input((4,)),
        ...     keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)]))
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> eig = model.splitting_eigenpairs((x, y), method="exact")
        >>> model.split({"dense": [0, 3]}, eigenpairs=eig, epsilon=1e-2)
    """

    def __init__(self, model, surrogate="softplus", growth_history=None,
                 surrogate_beta=SOFTPLUS_BETA, **kwargs):
        network = as_functional(model)
        graph = ChannelGraph(network, surrogate, surrogate_beta)
        self.surrogate, self.surrogate_beta = graph.surrogate, graph.surrogate_beta
        kwargs.setdefault("name", f"growing_{network.name}")
        super().__init__(**kwargs)
        self.network = network
        self._graph = graph
        self.growth_history = [GrowthStage.from_dict(s) for s in growth_history or []]
        self._catch_up = CatchUp()
        self.built = True

    # --------------------------------------------------------------- keras API
    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def train_step(self, data):
        """``keras.Model.train_step``; the gradients of entries that a split with
        ``SplitRule.catch_up > 1`` created are scaled (see :mod:`keras_split.surgery.catch_up`)."""
        if not self._catch_up.active or getattr(self, "optimizer", None) is None:
            return super().train_step(data)
        transform = self._catch_up.transform(self.optimizer.iterations)
        with compat.gradient_transform(self.optimizer, transform):
            return super().train_step(data)

    @property
    def catch_up(self):
        """The :class:`~keras_split.surgery.catch_up.CatchUp` record of the entries splits
        created: training state that a ``.keras`` file does not hold."""
        return self._catch_up

    @catch_up.setter
    def catch_up(self, record):
        self._catch_up = record

    def compute_output_shape(self, input_shape):
        return self.network.compute_output_shape(input_shape)

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.network),
            "surrogate": self.surrogate,
            "surrogate_beta": self.surrogate_beta,
            "growth_history": [s.to_dict() for s in self.growth_history],
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(network, **config)

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``; with a :class:`keras_split.GrowthCallback` among the callbacks,
        the others are checked and linked to it first (``prepare_fit_callbacks``)."""
        from keras_split.growing.growth_callback import prepare_fit_callbacks

        prepare_fit_callbacks(kwargs.get("callbacks", args[5] if len(args) > 5 else None))
        return super().fit(*args, **kwargs)

    def get_layer(self, name=None, index=None):
        """A layer of the wrapped network (``fc``, ``conv1``...), as users expect
        (ValueError for a name or index the network does not have)."""
        return self.network.get_layer(name=name, index=index)

    def strip(self):
        """A plain functional ``keras.Model`` with this architecture and weights.

        Returns:
            A ``keras.Model`` that loads without keras_split (``keras_split.export.strip``
            does the same for any model).
        """
        plain = keras.models.clone_model(self.network)
        plain.set_weights(self.network.get_weights())
        return plain

    def found_architecture(self, seed=None):
        """The grown architecture with fresh weights: the network search's result.

        Every layer is rebuilt from its config (so with its initializers), with
        the widths growth found; nothing is copied from the trained weights.

        Args:
            seed: seeds the initializers (``keras.utils.set_random_seed``) when given.

        Returns:
            An uncompiled functional ``keras.Model`` (no keras_split class inside).

        Example:
            >>> fresh = model.found_architecture(seed=0)
            >>> fresh.compile(optimizer="sgd", loss="mse"); fresh.fit(x, y)
        """
        if seed is not None:
            keras.utils.set_random_seed(seed)
        return keras.models.clone_model(self.network)

    # -------------------------------------------------------------- splitting
    @property
    def splittable_layers(self):
        """Names of the layers whose units can be split, in graph order."""
        return list(self._graph.splittable_layers)

    def coupled_groups(self):
        """The coupled channel groups with more than one member.

        Returns:
            A list of ``[(layer_name, unit), ...]`` lists, e.g. the producers
            whose outputs meet in a residual ``Add``.
        """
        return [m for m in self._graph.groups.values() if len(m) > 1]

    @property
    def channel_graph(self):
        """The :class:`~keras_split.graph.channel_graph.ChannelGraph` of the current
        network (producers, units, coupled groups), rebuilt at every split; read-only."""
        return self._graph

    def splitting_loss(self):
        """``loss_fn(x, y, y_pred, sample_weight)``: the compiled loss in inference mode
        (the batch mean), as the eigen estimators take it.

        Raises:
            ValueError: when the model is not compiled with a loss.
        """
        return loss_function(self)

    def splitting_eigenpairs(self, data, method="lobpcg", layers=None, batch_size=32,
                             eigen_epochs=EIGEN_EPOCHS, learning_rate=0.01, eval_data=None, seed=0,
                             max_bytes=exact.DEFAULT_MAX_EXACT_BYTES, verbose=0,
                             eigen_tol=EIGEN_TOL, reach=None):
        """Minimum eigenpairs of every splittable neuron's splitting matrix.

        BatchNormalization is frozen (inference statistics) and dropout is off.
        Under a ``tf.distribute`` strategy with several replicas, the lobpcg and
        fast methods split every batch across them (all-reduced across the
        workers of a ``MultiWorkerMirroredStrategy`` too); exact runs on one
        device, refused across workers. A warning names the neurons whose
        estimate is still off by 25 %.

        Args:
            data: a batched ``tf.data.Dataset`` of ``(x, y)`` or an ``(x, y)``
                tuple of arrays; the loss is the compiled loss.
            method, eigen_epochs, eigen_tol, learning_rate, seed, batch_size: as
                in :class:`~keras_split.growing.growth_settings.GrowthSettings`.
            layers: restrict to these layer names (default: all splittable).
            eval_data: lobpcg and fast methods: data on which the final
                eigenvalues are measured (default: ``data``).
            max_bytes: exact method: the cap on its memory (4 GiB; see exact.splitting_matrices).
            verbose: 0 silent, 1 progress bar.
            reach: lobpcg: ``(pairs, loss) -> {layer: bool[units]}``, the neurons
                whose convergence stops the iterations (``grow``: those its
                knapsack could pick); None: every neuron above the noise level.

        Returns:
            ``{layer_name: Eigenpairs}``, a LayerEigenpairs whose ``loss`` is the
            mean loss on the evaluation data (lobpcg and fast; None for exact).

        Raises:
            ValueError: for an uncompiled model, a bad ``method`` or layer name
                (``"exact"`` under a multi-worker strategy),
                empty or non-finite data, or exact matrices too large.

        Example:
            >>> eig = model.splitting_eigenpairs((x, y), method="exact")
        """
        validate_eigen_args(method, eigen_epochs, eigen_tol, seed)
        distributed.check_method(method, self.distribute_strategy)
        self._check_layers(layers)
        data, eval_data = input_data.estimation_datasets(self, data, eval_data, batch_size)
        return run_method(self, method, data, eval_data, layers=layers, batch_size=batch_size,
                          eigen_epochs=eigen_epochs, eigen_tol=eigen_tol,
                          learning_rate=learning_rate, seed=seed, max_bytes=max_bytes,
                          verbose=verbose, reach=reach)

    def _check_layers(self, layers):
        """Raises ValueError for a name in ``layers`` that is not a splittable layer."""
        for name in layers or ():
            if name not in self._graph.splittable_layers:
                raise ValueError(f"Layer '{name}' is not a splittable layer of this model. "
                                 f"Splittable layers: {self._graph.splittable_layers}.")

    def split(self, plan, eigenpairs=None, epsilon=None, split_rule="copy", seed=0):
        """Splits the named units in place, each into two children made by ``split_rule``.

        Every rule keeps the network's function at ``epsilon = 0`` (see
        :class:`keras_split.SplitRule`). Naming any producer of a coupled group (a
        residual ``Add``) splits all of its producers. The optimizer keeps its
        iteration count and its slots; both children start with the parent's
        (the second child's are zero when the rule has ``reset_slots``).

        Args:
            plan: ``{layer_name: [unit, ...]}``; a unit named twice is an error.
            eigenpairs: the result of :meth:`splitting_eigenpairs`; required
                when the rule steps along eigenvectors (``epsilon != 0``).
            epsilon: overrides the rule's step (absolute, or relative to each
                neuron's weight norm when the rule is ``relative``).
            split_rule: a name in ``keras_split.surgery.split_rule.RULES``, a
                ``SplitRule`` or its config dict.
            seed: seed of the rule's random draws.

        Returns:
            ``{layer_name: (units_before, units_after)}`` for every widened producer.

        Raises:
            ValueError: for unknown layers, bad or repeated unit indices,
                missing eigenpairs or a bad ``epsilon``; the model is left unchanged.

        Example:
            >>> model.split({"fc": [0, 3]}, eigenpairs=eig, epsilon=1e-2)
            {'fc': (16, 18)}
        """
        rule = SplitRule.get(split_rule, epsilon)
        groups = widening.resolve_plan(self._graph, plan)
        return self.commit(self.widened_candidate(groups, eigenpairs, rule, seed), rule)

    def widened_candidate(self, groups, eigenpairs, rule, seed=0):
        """This network with coupled ``groups`` split by ``rule``, built aside (the model
        is unchanged): a :class:`~keras_split.surgery.widening.WidenedNetwork` to
        evaluate, then :meth:`commit` or drop.

        Example:
            >>> candidate = model.widened_candidate([0, 2], eig, rule)
            >>> model.commit(candidate, rule)
        """
        plans = widening.plan_edits(self._graph, groups, eigenpairs, rule, seed)
        # Under tf.distribute, the new variables must be created in the model's strategy.
        with self.distribute_strategy.scope():
            return widening.widen_model(self._graph, plans)

    def commit(self, candidate, rule):
        """Makes a :meth:`widened_candidate` of this network the model's network; the
        optimizer keeps its iterations and its slots follow the weights.

        Returns:
            ``{layer_name: (units_before, units_after)}`` for every widened producer.
        """
        new_graph = ChannelGraph(candidate.network, self.surrogate, self.surrogate_beta)
        summary = {n: (self._graph.units(n), new_graph.units(n)) for n in self._graph.producers
                   if new_graph.units(n) != self._graph.units(n)}
        self._replace_network(candidate, new_graph, rule)
        logger.info("Split: %s", summary)
        return summary

    def _replace_network(self, widened, graph, rule):
        network, old_optimizer = widened.network, getattr(self, "optimizer", None)
        optimizer, iteration = old_optimizer, 0
        if old_optimizer is not None and self.compiled:
            # Built before anything changes, so that a failure leaves the model as it was.
            with self.distribute_strategy.scope():
                optimizer = rebuild_optimizer(old_optimizer, widened.var_edits,
                                              network.trainable_variables, rule.reset_slots,
                                              sources=widened.sources)
            iteration = int(keras.ops.convert_to_numpy(old_optimizer.iterations))
        catch_up = self._catch_up.after_split(widened.var_edits, network.trainable_variables,
                                              iteration, rule.catch_up)
        self._restore((network, graph, optimizer, self.train_function is not None, catch_up))

    def _snapshot(self):
        """What :meth:`_restore` needs to undo a later ``_replace_network``."""
        return (self.network, self._graph, getattr(self, "optimizer", None),
                self.train_function is not None, self._catch_up)

    def _restore(self, snapshot):
        """Makes ``snapshot``'s network, graph, optimizer and catch-up record this
        model's (no copies)."""
        network, graph, optimizer, had_train_function, catch_up = snapshot
        compat.untrack(self, self.network)
        self.network = network
        self._graph = graph
        self._catch_up = catch_up
        self.train_function = self.test_function = self.predict_function = None
        if optimizer is not None and self.compiled:
            self.optimizer = optimizer
        if had_train_function:
            # Growing inside fit (GrowthCallback): the loop calls train_function next.
            self.make_train_function(force=True)

    # ----------------------------------------------------------------- growth
    def grow(self, x=None, y=None, settings=None, eval_data=None, dry_run=False, log_dir=None,
             verbose=0, **overrides):
        """One energy-aware growth stage: eigenpairs, costs, knapsack selection, split.

        The MACs after the stage are at most ``(1 + growth_ratio)`` times those
        before, and the held-out loss does not rise: the step shrinks, or the
        split is undone (``stage.guard``). At most the first 200 batches (1 GiB)
        of the data are read.

        Args:
            x: like ``fit``: input arrays with ``y``, or a batched ``tf.data.Dataset``
                of ``(x, y)`` (or ``(x, y, sample_weight)``), or an ``(x, y)`` tuple.
                Unless ``eval_data`` is given, the last 20 % of its batches (when
                it has at least 5) are held out for the eigenvalues and the loss.
                It must hold at least 2 examples (``estimation_data.MIN_EXAMPLES``).
            y: the targets when ``x`` holds input arrays.
            settings: a :class:`~keras_split.growing.growth_settings.GrowthSettings`
                (default: its defaults: ``growth_ratio=0.5``, ``cost="flops"``,
                ``method="lobpcg"``, ``split_rule="fresh"``, ...).
            eval_data: batches for the final eigenvalues and the loss change.
            dry_run: return the plan without changing the model.
            log_dir: write TensorBoard scalars and lambda histograms there
                (created, or refused, before any work).
            verbose: 0 silent, 1 or ``"auto"`` progress bar and a one-line
                summary, 2 the summary only.
            **overrides: settings by name, replacing those of ``settings``
                (``growth_ratio``, ``cost``, ``seed``, ``batch_size``, ...).

        Returns:
            A :class:`keras_split.GrowthStage`, also appended to
            ``growth_history`` unless ``dry_run``.

        Raises:
            ValueError: for a bad argument (naming it), an uncompiled model, data
                that is empty, non-finite or of fewer than 2 examples, or a ``log_dir``
                that cannot be written. A stage that splits nothing is not an error.
            TypeError: for a ``log_dir`` that is not a path.

        Example:
            >>> stage = model.grow(train_ds, growth_ratio=0.5)
            >>> stage = model.grow(x_train[:1024], y_train[:1024], batch_size=128)
        """
        if x is None:
            raise ValueError("grow needs data: grow(x, y) with arrays, or grow(dataset).")
        verbose = 1 if verbose == "auto" else verbose
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")
        settings = GrowthSettings.from_arguments(settings, **overrides)
        snapshot = self._snapshot()
        try:
            stage = run_stage(self, x if y is None else (x, y), settings, eval_data=eval_data,
                              dry_run=dry_run, log_dir=log_dir, verbose=verbose)
            if not dry_run:
                self.growth_history.append(stage)
        except BaseException:
            # Whatever failed, before or after the split (statistics, TensorBoard, an
            # interrupt): the model is left as it was.
            self._restore(snapshot)
            raise
        return stage
