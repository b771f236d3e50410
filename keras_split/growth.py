"""One growth stage: estimate eigenpairs, cost every coupled group, select, split.

:func:`run_stage` is what :meth:`keras_split.GrowingModel.grow` calls; it is
kept apart from the model class so that the math, cost and selection modules
stay free of the growing loop.
"""

import dataclasses
import logging
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_split import costs as cost_lib
from keras_split import data_utils, selection
from keras_split.channel_map import ChannelMap
from keras_split.eigenpairs import eigen_passes, relative_residual, unconverged_neurons
from keras_split.flops import count_flops
from keras_split.growth_stage import GrowthStage
from keras_split.split_rule import SplitRule
from keras_split.twins import twin_statistics

# Eigenpair estimators: LOBPCG on full-data products (default), the paper's
# stochastic RMSprop, and the exact matrices.
METHODS = ("lobpcg", "fast", "exact")

logger = logging.getLogger(__name__)

MAX_GROWTH_RATIO = 100.0
# The split rule grow() uses unless told otherwise (chosen on a CIFAR-10 validation
# split, see benchmarks/cifar10_growth.py and the README).
DEFAULT_SPLIT_RULE = "fresh"
# LOBPCG stops once the candidates' residuals add up to this fraction of their |lambda|
# (on CIFAR-10's MobileNet seed: 0.034 after 3 passes, 0.007 after 4, 0.003 after 5).
EIGEN_TOL = 0.01
# Estimation batches grow reads and caches (at most; see fixed_batches).
MAX_CACHED_BATCHES = 200
MAX_CACHED_BYTES = 1 << 30


