"""Optimizer state across a split: a fresh optimizer with the old one's slots carried over."""

import logging

import keras

from keras_split import compat

logger = logging.getLogger(__name__)


def rebuild_optimizer(old, var_edits, variables, reset_slots=False, sources=None):
    """A fresh optimizer of ``old``'s config for ``variables``, with its state carried over.

    The iteration count is kept. Slot variables (momentum, Adam moments, ...)
    of unchanged weights are copied; those of widened weights go through the
    weight's edit: both children of a unit start with the parent's slots (the
    second child's are zero with ``reset_slots``), and first moments of a
    consumer's duplicated input rows are halved like the rows themselves. A
    slot that cannot be carried over starts at zero, and a warning names it.

    Args:
        old: the optimizer in use (built or not).
        var_edits: ``{weight path: edit}`` of the widened weights (see
            :mod:`keras_split.surgery.widening`).
        variables: the new network's trainable variables.
        reset_slots: the split rule's ``reset_slots``.
        sources: ``{new weight path: old weight path}`` where they differ (a layer
            of a Sequential or nested model has its model's name in its paths): the
            old slots of the weight are found under the old path. Default: the
            same paths.

    Returns:
        A new optimizer, built for ``variables`` when ``old`` was built.

    Example:
        >>> optimizer = rebuild_optimizer(model.optimizer, var_edits,
        ...                               network.trainable_variables)
    """
    new = old.__class__.from_config(old.get_config())
    if not old.built:
        return new
    new.build(variables)
    new.iterations.assign(old.iterations)
    old_slots = {v.name: v for v in old.variables}
    renames = {compat.slot_prefix(p): compat.slot_prefix(o)
               for p, o in (sources or {}).items() if p != o}
    prefixes = sorted(((compat.slot_prefix(p), e) for p, e in var_edits.items()),
                      key=lambda item: -len(item[0]))
    lost = []
    for slot in new.variables:
        source = old_slots.get(_old_name(slot.name, renames))
        if slot is new.iterations:
            continue
        value = None if source is None else _carried(slot, source, prefixes, reset_slots)
        if value is None:
            lost.append(slot.name)
            continue
        slot.assign(value)
    if lost:
        logger.warning("Optimizer slots that start at zero after the split (no matching "
                       "state in the old optimizer): %s", lost)
    return new


def _old_name(name, renames):
    """The old optimizer's name of slot ``name``: its weight's prefix (the longest of
    ``renames`` that starts it) replaced by the old weight's."""
    cuts = [i + 1 for i, c in enumerate(name) if c == "_"]
    for cut in reversed(cuts):
        if name[:cut] in renames:
            return renames[name[:cut]] + name[cut:]
    return name


def _carried(slot, source, prefixes, reset_slots):
    """``source``'s value for ``slot``, through the weight's edit when widened (or None)."""
    value = keras.ops.convert_to_numpy(source)
    if tuple(value.shape) == tuple(slot.shape):
        return value
    edit = next((e for p, e in prefixes if slot.name.startswith(p)), None)
    if edit is None:
        return None
    # First moments (SGD velocity, Adam's m) are halved where the weights are, so that
    # the two halves together keep the parent's momentum.
    value = edit.apply(value, with_delta=False, halve=compat.is_first_moment(slot),
                       reset_seconds=reset_slots)
    return value if tuple(value.shape) == tuple(slot.shape) else None
