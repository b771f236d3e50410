"""`GrowingModel`: a Keras model that can estimate splitting eigenpairs and widen itself."""

import logging

import keras
import numpy as np
import tensorflow as tf

from keras_split import compat, data_utils, growth, lobpcg, splitting, surgery
from keras_split.activations import validate_surrogate
from keras_split.channel_graph import ChannelGraph
from keras_split.eigenpairs import (UNCONVERGED_RESIDUAL, eigen_passes, relative_residual,
                                     unconverged_neurons)
from keras_split.split_rule import SplitRule

logger = logging.getLogger(__name__)

METHODS = growth.METHODS


def as_functional(model):
    """A functional model computing ``model`` with the same layer objects.

    Args:
        model: a functional or Sequential ``keras.Model``.

    Returns:
        A functional ``keras.Model`` (``model`` itself when already functional).

    Raises:
        ValueError: for a subclassed model, or a Sequential model without an
            input shape.
    """
    if isinstance(model, keras.Sequential):
        if not model.built or model.inputs is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no input shape; start it "
                "with keras.Input(shape) so that it can be grown."
            )
        inputs = keras.Input(batch_shape=tuple(model.inputs[0].shape),
                             dtype=model.inputs[0].dtype, name=f"{model.name}_input")
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if not isinstance(model, keras.Model) or compat.functional_graph(model) is None:
        raise ValueError(
            f"GrowingModel needs a functional or Sequential keras.Model, got "
            f"{type(model).__name__}: subclassed models have no graph to split."
        )
    nested = [n.operation.name for n in compat.graph_nodes(model)
              if isinstance(n.operation, keras.Model)]
    if not nested:
        return model
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name.split(":")[0])
              for t in model.inputs]
    outputs = _inline(model, inputs)
    logger.info("Flattened the nested models %s of '%s' into one graph (same layers): the "
                "grown model is flat.", nested, model.name)
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)


def _inline(model, inputs):
    """``model``'s outputs on ``inputs``, calling its layers one by one, and those of any
    nested functional or Sequential model in its place."""
    model = as_functional(model) if isinstance(model, keras.Sequential) else model
    tensors = {id(ref): value for ref, value in zip(model.inputs, inputs)}
    for node in compat.graph_nodes(model):
        args, kwargs = compat.call_arguments(node, tensors)
        if isinstance(node.operation, keras.Model):
            outs = _inline(node.operation, keras.tree.flatten(args))
        else:
            outs = node.operation(*args, **kwargs)
        for ref, value in zip(node.outputs, keras.tree.flatten(outs)):
            tensors[id(ref)] = value
    return [tensors[id(t)] for t in model.outputs]


