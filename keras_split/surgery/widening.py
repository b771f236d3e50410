"""Function-preserving widening of a functional model (the "surgery").

Given the coupled groups to split, :func:`widen_model` computes the channel map
of every tensor, asks each layer's handler for its new config and weight edits,
makes the children of every split unit by a :class:`~keras_split.surgery.split_rule.SplitRule`
(a step ``+/- eps_i v`` along that producer's eigenvector, fresh weights, how the
consumers share the outgoing weights), clones the model with the new widths and
writes the new weights. At ``epsilon = 0`` the widened model computes the same
function, whatever the rule.
"""

import dataclasses
import logging

import keras
import numpy as np

from keras_split.graph.channel_graph import FIXED
from keras_split.graph.channel_map import WeightEdit
from keras_split.surgery.split_rule import SplitRule

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class WidenedNetwork:
    """A widened clone of a network and the edit behind each of its weights.

    Attributes:
        network: the widened functional model (the original is unchanged).
        var_edits: ``{variable_path: WeightEdit}``, the edit that produced each
            weight of ``network`` (optimizer slots and catch-up follow them).
        sources: ``{variable_path: old variable_path}`` for every weight of
            ``network``: the weight of the original it was made from (a layer of a
            Sequential or nested model has its model's name in its paths, its
            clone does not).

    Example:
        >>> widened = widen_model(graph, plan_edits(graph, groups, eig, rule))
        >>> [v.path for v, _ in widened.stepped()]
        ['dense/kernel']
    """

    network: keras.Model
    var_edits: dict
    sources: dict = dataclasses.field(default_factory=dict)

    def stepped(self):
        """``[(variable, step)]``: the kernels moved along an eigenvector step, with that
        step (linear in epsilon: ``variable - (1 - f) * step`` is the step scaled by ``f``)."""
        return [(v, self.var_edits[v.path].step * self.var_edits[v.path].scale)
                for v in self.network.weights
                if v.path in self.var_edits and self.var_edits[v.path].step is not None]


def resolve_plan(graph, plan):
    """Turns ``{layer_name: [unit, ...]}`` into the set of coupled groups to split.

    Naming any member of a coupled group selects the whole group (naming two
    members of one group is one split); naming the same unit twice is an error.

    Args:
        graph: a :class:`keras_split.graph.channel_graph.ChannelGraph`.
        plan: dict from producer layer name to an iterable of unit indices.

    Returns:
        A sorted list of group ids.

    Raises:
        ValueError: for an unknown or unsplittable layer name, a non-integer,
            repeated or out-of-range unit, or a unit whose channel cannot be split.
    """
    if not isinstance(plan, dict):
        raise ValueError(f"The split plan must be a dict {{layer_name: [units]}}, got {type(plan).__name__}.")
    groups = set()
    for name, units in plan.items():
        _check_producer(graph, name)
        n_units = graph.units(name)
        if isinstance(units, (int, np.integer)):
            units = [units]
        seen = set()
        for unit in units:
            if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
                raise ValueError(
                    f"Unit index {unit!r} of layer '{name}' is not an integer."
                )
            if int(unit) in seen:
                raise ValueError(
                    f"Unit {unit} of layer '{name}' is named more than once; a unit splits "
                    f"once per call. Received: {name}={list(units)}"
                )
            seen.add(int(unit))
            if not 0 <= unit < n_units:
                raise ValueError(
                    f"Unit index {unit} is out of range for layer '{name}' "
                    f"({type(graph.producers[name].layer).__name__}) with {n_units} units."
                )
            group = graph.group_of(name, int(unit))
            if group == FIXED:
                raise ValueError(
                    f"Unit {unit} of layer '{name}' "
                    f"({type(graph.producers[name].layer).__name__}) cannot be split: its channel "
                    "reaches a model output, a model input or a channel-mixing layer."
                )
            groups.add(group)
    return sorted(groups)


def _check_producer(graph, name):
    """Raises ValueError unless ``name`` is a producer (Dense, Conv2D) of ``graph``."""
    if name in graph.producers:
        return
    known = [n.layer.name for n in graph.nodes]
    if name in known:
        raise ValueError(
            f"Layer '{name}' ({type(graph.model.get_layer(name)).__name__}) "
            "is not a splittable layer. Splittable layers: "
            f"{graph.splittable_layers}."
        )
    raise ValueError(
        f"Unknown layer name '{name}'. Splittable layers: {graph.splittable_layers}."
    )


