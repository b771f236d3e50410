"""One growth stage: estimate eigenpairs, cost every coupled group, select, split.

:func:`run_stage` is what :meth:`keras_split.GrowingModel.grow` calls; it is
kept apart from the model class so that the math, cost and selection modules
stay free of the growing loop.
"""

import dataclasses
import logging
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_split.estimate.eigenpairs import eigen_passes, relative_residual, unconverged_neurons
from keras_split.growing import distributed
from keras_split.growing.estimation_data import check_examples, fixed_batches, split_holdout
from keras_split.growing.growth_stage import GrowthStage
from keras_split.growing.input_data import model_dataset
from keras_split.growing.guard import GuardOutcome, children_pairs, guarded_split, mean_loss
from keras_split.growing.stage_records import (EigenSummary, GuardRecord, LayerRecord,
                                               LimitRecord, StabilityRecord, StageSeconds,
                                               TwinRecord)
from keras_split.growing.twins import twin_statistics
from keras_split.select import costs as cost_lib
from keras_split.select.budget import check_max_widths, select_groups
from keras_split.select.noise import NOISE_RTOL, without_noise
from keras_split.select.reach import within_reach
from keras_split.select.limits import check_budgets
from keras_split.select.flops import count_flops
from keras_split.select.selection import Selection

logger = logging.getLogger(__name__)


def run_stage(model, data, settings, eval_data=None, dry_run=False, log_dir=None, verbose=0):
    """Runs one growth stage on ``model`` (a GrowingModel); see ``GrowingModel.grow``.

    Args:
        model: the GrowingModel to grow.
        data: the estimation data (a dataset or an ``(x, y)`` tuple).
        settings: a :class:`~keras_split.growing.growth_settings.GrowthSettings`.
        eval_data: held-out batches (default: the last batches of ``data``).
        dry_run: plan only, the model is not changed.
        log_dir: TensorBoard directory, or None.
        verbose: 0 silent, 1 progress bar and summary, 2 the summary only.

    Returns:
        The :class:`~keras_split.GrowthStage`.
    """
    graph = model.channel_graph
    strategy = model.distribute_strategy
    distributed.check_method(settings.method, strategy)
    # Checked before any work: the TensorBoard folder (the chief's alone across workers),
    # caps below a layer's width, limits the network exceeds already, the data.
    if log_dir is not None and distributed.is_chief(strategy):
        log_dir = prepare_log_dir(log_dir)
    else:
        log_dir = None
    check_max_widths(graph.splittable_layers, [graph.units(n) for n in graph.splittable_layers],
                     settings.max_widths)
    check_budgets(graph, settings.budget_models)
    estimate_on, held_out = _stage_data(model, data, eval_data, settings.estimation_batch_size)
    # Across workers every stage must see the same network: moving statistics averaged.
    distributed.average_non_trainable(model.network, strategy)
    timer = [time.perf_counter()]
    eig = model.splitting_eigenpairs(
        estimate_on, method=settings.method, eigen_epochs=settings.eigen_epochs,
        learning_rate=settings.learning_rate, eval_data=held_out, seed=settings.seed,
        verbose=verbose, eigen_tol=settings.eigen_tol, reach=knapsack_reach(graph, settings))
    timer.append(time.perf_counter())
    # The held-out pass of the estimate computed the loss already (same compiled loss,
    # inference mode); measure it only when no pass ran (no layer with a signal).
    reference_loss = eig.loss
    if reference_loss is None:
        reference_loss = mean_loss(model, held_out)
    chosen = _select(graph, eig, reference_loss, settings)
    timer.append(time.perf_counter())
    split = _split(model, chosen, eig, settings, held_out, reference_loss, dry_run)
    timer.append(time.perf_counter())
    stage = _stage_record(model, settings, eig, chosen, split, timer, dry_run)
    if log_dir is not None:
        _write_tensorboard(log_dir, stage, eig)
    if verbose:
        sys.stdout.write(stage.summary() + "\n")
    logger.info(stage.summary())
    return stage


def prepare_log_dir(log_dir):
    """Creates the TensorBoard folder ``log_dir`` (a local or ``tf.io.gfile`` path), so
    that one that cannot be written is refused before any work.

    Args:
        log_dir: a str or path-like.

    Returns:
        ``log_dir`` as a str.

    Raises:
        TypeError: if ``log_dir`` is not a path.
        ValueError: naming ``log_dir``, if it cannot be created or written.
    """
    if not isinstance(log_dir, (str, os.PathLike)) or isinstance(os.fspath(log_dir), bytes):
        raise TypeError(f"log_dir must be a folder path (a str or path-like). "
                        f"Received: log_dir={log_dir!r}")
    path = os.fspath(log_dir)
    try:
        tf.io.gfile.makedirs(path)
    except (tf.errors.OpError, OSError) as err:
        raise ValueError(f"log_dir cannot be created ({getattr(err, 'message', err)}). "
                         f"Received: log_dir={path!r}") from err
    if "://" not in path and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"log_dir cannot be written. Received: log_dir={path!r}")
    return path