@keras.saving.register_keras_serializable(package="keras_split")
class GrowingModel(keras.Model):
    """A Keras model that grows by splitting steepest descent.

    It behaves as the wrapped model for ``compile``, ``fit``, ``evaluate``,
    ``predict``, ``save`` and ``summary``, and adds
    :meth:`splitting_eigenpairs` and :meth:`split`. Ordinary training runs the
    wrapped model's own layers and nothing else.

    Args:
        model: a functional or Sequential ``keras.Model`` built from supported
            layers (see :mod:`keras_split.handlers`).
        surrogate: ``"softplus"`` (default) gives piecewise-linear activations
            (ReLU family, identity) the second derivative of
            ``softplus(3 z) / 3``, as the splitting papers' code does; None uses
            the true second derivative everywhere (zero for those activations).
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Raises:
        ValueError: for an unsupported layer, a nested or shared layer, or a
            bad ``surrogate``; the message names the layer.

    Example:
        >>> model = GrowingModel(keras.Sequential([keras.Input((4,)),
        ...     keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)]))
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> eig = model.splitting_eigenpairs((x, y), method="exact")
        >>> model.split({"dense": [0, 3]}, eigenpairs=eig, epsilon=1e-2)
    """

    def __init__(self, model, surrogate="softplus", growth_history=None, **kwargs):
        self.surrogate = validate_surrogate(surrogate)
        network = as_functional(model)
        graph = ChannelGraph(network, surrogate=self.surrogate)
        kwargs.setdefault("name", f"growing_{network.name}")
        super().__init__(**kwargs)
        self.network = network
        self._graph = graph
        self.growth_history = list(growth_history or [])
        self.built = True

    # --------------------------------------------------------------- keras API
    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.network.compute_output_shape(input_shape)

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.network),
            "surrogate": self.surrogate,
            "growth_history": list(self.growth_history),
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
        """``keras.Model.fit``; with a :class:`keras_split.GrowthCallback` among the
        callbacks, the others are checked and linked to it first (see
        :func:`keras_split.growth_callback.prepare_fit_callbacks`)."""
        from keras_split.growth_callback import prepare_fit_callbacks

        prepare_fit_callbacks(kwargs.get("callbacks", args[5] if len(args) > 5 else None))
        return super().fit(*args, **kwargs)

    def get_layer(self, name=None, index=None):
        """A layer of the wrapped network (``fc``, ``conv1``...), as users expect.

        Raises:
            ValueError: for a name or index the network does not have.
        """
        return self.network.get_layer(name=name, index=index)

    def strip(self):
        """A plain functional ``keras.Model`` with this architecture and weights.

        Returns:
            A ``keras.Model`` that loads without keras_split (see ``keras_split.export``).
        """
        from keras_split.export import strip

        return strip(self)

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

    def _loss_fn(self):
        if not compat.has_compiled_loss(self):
            raise ValueError(
                "The model must be compiled with a loss before splitting "
                "eigenpairs can be estimated: call model.compile(optimizer, loss)."
            )

        def loss_fn(x, y, y_pred, sample_weight):
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred,
                                     sample_weight=sample_weight, training=False)
            # In a replica context Keras divides the loss by the number of replicas
            # (their gradients are summed); undo it: the splitting matrices are
            # defined with the mean loss of the (per-replica) batch.
            context = tf.distribute.get_replica_context()
            if tf.distribute.has_strategy() and context is not None:
                loss = loss * tf.cast(context.num_replicas_in_sync, loss.dtype)
            return loss

        return loss_fn

    def _check_labels(self, dataset):
        """Raises a clear ValueError when the first batch does not fit the model and loss.

        A growth schedule estimates on the same data at every stage, and widening
        changes neither the inputs, the outputs nor the loss: a check that passed
        for the same data spec, output shapes and loss is not run again (it costs
        an eager forward pass).
        """
        key = (repr(dataset.element_spec), tuple(str(t.shape) for t in self.network.outputs),
               id(getattr(self, "loss", None)))
        if getattr(self, "_labels_checked", None) == key:
            return
        for batch in dataset.take(1):
            x, y, sw = data_utils.unpack(batch)
            for got, ref in zip(keras.tree.flatten(x), self.network.inputs):
                if not data_utils.fits_input(ref.shape, got.shape):
                    raise ValueError(
                        f"The inputs have shape {tuple(got.shape)}; the model expects inputs "
                        f"of shape {tuple(ref.shape)} (input '{ref.name}').")
            try:
                y_pred = self(x, training=False)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw,
                                         training=False)
            except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
                shapes = f"x {tuple(x.shape)}, y {tuple(y.shape)}"
                lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()
                         and not ln.startswith(("Exception encountered", "Arguments received"))]
                raise ValueError(
                    f"The data does not match the model and its compiled loss "
                    f"({shapes}): {lines[0] if lines else type(err).__name__}"
                ) from err
            del loss  # non-finite values are reported per layer by the estimators
        self._labels_checked = key

    def splitting_eigenpairs(self, data, method="lobpcg", layers=None, batch_size=32,
                             eigen_epochs=5, learning_rate=0.01, eval_data=None, seed=0,
                             max_bytes=splitting.DEFAULT_MAX_EXACT_BYTES, verbose=0,
                             eigen_tol=growth.EIGEN_TOL):
        """Minimum eigenpairs of every splittable neuron's splitting matrix.

        BatchNormalization is frozen (inference statistics) and dropout is off.
        When the model was built under a ``tf.distribute`` strategy with several
        replicas, the lobpcg and fast methods split every batch across them; the
        exact method (for small networks) runs on one device.

        Args:
            data: a batched ``tf.data.Dataset`` of ``(x, y)`` or an ``(x, y)``
                tuple of arrays; the loss is the compiled loss.
            method: ``"lobpcg"`` (auxiliary-activation products ``S v`` averaged
                over all of ``data`` each pass, LOBPCG iterations; the default),
                ``"fast"`` (the same products per mini-batch, RMSprop on the
                Rayleigh quotient, as in the paper's code) or ``"exact"`` (build
                each matrix, ``eigh``).
            layers: restrict to these layer names (default: all splittable).
            batch_size: batch size for array data.
            eigen_epochs: lobpcg and fast methods: passes over ``data`` (the
                name ``grow`` uses too); for lobpcg the most it makes.
            eigen_tol: lobpcg: stop before ``eigen_epochs`` passes once, over the
                neurons with a negative eigenvalue, the residuals ``||S v - lambda
                v||`` on ``data`` add up to at most this fraction of their
                ``|lambda|`` (None: always ``eigen_epochs`` passes). A warning
                names the neurons still above 25 % after the last pass.
            learning_rate: fast method: RMSprop step size.
            eval_data: lobpcg and fast methods: data on which the final eigenvalues are
                measured (default: ``data``).
            seed: lobpcg and fast methods: seed of the initial vectors.
            max_bytes: exact method: memory limit for the matrices.
            verbose: 0 silent, 1 progress bar.

        Returns:
            ``{layer_name: Eigenpairs}``.

        Raises:
            ValueError: for an uncompiled model, a bad ``method`` or layer name,
                empty or non-finite data, or exact matrices too large.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        if method != "exact" and (isinstance(eigen_epochs, bool) or not isinstance(
                eigen_epochs, (int, np.integer)) or eigen_epochs < 1):
            raise ValueError("eigen_epochs must be a positive integer. "
                             f"Received: eigen_epochs={eigen_epochs!r}")
        if eigen_tol is not None and (isinstance(eigen_tol, bool) or not isinstance(
                eigen_tol, (int, float)) or not 0 <= eigen_tol < np.inf):
            raise ValueError("eigen_tol must be None or a number >= 0. "
                             f"Received: eigen_tol={eigen_tol!r}")
        if layers is not None:
            layers = list(layers)
            for name in layers:
                if name not in self._graph.splittable_layers:
                    raise ValueError(
                        f"Layer '{name}' is not a splittable layer of this model. "
                        f"Splittable layers: {self._graph.splittable_layers}."
                    )
        loss_fn = self._loss_fn()
        self._check_labels(data_utils.as_dataset(data, batch_size))
        if method == "exact":
            return splitting.exact_eigenpairs(
                self._graph, loss_fn, data, layers=layers, batch_size=batch_size,
                max_bytes=max_bytes, verbose=verbose,
            )
        if method == "lobpcg":
            eig = lobpcg.lobpcg_eigenpairs(
                self._graph, loss_fn, data, layers=layers, epochs=eigen_epochs,
                batch_size=batch_size, eval_data=eval_data, seed=seed, verbose=verbose,
                strategy=self.distribute_strategy, tol=eigen_tol,
            )
        else:
            eig = splitting.fast_eigenpairs(
                self._graph, loss_fn, data, layers=layers, epochs=eigen_epochs,
                batch_size=batch_size, learning_rate=learning_rate,
                eval_data=eval_data, seed=seed, verbose=verbose,
                strategy=self.distribute_strategy,
            )
        _warn_unconverged(eig, method)
        return eig

    def split(self, plan, eigenpairs=None, epsilon=None, split_rule="copy", seed=0):
        """Splits the named units in place, each into two children made by ``split_rule``.

        With the default rule (``"copy"``, the papers') the children are
        ``theta +/- epsilon v`` and every consumer of a split channel gets it
        twice with its incoming weights halved, so at ``epsilon = 0`` the
        function is unchanged. Other rules (:class:`keras_split.SplitRule`:
        ``"antisymmetric"``, ``"fresh"``) share the outgoing weights unevenly or
        draw the second child afresh, and are function-preserving at
        ``epsilon = 0`` too. Naming any producer of a coupled group (a residual
        ``Add``) splits all of its producers, each along its own eigenvector.

        Optimizer state: the optimizer is rebuilt from its config; its iteration
        count is kept, slot variables (momentum, Adam moments, ...) of unchanged
        weights are copied, and those of widened weights are copied entry by
        entry: both children of a unit start with the parent's slots (the
        second child's are zero when the rule has ``reset_slots``), and the
        first moments (SGD momentum, Adam's m) of a consumer's duplicated input
        rows are halved like the rows themselves, so that the pair keeps the
        parent's momentum.

        Args:
            plan: ``{layer_name: [unit, ...]}``; a unit named twice is an error.
            eigenpairs: the result of :meth:`splitting_eigenpairs`; required
                when the rule steps along eigenvectors (``epsilon != 0``).
            epsilon: overrides the rule's step (absolute, or relative to each
                neuron's weight norm when the rule is ``relative``).
            split_rule: a name in ``keras_split.split_rule.RULES``, a
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
        groups = surgery.resolve_plan(self._graph, plan)
        network, var_edits = self._widened(groups, eigenpairs, rule, seed)
        return self._commit(network, var_edits, rule)

    def _widened(self, groups, eigenpairs, rule, seed=0):
        """``(network, var_edits)``: this model with ``groups`` split; ``self`` is unchanged."""
        plans = surgery.plan_edits(self._graph, groups, eigenpairs, rule, seed)
        # Under tf.distribute, the new variables must be created in the model's strategy.
        with self.distribute_strategy.scope():
            return surgery.widen_model(self._graph, plans)

    def _commit(self, network, var_edits, rule):
        """Makes ``network`` (from :meth:`_widened`) this model's network."""
        new_graph = ChannelGraph(network, surrogate=self.surrogate)
        summary = {}
        for name in self._graph.producers:
            before = self._graph.units(name)
            after = new_graph.units(name)
            if after != before:
                summary[name] = (before, after)
        self._replace_network(network, new_graph, var_edits, rule.reset_slots)
        logger.info("Split: %s", summary)
        return summary

    def _replace_network(self, network, graph, var_edits, reset_slots=False):
        old_optimizer = getattr(self, "optimizer", None)
        optimizer = old_optimizer
        if old_optimizer is not None and self.compiled:
            # Built before anything changes, so that a failure leaves the model as it was.
            with self.distribute_strategy.scope():
                optimizer = self._rebuild_optimizer(old_optimizer, var_edits, reset_slots,
                                                    network.trainable_variables)
        self._restore((network, graph, optimizer, self.train_function is not None))

    def _snapshot(self):
        """What :meth:`_restore` needs to undo a later ``_replace_network``."""
        return (self.network, self._graph, getattr(self, "optimizer", None),
                self.train_function is not None)

    def _restore(self, snapshot):
        """Makes ``snapshot``'s network, graph and optimizer this model's (no copies)."""
        network, graph, optimizer, had_train_function = snapshot
        compat.untrack(self, self.network)
        self.network = network
        self._graph = graph
        self.train_function = self.test_function = self.predict_function = None
        if optimizer is not None and self.compiled:
            self.optimizer = optimizer
        if had_train_function:
            # Growing inside fit (GrowthCallback): the loop calls train_function next.
            self.make_train_function(force=True)

    def _rebuild_optimizer(self, old, var_edits, reset_slots=False, variables=None):
        """A fresh optimizer of the same config for ``variables`` (default: the model's),
        with the old one's state carried over."""
        new = old.__class__.from_config(old.get_config())
        if not old.built:
            return new
        new.build(self.trainable_variables if variables is None else variables)
        new.iterations.assign(old.iterations)
        old_slots = {v.name: v for v in old.variables}
        prefixes = sorted(
            ((compat.slot_prefix(p), e) for p, e in var_edits.items()),
            key=lambda item: -len(item[0]),
        )
        for slot in new.variables:
            source = old_slots.get(slot.name)
            if source is None or slot is new.iterations:
                continue
            value = keras.ops.convert_to_numpy(source)
            if tuple(value.shape) != tuple(slot.shape):
                edit = next((e for p, e in prefixes if slot.name.startswith(p)), None)
                if edit is None:
                    continue
                # First moments (SGD velocity, Adam's m) are halved where the weights
                # are, so that the two halves together keep the parent's momentum.
                value = edit.apply(value, with_delta=False,
                                   halve=compat.is_first_moment(slot),
                                   reset_seconds=reset_slots)
                if tuple(value.shape) != tuple(slot.shape):
                    continue
            slot.assign(value)
        return new

    # ----------------------------------------------------------------- growth
    def grow(self, x=None, y=None, growth_ratio=0.5, epsilon=None, method="lobpcg", eigen_epochs=5,
             cost="flops", solver="milp", threshold=0.0, max_units=None, round_to=None,
             max_widths=None, batch_size=32, learning_rate=0.01, eval_data=None, seed=0,
             dry_run=False, log_dir=None, verbose=0, split_rule=growth.DEFAULT_SPLIT_RULE,
             eigen_tol=growth.EIGEN_TOL):
        """One energy-aware growth stage: eigenpairs, costs, knapsack selection, split.

        The budget is ``growth_ratio`` times the current network's cost in the
        cost mode's unit, and in every mode the MACs after the stage are at most
        ``(1 + growth_ratio)`` times the MACs before (the exact cost of the
        selection, cross terms included, is checked).

        A stage never raises the held-out loss: the split is built aside, its
        held-out loss measured, and the step shrunk (x 1/4, x 1/16, then 0, a
        function-preserving split) until the loss is not above the loss before
        (to 1e-5 relative); if none qualifies the model is left as it was. The
        returned stage records it (``guard``), with the children's indices and
        the twin statistics of the grown model.

        A neuron is a candidate only when its eigenvalue is above noise: a step the
        size of its own incoming weights must predict a loss change of at least 1e-6
        of the held-out loss (``stage.n_noise`` counts those ignored; on an
        uncalibrated network they are rounding noise of -1e-21).

        ``grow`` reads at most the first 200 batches of the data (fewer when they
        would hold more than 1 GiB) and caches them, so that every estimation
        pass and the guard see the same examples, even from a reshuffling,
        augmenting or endless pipeline; a log line says when that is not all of it.

        Args:
            x: like ``fit``: input arrays with ``y``, or a batched ``tf.data.Dataset``
                of ``(x, y)`` (or ``(x, y, sample_weight)``), or an ``(x, y)`` tuple.
                Unless ``eval_data`` is given, the last 20 % of its batches (when
                it has at least 5) are held out to measure the final eigenvalues,
                residuals and the loss change.
            y: the targets when ``x`` holds input arrays.
            growth_ratio: budget as a fraction of the current cost, in (0, 100].
            epsilon: overrides the split rule's step along each unit eigenvector.
            method: ``"lobpcg"``, ``"fast"`` or ``"exact"`` eigenpairs (see
                :meth:`splitting_eigenpairs`).
            eigen_epochs: lobpcg and fast methods: passes over the estimation batches
                (lobpcg caches up to 200 of them in memory, so that every pass sees
                the same examples even from a reshuffling, augmenting pipeline);
                for lobpcg the most it makes.
            eigen_tol: lobpcg stops earlier once the candidates have converged (see
                :meth:`splitting_eigenpairs`); ``stage.eigen`` records the passes
                made and the residuals.
            cost: ``"flops"`` (energy-aware, the paper), ``"params"``,
                ``"uniform"`` (vanilla splitting: by lambda alone, under the
                MACs budget), or a callable ``layer -> cost of one of its
                neurons`` (e.g. from a latency table).
            solver: ``"milp"`` (exact knapsack), ``"lp"`` (the paper's
                relaxation and rounding) or ``"greedy_value"``.
            threshold: only groups with ``lambda < threshold`` (<= 0) are candidates.
            max_units: cap on new units per layer (int, or ``{layer: int}``).
            max_widths: ``{layer: int}``, the widest a layer may become.
            round_to: ``milp``: grown layers end at a multiple of this width.
            batch_size: for array data.
            learning_rate: fast method: RMSprop step size.
            eval_data: batches for the final eigenvalues and the loss change.
            seed: seed of the fast method's initial vectors.
            dry_run: return the plan without changing the model.
            log_dir: write TensorBoard scalars and lambda histograms there.
            verbose: 0 silent, 1 or ``"auto"`` progress bar and a one-line
                summary, 2 the summary only.
            split_rule: how the children are made: ``"fresh"`` (the default,
                chosen on a CIFAR-10 validation split: the parent is kept, the
                second child gets fresh incoming weights and zero outgoing
                weights and optimizer slots), ``"antisymmetric"`` (``theta +/-
                0.1 ||theta|| v``, outgoing weights ``w/2 +/- z``), ``"copy"``
                (the papers: ``theta +/- 0.01 v``, ``w/2`` each), or a
                :class:`keras_split.SplitRule`.

        Returns:
            A :class:`keras_split.GrowthStage`, also appended (as a dict) to
            ``growth_history`` unless ``dry_run``.

        Raises:
            ValueError: for a bad argument (naming it), an uncompiled model, or
                empty or non-finite data. A stage that splits nothing is not an error.

        Example:
            >>> stage = model.grow(train_ds, growth_ratio=0.5)
            >>> stage = model.grow(x_train[:1024], y_train[:1024], batch_size=128)
            >>> print(stage.summary())
        """
        if x is None:
            raise ValueError("grow needs data: grow(x, y) with arrays, or grow(dataset).")
        if verbose == "auto":
            verbose = 1
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")
        data = x if y is None else (x, y)
        snapshot = self._snapshot()
        try:
            stage = growth.run_stage(
                self, data, growth_ratio=growth_ratio, epsilon=epsilon, method=method,
                eigen_epochs=eigen_epochs, cost=cost, solver=solver, threshold=threshold,
                max_units=max_units, round_to=round_to, max_widths=max_widths,
                batch_size=batch_size,
                learning_rate=learning_rate, eval_data=eval_data, seed=seed,
                dry_run=dry_run, log_dir=log_dir, verbose=verbose, split_rule=split_rule,
                eigen_tol=eigen_tol,
            )
            if not dry_run:
                self.growth_history.append(stage.to_dict())
        except BaseException:
            # Whatever failed, before or after the split (statistics, TensorBoard, an
            # interrupt): the model is left as it was.
            self._restore(snapshot)
            raise
        return stage


def _warn_unconverged(eig, method):
    """Warns when the estimate has not converged (the residual ratio on the data iterated)."""
    ratio = relative_residual(eig, fit=True)
    if ratio is None or ratio <= UNCONVERGED_RESIDUAL:
        return
    bad = unconverged_neurons(eig)
    passes = eigen_passes(eig)
    logger.warning(
        "The %s eigenpairs have not converged%s: over the neurons with a negative "
        "eigenvalue, the residuals ||S v - lambda v|| add up to %.0f%% of their |lambda| "
        "(an eigenvalue may be off by up to its residual); %d neurons are off by more than "
        "%.0f%% (%s). Use more eigen_epochs%s.",
        method, f" in {passes} passes" if passes else "", 100 * ratio,
        sum(map(len, bad.values())), 100 * UNCONVERGED_RESIDUAL,
        ", ".join(f"{n}: {len(u)}" for n, u in bad.items()),
        " or method='lobpcg' (the default)" if method == "fast" else "")