def _eigenvector(eigenpairs, layer, kernel_shape, unit):
    if eigenpairs is None or layer.name not in eigenpairs:
        raise ValueError(
            f"No eigenpairs for layer '{layer.name}': pass the result of "
            "splitting_eigenpairs() (or epsilon=0)."
        )
    vectors = np.asarray(eigenpairs[layer.name].vectors)
    fan_shape = tuple(kernel_shape[:-1])
    expected = (int(kernel_shape[-1]), int(np.prod(fan_shape)))
    if vectors.shape != expected:
        raise ValueError(
            f"Eigenvectors of layer '{layer.name}' have shape {vectors.shape}, "
            f"expected {expected}: they were computed for another width."
        )
    v = vectors[unit]
    if not np.all(np.isfinite(v)):
        raise ValueError(f"Eigenvector of unit {unit} of layer '{layer.name}' is not finite.")
    return v.reshape(fan_shape)


def _rms(array):
    return float(np.sqrt(np.mean(np.square(array)))) if array.size else 0.0


def _fresh_rms(initializer, old, new_shape, rule):
    """The RMS of a fresh child's incoming weights before ``rule.fresh_scale``."""
    if rule.incoming != "fresh" or rule.fresh_init == "kernel":
        return _rms(old)
    sample = keras.ops.convert_to_numpy(initializer(new_shape, dtype="float32"))
    return _rms(sample)


def _children_incoming(layer, handler, edit, in_map, out_map, units, eigenpairs, rule, rng):
    """``(fresh, step)`` kernel deltas that make the children of ``units`` (incoming side).

    ``fresh`` replaces second children by fresh weights (``"fresh"`` rules, else
    zeros); ``step`` is the ``+/- eps_i v`` part, linear in ``rule.epsilon``.
    ``in_map`` is the map of the kernel's fan-in channels.
    """
    old = keras.ops.convert_to_numpy(handler.kernel(layer)).astype(np.float64)
    fan_shape = old.shape[:-1]
    new_shape = (fan_shape[:-1] + (in_map.size,)) + (out_map.size,)
    fresh, step = np.zeros(new_shape), np.zeros(new_shape)
    gathered = edit.apply(old, with_delta=False) if rule.incoming == "fresh" else None
    scale = rule.fresh_scale * _fresh_rms(handler.kernel_initializer(layer), old, new_shape,
                                          rule)
    for unit in units:
        first, second = out_map.children(unit)
        if rule.incoming == "fresh":
            draw = rng.normal(0.0, scale, size=new_shape[:-1])
            fresh[..., second] = draw - gathered[..., second]
        if rule.epsilon == 0:
            continue
        size = rule.epsilon * (np.linalg.norm(old[..., unit]) if rule.relative else 1.0)
        v = _eigenvector(eigenpairs, layer, old.shape, unit)
        v = in_map.gather(v.astype(np.float64), axis=v.ndim - 1, halve=True)
        step[..., first] += size * v
        step[..., second] -= size * v
    return fresh, step


def _children_outgoing(kernel, edit, in_map, rule, rng):
    """The kernel delta that shares a consumer's rows of split channels by ``rule.outgoing``
    (``in_map``: the map of the kernel's fan-in channels)."""
    if rule.outgoing == "halves" or not in_map.changed:
        return None
    firsts, seconds = in_map.pairs()
    halved = edit.apply(keras.ops.convert_to_numpy(kernel).astype(np.float64),
                        with_delta=False)
    delta = np.zeros_like(halved)
    if rule.outgoing == "parent":
        share = halved[..., seconds, :]          # w/2: the first child takes all of w
    else:
        share = rng.normal(0.0, rule.noise * _rms(halved), size=halved[..., seconds, :].shape)
    delta[..., firsts, :] = share
    delta[..., seconds, :] = -share
    return delta


def _shrunk_layers(graph, scale):
    """``{layer_name: role}`` of what ``SplitRule.old_scale`` rescales: every producer that a
    BatchNormalization directly follows (``"kernel"``) and that BatchNormalization
    (``"normalization"``); empty when ``scale`` is 1."""
    if scale == 1.0:
        return {}
    out = {}
    for name, chain in graph.chains.items():
        if chain.batch_norm is not None:
            out[name] = "kernel"
            out[chain.batch_norm.name] = "normalization"
    return out