def _stage_data(model, data, eval_data, batch_size):
    """``(estimation, held_out)`` batches, both fixed for the stage (converted as ``fit``
    converts them); estimation batches of fewer than ``MIN_EXAMPLES`` are refused."""
    dataset = fixed_batches(model_dataset(model, data, batch_size))
    check_examples(dataset)
    if eval_data is None:
        return split_holdout(dataset)
    return dataset, fixed_batches(model_dataset(model, eval_data, batch_size, "eval_data"))


@dataclasses.dataclass
class _Chosen:
    """The knapsack's :class:`Selection`, the units it splits per layer, the negative
    eigenvalues ignored as noise and the choice's stability."""

    selection: Selection
    units: dict
    n_noise: int
    stability: StabilityRecord = None
    limits: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _SplitOutcome:
    """What the split (or its plan) did: costs around it, the units split, the guard's
    outcome, the children's indices and the per-layer records."""

    macs_before: int
    params_before: int
    macs_after: int
    params_after: int
    units: dict
    guard: GuardOutcome
    pairs: dict
    norms: dict
    layers: dict


def _select(graph, eig, reference_loss, settings):
    """The knapsack's choice, as a :class:`_Chosen`."""
    candidates, n_noise = without_noise(graph, eig, reference_loss)
    if n_noise:
        logger.info("Ignored %d negative eigenvalues at noise level (|lambda| ||theta||^2 / 2 "
                    "< %g of the loss %.4g).", n_noise, NOISE_RTOL, reference_loss)
    selection = stage_selection(graph, candidates, settings)
    units = {name: [] for name in graph.splittable_layers}
    for group in selection.chosen_groups:
        for name, unit in graph.group_members(group):
            units[name].append(int(unit))
    limits = [LimitRecord(model.name, limit, model.network_cost(graph),
                          model.widened_cost(graph, selection.chosen_groups))
              for model, limit in settings.budget_models]
    return _Chosen(selection, units, n_noise,
                   _stability(graph, eig, reference_loss, settings, selection.chosen), limits)


def stage_selection(graph, candidates, settings, solver=None):
    """The knapsack of a stage with ``settings`` on ``candidates`` (eigenpairs without the
    noise-level ones): a :class:`~keras_split.select.selection.Selection`.

    Args:
        graph: the model's ChannelGraph.
        candidates: ``{layer: Eigenpairs}``, as :func:`without_noise` returns them.
        settings: a :class:`~keras_split.growing.growth_settings.GrowthSettings`.
        solver: overrides ``settings.solver`` (None: keep it).

    Example:
        >>> selection = stage_selection(graph, without_noise(graph, eig, loss)[0], settings)
    """
    return select_groups(
        graph, candidates, float(settings.growth_ratio), settings.cost_model,
        solver or settings.solver,
        settings.threshold, settings.max_units, settings.round_to, settings.max_widths,
        settings.budget_groups, settings.max_growth, float(settings.group_share),
        settings.value, settings.budget_models, bool(settings.fill_budgets))


def knapsack_reach(graph, settings):
    """The stage's ``reach`` for the eigen estimate: ``(pairs, loss) -> {layer: bool[units]}``,
    the units the stage's knapsack (its LP relaxation) could pick given the current
    estimates (see
    :func:`~keras_split.select.reach.within_reach`), or None when it picks nothing.

    Args:
        graph: the model's ChannelGraph.
        settings: the stage's :class:`~keras_split.growing.growth_settings.GrowthSettings`.

    Returns:
        A callable, for ``GrowingModel.splitting_eigenpairs(reach=...)``.

    Example:
        >>> eig = model.splitting_eigenpairs(data, reach=knapsack_reach(graph, settings))
    """
    def reach(pairs, loss):
        candidates = without_noise(graph, pairs, loss)[0]
        # The LP relaxation: a third of the MILP's time, and the margin covers the
        # difference.
        selection = stage_selection(graph, candidates, settings, "lp")
        return within_reach(graph, candidates, selection, settings.value)
    return reach


def _stability(graph, eig, reference_loss, settings, chosen):
    """The :class:`StabilityRecord` of the groups chosen with the held-out eigenvalues
    against those chosen with the estimation data's (same vectors); None without the
    latter."""
    if all(e.fit_values is None for e in eig.values()):
        return None
    # Layers without a splitting signal have no estimation-data values: zeros either way.
    on_fit = {name: e if e.fit_values is None else dataclasses.replace(e, values=e.fit_values)
              for name, e in eig.items()}
    other = stage_selection(graph, without_noise(graph, on_fit, reference_loss)[0],
                            settings).chosen
    a, b = set(int(i) for i in chosen), set(int(i) for i in other)
    union = a | b
    return StabilityRecord(len(a & b) / len(union) if union else None, len(a), len(b))