def validate_growth_args(growth_ratio, epsilon, cost, solver, method, threshold):
    """Raises ValueError for a bad argument of :func:`run_stage`, naming it."""
    if (isinstance(growth_ratio, bool) or not isinstance(growth_ratio, (int, float, np.floating))
            or not math.isfinite(growth_ratio) or growth_ratio <= 0
            or growth_ratio > MAX_GROWTH_RATIO):
        raise ValueError(
            f"growth_ratio must be a finite number in (0, {MAX_GROWTH_RATIO}], got {growth_ratio!r}."
        )
    if not isinstance(epsilon, (int, float, np.floating)) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite non-negative number, got {epsilon!r}.")
    if not (callable(cost) or cost in cost_lib.COST_MODES):
        raise ValueError(f"cost must be one of {cost_lib.COST_MODES} or a callable, got {cost!r}.")
    if solver not in selection.SOLVERS:
        raise ValueError(f"solver must be one of {selection.SOLVERS}, got {solver!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold > 0:
        raise ValueError(f"threshold must be a finite number <= 0, got {threshold!r}.")


def split_holdout(dataset, fraction=0.2, max_batches=20):
    """``(estimation, held_out)``: the last ``fraction`` of batches (at most ``max_batches``).

    The held-out batches are read once and cached, so that the eigenvalues and
    the loss before and after the split are measured on the same examples even
    when ``dataset`` reshuffles every epoch (with reshuffling, those examples
    may also appear in other epochs' estimation batches: pass ``eval_data`` to
    ``grow`` for a strict hold-out). With fewer than 5 batches (or an unknown
    length) both are the whole dataset.
    """
    n = int(dataset.cardinality())
    if n < 5:
        return dataset, dataset
    k = min(max(1, int(round(n * fraction))), max_batches)
    held_out = dataset.skip(n - k).cache()
    for _ in held_out:
        pass
    return dataset.take(n - k), held_out


def fixed_batches(dataset, max_batches=MAX_CACHED_BATCHES, max_bytes=MAX_CACHED_BYTES):
    """The first batches of ``dataset``, read once and cached, so every pass sees them.

    Eigen estimation needs the same operator ``S_D`` on every pass (LOBPCG) and
    the same examples before and after a split (the loss guard), while a training
    pipeline reshuffles and augments on every pass and may be of unknown or
    ImageNet length. So ``grow`` takes the first ``max_batches`` batches, fewer
    when they would hold more than ``max_bytes`` (measured on the first batch),
    and caches them in memory; a log line says what was taken when that is
    less than the whole dataset.

    Args:
        dataset: a batched ``tf.data.Dataset``.
        max_batches: at most this many batches.
        max_bytes: at most about this many bytes of cached tensors.

    Returns:
        A dataset of known cardinality that yields the same batches on every pass.

    Raises:
        ValueError: if ``dataset`` yields no batch.

    Example:
        >>> estimate_on = fixed_batches(train_ds)   # a reshuffling pipeline
    """
    first = next(iter(dataset.take(1)), None)
    if first is None:
        raise ValueError("The data is empty: no batch to estimate eigenpairs from.")
    per_batch = sum(int(np.prod(t.shape)) * t.dtype.size for t in tf.nest.flatten(first))
    limit = int(max(1, min(max_batches, max_bytes // max(per_batch, 1))))
    n = int(dataset.cardinality())
    cached = dataset.take(limit).cache()
    count = sum(1 for _ in cached)
    if n < 0 or n > count:
        logger.info("Eigen estimation takes the first %d batches of the data (%s in all; at "
                    "most %d batches and %.0f MiB are cached).", count,
                    n if n >= 0 else "an unknown number", max_batches, max_bytes / 2 ** 20)
    return cached.apply(tf.data.experimental.assert_cardinality(count))


def mean_loss(model, dataset, network=None):
    """The compiled loss of ``model`` averaged over ``dataset`` (inference mode).

    Batches are weighted by their size. ``network`` (e.g. a widened candidate)
    computes the predictions instead of ``model`` when given.
    """
    network = model if network is None else network
    total, count = 0.0, 0
    for batch in dataset:
        x, y, sw = data_utils.unpack(batch)
        y_pred = network(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=False)
        n = int(data_utils.batch_size_of(x))
        total += float(loss) * n
        count += n
    if count == 0:
        raise ValueError("The evaluation data is empty.")
    return total / count


def _costs(graph, groups, cost):
    """Per-group costs, the network total, and the exact-total function, in one unit."""
    if callable(cost):
        per_layer = {}
        for name in graph.splittable_layers:
            value = float(cost(graph.producers[name].layer))
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"The cost callable returned {value!r} for layer '{name}'; it "
                    "must return a finite non-negative cost per neuron."
                )
            per_layer[name] = value
        group_cost = np.array([
            sum(per_layer.get(n, 0.0) for n, _ in graph.group_members(g)) for g in groups
        ])
        total = sum(per_layer[n] * graph.units(n) for n in per_layer)
        return group_cost, total, lambda chosen: total + float(group_cost[chosen].sum())
    group_cost = cost_lib.group_costs(graph, groups, cost)
    total = cost_lib.network_cost(graph, cost)
    return group_cost, total, lambda chosen: cost_lib.widened_cost(
        graph, [groups[i] for i in chosen], cost)


def _layer_membership(graph, groups):
    names = list(graph.splittable_layers)
    row = {n: i for i, n in enumerate(names)}
    m = np.zeros((len(names), len(groups)))
    for j, g in enumerate(groups):
        for name, _ in graph.group_members(g):
            m[row[name], j] += 1
    return names, m


def _caps(names, widths, max_units, max_widths):
    """Per-layer caps on new units from ``max_units`` (int or dict) and ``max_widths`` (dict)."""
    caps = np.full(len(names), np.inf)
    for arg, label in ((max_units, "max_units"), (max_widths, "max_widths")):
        if arg is None:
            continue
        if isinstance(arg, dict):
            unknown = set(arg) - set(names)
            if unknown:
                raise ValueError(f"{label} names unknown or unsplittable layers {sorted(unknown)}.")
            limit = np.array([arg.get(n, np.inf) for n in names], dtype=np.float64)
        elif label == "max_units" and isinstance(arg, (int, np.integer)) and arg >= 0:
            limit = np.full(len(names), float(arg))
        else:
            raise ValueError(f"{label} must be {'an int or ' if label == 'max_units' else ''}"
                             f"a dict {{layer: int}}, got {arg!r}.")
        if label == "max_widths":
            limit = np.maximum(limit - np.asarray(widths, dtype=np.float64), 0.0)
        caps = np.minimum(caps, limit)
    return None if np.all(np.isinf(caps)) else caps


def select_groups(graph, eigenpairs, growth_ratio, cost="flops", solver="milp",
                  threshold=0.0, max_units=None, round_to=None, max_widths=None):
    """Chooses the coupled groups to split under ``growth_ratio`` times the network's cost.

    The knapsack is solved with per-group marginal costs. The exact cost of the
    whole selection (with the cross terms of splitting a layer and its consumer
    together) is then measured, and, whatever the cost mode, so are the MACs:
    while either exceeds its bound (``(1 + growth_ratio)`` times the current
    value) the knapsack is solved again with a budget lowered by the overshoot,
    so that constraints such as ``round_to`` keep holding.

    Returns:
        ``(groups, values, chosen, budget, solver_used)``; ``cost="uniform"``
        (vanilla splitting) always uses the ``"greedy_value"`` rule under the
        MACs budget.
    """
    groups = sorted(graph.groups)
    values = np.array([
        sum(eigenpairs[n].values[u] for n, u in graph.group_members(g)) for g in groups
    ], dtype=np.float64)
    macs = cost_lib.network_cost(graph, "flops")

    def macs_after(chosen):
        return cost_lib.widened_cost(graph, [groups[i] for i in chosen], "flops")

    if cost == "uniform":
        solver_used = "greedy_value"
        group_cost, total, exact_total = (
            cost_lib.group_costs(graph, groups, "flops"), macs, macs_after)
    else:
        solver_used = solver
        group_cost, total, exact_total = _costs(graph, groups, cost)
    budget = growth_ratio * total
    names, membership = _layer_membership(graph, groups)
    widths = [graph.units(n) for n in names]
    caps = _caps(names, widths, max_units, max_widths)
    masked = np.where(values < threshold, values, 0.0)
    target = budget
    for _ in range(50):
        chosen = selection.select_neurons(
            masked, group_cost, target, solver=solver_used, layer_of=membership,
            max_units=caps, round_to=round_to, widths=widths,
        )
        if len(chosen) == 0:
            break
        over = exact_total(chosen) - total - budget
        macs_over = macs_after(chosen) - macs * (1 + growth_ratio)
        if over <= budget * 1e-9 and macs_over <= 0:
            break
        # Lower the budget by the overshoot (in the cost unit) and solve again.
        shrink = max(over, 0.0)
        if macs_over > 0:
            spent = max(float(group_cost[chosen].sum()), 1e-300)
            shrink = max(shrink, spent * macs_over / max(macs_after(chosen) - macs, 1e-300))
        target = max(float(group_cost[chosen].sum()) - shrink, 0.0) * (1 - 1e-9)
    else:
        chosen = np.zeros(0, dtype=np.int64)
    return groups, values, np.asarray(chosen, dtype=np.int64), budget, solver_used


# A negative eigenvalue is noise (ignored) when a step as large as the neuron's own
# incoming weights would change the loss by less than this fraction of it:
# |lambda| * ||theta||^2 / 2 < NOISE_RTOL * |loss| (float32 resolves ~6e-8 of a loss).
NOISE_RTOL = 1e-6


def without_noise(graph, eigenpairs, loss, rtol=NOISE_RTOL):
    """``(eigenpairs, count)``: ``eigenpairs`` with noise-level negative eigenvalues set to 0.

    On an uncalibrated network (say every output 0.1) the splitting matrices are
    rounding noise, and eigenvalues of -1e-21 would otherwise be split like real
    ones. A neuron's eigenvalue counts when a step of the size of its own
    incoming weights, ``||theta||``, predicts a loss change of at least ``rtol``
    times the loss: ``|lambda| ||theta||^2 / 2 >= rtol |loss|``.

    Args:
        graph: the model's ChannelGraph.
        eigenpairs: ``{layer: Eigenpairs}``.
        loss: the loss the changes are measured against (the held-out loss).
        rtol: the relative resolution.

    Returns:
        New ``{layer: Eigenpairs}`` (vectors and residuals shared) and the number
        of neurons whose negative eigenvalue was set to 0.

    Example:
        >>> eig, n_noise = without_noise(model._graph, eig, loss=2.3)
    """
    kept, count = {}, 0
    floor = rtol * max(abs(float(loss)), np.finfo(np.float32).tiny)
    for name, e in eigenpairs.items():
        kernel = keras.ops.convert_to_numpy(graph.producers[name].layer.kernel)
        norms = np.sum(kernel.reshape(-1, kernel.shape[-1]).astype(np.float64) ** 2, axis=0)
        noise = (e.values < 0) & (0.5 * np.abs(e.values) * norms < floor)
        count += int(noise.sum())
        kept[name] = dataclasses.replace(e, values=np.where(noise, 0.0, e.values))
    return kept, count


# Step factors tried by the loss guard, the last one a function-preserving split.
SHRINK = (1.0, 0.25, 0.0625, 0.0)


def _children_pairs(split_units, before_units):
    """``{layer: [[first, second], ...]}``: new indices of each split unit's children."""
    pairs = {}
    for name, units in split_units.items():
        if units:
            mask = np.zeros(before_units[name], dtype=bool)
            mask[units] = True
            firsts, seconds = ChannelMap.from_split_mask(mask).pairs()
            pairs[name] = [[int(a), int(b)] for a, b in zip(firsts, seconds)]
    return pairs


def guarded_split(model, groups, eig, rule, held_out, seed=0, shrink=SHRINK, tolerance=1e-5,
                  loss_before=None):
    """Splits ``groups`` unless the held-out loss rises; shrinks the step first.

    Candidate widenings with the rule's step times each factor of ``shrink``
    are built without touching ``model``; the first whose held-out loss is at
    most ``loss_before + tolerance * max(1, |loss_before|)`` is committed. A
    candidate with step 0 is function-preserving by construction (every rule),
    so it is committed whatever float rounding does to its loss, unless that
    loss is not finite. When no candidate qualifies (``shrink`` without 0, or
    a non-finite loss), the model is left as it was. ``loss_before``, when
    given, is the held-out loss already measured on the model as it is.

    Returns:
        ``(loss_before, loss_after, tries, action)``: ``tries`` lists
        ``{"epsilon", "loss"}`` per candidate, ``action`` is ``"split"``,
        ``"shrunk"`` or ``"rolled_back"``.
    """
    if loss_before is None:
        loss_before = mean_loss(model, held_out)
    bound = loss_before + tolerance * max(1.0, abs(loss_before))
    tries = []
    # The candidate is widened once; a smaller step only moves the stepped kernels back
    # along their eigenvector steps (linear in epsilon): no second clone.
    network, var_edits = model._widened(groups, eig, rule, seed)
    stepped = [(v, var_edits[v.path].step) for v in network.weights
               if v.path in var_edits and var_edits[v.path].step is not None]
    current = 1.0
    for factor in shrink:
        if tries and (rule.epsilon * factor == tries[-1]["epsilon"] or not stepped):
            continue
        for var, step in stepped:
            var.assign(var - ((current - factor) * step).astype(var.dtype))
        current = factor
        loss = mean_loss(model, held_out, network=network)
        tries.append({"epsilon": rule.epsilon * factor, "loss": loss})
        # A step-0 candidate computes the same function by construction: what its loss
        # differs by is float32 rounding (5e-5 relative on a MobileNetV2), not a real rise.
        if math.isfinite(loss) and (loss <= bound or rule.epsilon * factor == 0):
            model._commit(network, var_edits, rule.scaled(factor))
            return loss_before, loss, tries, "split" if len(tries) == 1 else "shrunk"
    logger.warning("Growth stage rolled back: every split raised the held-out loss (%s).",
                   tries)
    return loss_before, loss_before, tries, "rolled_back"


def run_stage(model, data, growth_ratio=0.5, epsilon=None, method="lobpcg", eigen_epochs=5,
              cost="flops", solver="milp", threshold=0.0, max_units=None, round_to=None,
              max_widths=None,
              batch_size=32, learning_rate=0.01, eval_data=None, seed=0, dry_run=False,
              log_dir=None, verbose=0, split_rule=DEFAULT_SPLIT_RULE, eigen_tol=EIGEN_TOL):
    """Runs one growth stage on ``model`` (a GrowingModel); see ``GrowingModel.grow``."""
    rule = SplitRule.get(split_rule, epsilon)
    validate_growth_args(growth_ratio, rule.epsilon, cost, solver, method, threshold)
    dataset = fixed_batches(data_utils.as_dataset(data, batch_size))
    if eval_data is None:
        estimate_on, held_out = split_holdout(dataset)
    else:
        estimate_on = dataset
        held_out = fixed_batches(data_utils.as_dataset(eval_data, batch_size, "eval_data"))
    graph = model._graph
    t0 = time.perf_counter()
    eig = model.splitting_eigenpairs(
        estimate_on, method=method, eigen_epochs=eigen_epochs, learning_rate=learning_rate,
        eval_data=held_out, seed=seed, verbose=verbose, eigen_tol=eigen_tol,
    )
    t1 = time.perf_counter()
    # The held-out pass of the estimate computed the loss already (same compiled loss,
    # inference mode); measure it only when no pass ran (no layer with a signal).
    reference_loss = getattr(eig, "loss", None)
    if reference_loss is None:
        reference_loss = mean_loss(model, held_out)
    candidates, n_noise = without_noise(graph, eig, reference_loss)
    if n_noise:
        logger.info("Ignored %d negative eigenvalues at noise level (|lambda| ||theta||^2 / 2 "
                    "< %g of the loss %.4g).", n_noise, NOISE_RTOL, reference_loss)
    groups, values, chosen, budget, solver_used = select_groups(
        graph, candidates, float(growth_ratio), cost, solver, threshold, max_units, round_to,
        max_widths,
    )
    t2 = time.perf_counter()
    split_units = {name: [] for name in graph.splittable_layers}
    for i in chosen:
        for name, unit in graph.group_members(groups[i]):
            split_units[name].append(int(unit))
    macs_before, params_before = count_flops(model), int(model.count_params())
    before_units = {n: graph.units(n) for n in graph.splittable_layers}
    loss_before = loss_after = None
    tries, action, pairs = [], "none", {}
    norms = _kernel_norms(graph, split_units)
    if not dry_run:
        if len(chosen):
            loss_before, loss_after, tries, action = guarded_split(
                model, [groups[i] for i in chosen], eig, rule, held_out, seed=seed,
                loss_before=reference_loss)
        else:
            loss_before = loss_after = reference_loss
        if action in ("split", "shrunk"):
            pairs = _children_pairs(split_units, before_units)
        else:
            split_units = {name: [] for name in split_units}
        macs_after, params_after = count_flops(model), int(model.count_params())
    else:
        macs_after = int(cost_lib.widened_cost(graph, [groups[i] for i in chosen], "flops"))
        params_after = int(cost_lib.widened_cost(graph, [groups[i] for i in chosen], "params"))
    t3 = time.perf_counter()
    layers = {}
    for name in graph.splittable_layers:
        e = eig[name]
        res = e.residuals if e.residuals is not None else np.zeros_like(e.values)
        layers[name] = {
            "units_before": before_units[name],
            "units_after": before_units[name] + len(split_units[name]),
            "split_indices": sorted(split_units[name]),
            "lambda_min": float(e.values.min()),
            "lambda_mean": float(e.values.mean()),
            "n_negative": int((e.values < 0).sum()),
            "residual_max": float(res.max()),
            "residual_mean": float(res.mean()),
            "lambdas": [float(v) for v in e.values],
        }
    selected_value = float(values[chosen].sum()) if len(chosen) else 0.0
    # The step of the committed split; a rolled-back stage split nothing.
    used = 0.0 if action == "rolled_back" else tries[-1]["epsilon"] if tries else rule.epsilon
    # The second-order term of the eigen step (the only term for "halves" outgoing).
    predicted = sum(0.5 * (used * (norms[name][u] if rule.relative else 1.0)) ** 2
                    * eig[name].values[u] for name, units in split_units.items() for u in units)
    twins = twin_statistics(model)
    stage = GrowthStage(
        stage=len(model.growth_history), method=method,
        cost=cost if isinstance(cost, str) else getattr(cost, "__name__", "callable"),
        solver=solver_used, growth_ratio=float(growth_ratio), epsilon=float(used),
        budget=float(budget), macs_before=int(macs_before), macs_after=int(macs_after),
        params_before=params_before, params_after=int(params_after),
        n_candidates=int((values < threshold).sum()), n_selected=int(len(chosen)),
        selected_value=selected_value,
        predicted_loss_change=float(predicted),
        loss_before=loss_before, loss_after=loss_after,
        measured_loss_change=None if dry_run else loss_after - loss_before,
        layers=layers,
        seconds={"eigen": t1 - t0, "select": t2 - t1, "split": t3 - t2},
        dry_run=bool(dry_run),
        split_rule=rule.get_config(), guard={"action": action, "tries": tries},
        children=pairs, twins={k: twins[k] for k in ("units", "twins", "twin_fraction",
                                                     "distinct")},
        n_noise=n_noise, eigen=_eigen_record(eig),
    )
    if log_dir is not None:
        _write_tensorboard(log_dir, stage, eig)
    if verbose:
        sys.stdout.write(stage.summary() + "\n")
    logger.info(stage.summary())
    return stage


def _eigen_record(eig):
    """How far the estimate went and how well it converged, for ``GrowthStage.eigen``."""
    passes = eigen_passes(eig)
    return {"passes": passes,
            "fit_residual_ratio": relative_residual(eig, fit=True) if passes else None,
            "residual_ratio": relative_residual(eig),
            "unconverged": {n: len(u) for n, u in unconverged_neurons(eig).items()}}


def _kernel_norms(graph, split_units):
    """``{layer: [norm of each unit's incoming kernel]}`` for the layers with split units."""
    norms = {}
    for name, units in split_units.items():
        if units:
            kernel = keras.ops.convert_to_numpy(graph.producers[name].layer.kernel)
            norms[name] = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
    return norms


def _write_tensorboard(log_dir, stage, eig):
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=stage.stage):
        tf.summary.scalar("growth/macs", stage.macs_after)
        tf.summary.scalar("growth/params", stage.params_after)
        tf.summary.scalar("growth/n_selected", stage.n_selected)
        tf.summary.scalar("growth/predicted_loss_change", stage.predicted_loss_change)
        if stage.measured_loss_change is not None:
            tf.summary.scalar("growth/measured_loss_change", stage.measured_loss_change)
        if stage.twins:
            tf.summary.scalar("growth/twin_fraction", stage.twins["twin_fraction"])
            tf.summary.scalar("growth/distinct_filters", stage.twins["distinct"])
        for name, e in eig.items():
            tf.summary.histogram(f"lambda/{name}", e.values)
            tf.summary.scalar(f"width/{name}", stage.layers[name]["units_after"])
    writer.flush()