def _shrink(layer, handler, role, updates, edits, scale):
    """Scales a producer's weights by ``scale``, or has its BatchNormalization's handler
    compensate (``role``), so that the normalised output is exactly the same."""
    if role == "kernel":
        handler.rescale_output(layer, scale, edits)
    elif role == "normalization":
        handler.rescale_input(layer, scale, updates, edits)


def plan_edits(graph, groups, eigenpairs=None, rule=None, seed=0):
    """Config updates and weight edits of every layer for splitting ``groups``.

    Args:
        graph: the model's ChannelGraph.
        groups: coupled-group ids (see :func:`resolve_plan`).
        eigenpairs: ``{layer_name: Eigenpairs}``; needed when the rule steps
            along eigenvectors (``rule.epsilon != 0``).
        rule: a :class:`keras_split.surgery.split_rule.SplitRule` (default: the papers'
            ``theta +/- 0.01 v`` with halved outgoing weights).
        seed: seed of the rule's random draws (fresh weights, antisymmetric shares).

    Returns:
        ``{layer_name: (config_updates, {weight_name: WeightEdit})}``.

    Raises:
        ValueError: for missing or mis-shaped eigenpairs.
    """
    rule = SplitRule() if rule is None else rule
    rng = np.random.default_rng(seed)
    maps = graph.channel_maps(groups)
    split_units = {}
    for group in groups:
        for name, unit in graph.group_members(group):
            split_units.setdefault(name, []).append(unit)
    shrunk = _shrunk_layers(graph, rule.old_scale)
    plans = {}
    for n in graph.nodes:
        handler = graph.handlers[n.layer.name]
        in_maps = [maps[id(t)] for t in n.inputs]
        out_maps = [maps[id(t)] for t in n.outputs]
        updates, edits = handler.widen(n.layer, in_maps, out_maps)
        _shrink(n.layer, handler, shrunk.get(n.layer.name), updates, edits, rule.old_scale)
        if handler.role == "producer":
            kernel = edits[handler.kernel_name]
            fan_map = handler.fan_in_map(n.layer, in_maps[0])
            deltas = [_children_outgoing(handler.kernel(n.layer), kernel, fan_map, rule, rng)]
            units = split_units.get(n.layer.name, [])
            if units and (rule.epsilon != 0 or rule.incoming == "fresh"):
                fresh, kernel.step = _children_incoming(n.layer, handler, kernel, fan_map,
                                                        out_maps[0], units, eigenpairs, rule, rng)
                deltas += [fresh, kernel.step]
            deltas = [d for d in deltas if d is not None]
            if deltas:
                kernel.delta = sum(deltas)
        plans[n.layer.name] = (updates, edits)
    return plans


def widen_model(graph, plans):
    """Clones ``graph.model`` with the planned widths and writes the edited weights.

    Args:
        graph: the model's ChannelGraph.
        plans: the result of :func:`plan_edits`.

    Returns:
        A :class:`WidenedNetwork`: the widened functional model, the edit that
        produced each of its weights and the weight each one comes from (for
        optimizer slot variables).
    """
    model = graph.model

    def clone(layer):
        updates = plans.get(layer.name, ({}, {}))[0]
        config = layer.get_config()
        config.update(updates)
        return type(layer).from_config(config)

    new_model = keras.models.clone_model(model, clone_function=clone)
    var_edits, sources = {}, {}
    for n in graph.nodes:
        if not isinstance(n.layer, keras.layers.Layer):
            continue   # an op node: no weights, re-created by clone_model
        new_layer = new_model.get_layer(n.layer.name)
        edits = plans[n.layer.name][1]
        if len(new_layer.weights) != len(n.layer.weights):
            raise RuntimeError(f"Internal error widening '{n.layer.name}': "
                               f"{len(new_layer.weights)} weights vs {len(n.layer.weights)}.")
        # Matched by position: unnamed weights (add_weight without a name) are numbered
        # anew in the clone.
        for old_w, w in zip(n.layer.weights, new_layer.weights):
            value = keras.ops.convert_to_numpy(old_w)
            edit = edits.get(old_w.name)
            if edit is not None:
                value = edit.apply(value)
                var_edits[w.path] = edit
            if tuple(value.shape) != tuple(w.shape):
                raise RuntimeError(
                    f"Internal error widening '{n.layer.name}/{w.name}': "
                    f"{value.shape} vs {tuple(w.shape)}."
                )
            w.assign(value.astype(w.dtype))
            sources[w.path] = old_w.path
    logger.debug("Widened model %s", new_model.name)
    return WidenedNetwork(new_model, var_edits, sources)