def _split(model, chosen, eig, settings, held_out, reference_loss, dry_run):
    """Splits the selection under the loss guard (or plans it, ``dry_run``): a
    :class:`_SplitOutcome`."""
    graph, rule = model.channel_graph, settings.rule
    groups = chosen.selection.chosen_groups
    macs_before, params_before = count_flops(model), int(model.count_params())
    before_units = {n: graph.units(n) for n in graph.splittable_layers}
    units, pairs = chosen.units, {}
    norms = _kernel_norms(graph, units)
    if dry_run:
        return _SplitOutcome(
            macs_before, params_before, int(cost_lib.widened_cost(graph, groups, "flops")),
            int(cost_lib.widened_cost(graph, groups, "params")), units,
            GuardOutcome(None, None, GuardRecord()), pairs, norms,
            _layer_records(graph, eig, units, before_units))
    if groups:
        guard = guarded_split(model, groups, eig, rule, held_out, seed=settings.seed,
                              loss_before=reference_loss)
    else:
        guard = GuardOutcome(reference_loss, reference_loss, GuardRecord())
    if guard.committed:
        pairs = children_pairs(units, before_units)
    else:
        units = {name: [] for name in units}
    return _SplitOutcome(macs_before, params_before, count_flops(model),
                         int(model.count_params()), units, guard, pairs, norms,
                         _layer_records(graph, eig, units, before_units))


def _stage_record(model, settings, eig, chosen, split, timer, dry_run):
    """The :class:`GrowthStage` of what the stage did."""
    rule, selection, guard = settings.rule, chosen.selection, split.guard
    tries = guard.record.tries
    # The step of the committed split; a rolled-back stage split nothing.
    used = (0.0 if guard.record.action == "rolled_back" else tries[-1].epsilon if tries
            else rule.epsilon)
    # The second-order term of the eigen step (the only term for "halves" outgoing).
    predicted = sum(0.5 * (used * (split.norms[name][u] if rule.relative else 1.0)) ** 2
                    * eig[name].values[u] for name, units in split.units.items()
                    for u in units)
    twins = twin_statistics(model)
    return GrowthStage(
        stage=len(model.growth_history), method=settings.method,
        cost=settings.cost_model.name,
        solver=selection.solver, growth_ratio=float(settings.growth_ratio),
        epsilon=float(used), budget=selection.budget,
        macs_before=int(split.macs_before), macs_after=int(split.macs_after),
        params_before=split.params_before, params_after=int(split.params_after),
        n_candidates=int((selection.values < settings.threshold).sum()),
        n_selected=int(len(selection.chosen)), selected_value=selection.chosen_value,
        predicted_loss_change=float(predicted),
        loss_before=guard.loss_before, loss_after=guard.loss_after,
        measured_loss_change=None if dry_run else guard.loss_after - guard.loss_before,
        layers=split.layers,
        seconds=StageSeconds(timer[1] - timer[0], timer[2] - timer[1], timer[3] - timer[2]),
        dry_run=bool(dry_run), split_rule=rule.get_config(), guard=guard.record,
        children=split.pairs,
        twins=TwinRecord(**{k: twins[k] for k in ("units", "twins", "twin_fraction",
                                                   "distinct")}),
        n_noise=chosen.n_noise, eigen=_eigen_record(eig), stability=chosen.stability,
        limits=[dataclasses.replace(r, after=r.before) if guard.record.action == "rolled_back"
                else r for r in chosen.limits],
    )


def _layer_records(graph, eig, split_units, before_units):
    """Per producer, the :class:`LayerRecord` of the graph before the split."""
    layers = {}
    for name in graph.splittable_layers:
        e = eig[name]
        res = e.residuals if e.residuals is not None else np.zeros_like(e.values)
        layers[name] = LayerRecord(
            units_before=before_units[name],
            units_after=before_units[name] + len(split_units[name]),
            split_indices=sorted(split_units[name]),
            lambda_min=float(e.values.min()), lambda_mean=float(e.values.mean()),
            n_negative=int((e.values < 0).sum()),
            residual_max=float(res.max()), residual_mean=float(res.mean()),
            lambdas=[float(v) for v in e.values])
    return layers


def _eigen_record(eig):
    """How far the estimate went and how well it converged: an :class:`EigenSummary`."""
    passes = eigen_passes(eig)
    return EigenSummary(
        passes=passes,
        fit_residual_ratio=relative_residual(eig, fit=True) if passes else None,
        residual_ratio=relative_residual(eig),
        unconverged={n: len(u) for n, u in unconverged_neurons(eig).items()})


def _kernel_norms(graph, split_units):
    """``{layer: [norm of each unit's incoming kernel]}`` for the layers with split units."""
    norms = {}
    for name, units in split_units.items():
        if units:
            kernel = keras.ops.convert_to_numpy(graph.kernel(name))
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
        if stage.twins is not None:
            tf.summary.scalar("growth/twin_fraction", stage.twins.twin_fraction)
            tf.summary.scalar("growth/distinct_filters", stage.twins.distinct)
        for name, e in eig.items():
            tf.summary.histogram(f"lambda/{name}", e.values)
            tf.summary.scalar(f"width/{name}", stage.layers[name].units_after)
    writer.flush()
