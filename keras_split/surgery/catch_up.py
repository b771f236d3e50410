"""`CatchUp`: a learning-rate boost for the weights a split creates, decaying to none.

Units added at a growth stage start training when the rest of the network has
already trained for ``t0`` steps. ``CatchUp`` records, for every entry of every
trainable weight, the optimizer step at which it was created (0 for the seed
network's) and the boost ``g`` its split rule gave it (``SplitRule.catch_up``).
An entry created at step ``t0 > 0`` has its gradient multiplied by

    m(t) = 1 + (g - 1) * max(0, 1 - (t - t0) / t0)

at step ``t``: ``g`` at its creation, back to 1 after as many steps as the
network had trained before it. With momentum SGD the update is proportional to
the gradient, so the extra training the new entries get, ``(g - 1) * t0 / 2``
steps' worth, equals the ``t0`` steps they missed when ``g = 3``. Entries
created by a split are the second children's: their incoming weights, their
channel-wise parameters (BatchNormalization, depthwise filters, biases) and their
rows in every consumer; a first child keeps its parent's record.

The record is training state, like an optimizer's slots: it follows the model
through splits; a ``.keras`` file does not hold it, the checkpoints of
``keras_split.grow_schedule`` do (:meth:`CatchUp.to_arrays`).

Example:
    >>> state = CatchUp().after_split(var_edits, network.trainable_variables,
    ...                               iteration=312, gain=3.0)
    >>> state.active
    True
"""

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class EntryRecord:
    """Per entry of one weight: the step it was created at (0: before any training
    or the seed network) and its gradient boost at creation."""

    birth: np.ndarray
    gain: np.ndarray


class CatchUp:
    """The creation steps and boosts of every trainable weight's entries.

    Args:
        records: ``{variable path: EntryRecord}``; weights without a record have
            no boosted entry.

    Example:
        >>> CatchUp().active
        False
    """

    def __init__(self, records=None):
        self.records = dict(records or {})

    @property
    def active(self):
        """True when some entry has a boost (``gain != 1``) to apply."""
        return bool(self.records)

    def to_arrays(self):
        """The record as named arrays (for ``np.savez``; :meth:`from_arrays` reads them)."""
        arrays = {"paths": np.array(sorted(self.records), dtype=str)}
        for i, path in enumerate(arrays["paths"]):
            arrays[f"birth_{i}"] = self.records[path].birth
            arrays[f"gain_{i}"] = self.records[path].gain
        return arrays

    @classmethod
    def from_arrays(cls, arrays):
        """The record :meth:`to_arrays` wrote (``arrays``: a mapping, e.g. ``np.load``'s)."""
        return cls({str(path): EntryRecord(np.asarray(arrays[f"birth_{i}"]),
                                           np.asarray(arrays[f"gain_{i}"]))
                    for i, path in enumerate(arrays["paths"])})

    def after_split(self, var_edits, variables, iteration, gain):
        """The record after a split at optimizer step ``iteration``.

        Args:
            var_edits: ``{variable path: WeightEdit}`` of the widened weights
                (see :func:`keras_split.surgery.widening.widen_model`).
            variables: the new network's trainable variables.
            iteration: the optimizer's step count at the split.
            gain: the boost of the entries the split creates (1: none).

        Returns:
            A new ``CatchUp`` (this one is unchanged).

        Raises:
            ValueError: for ``gain < 1`` or a negative ``iteration``.
        """
        gain, iteration = float(gain), int(iteration)
        if not gain >= 1.0:
            raise ValueError(f"gain must be >= 1. Received: gain={gain!r}")
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0. Received: iteration={iteration!r}")
        records = {}
        for variable in variables:
            path, shape = variable.path, tuple(variable.shape)
            old, edit = self.records.get(path), var_edits.get(path)
            if edit is None:
                if old is not None and old.birth.shape == shape:
                    records[path] = old
                continue
            before = _shape_before(edit, shape)
            if old is None:
                old = EntryRecord(np.zeros(before, np.int64), np.ones(before, np.float32))
            birth = edit.apply(old.birth, with_delta=False, halve=False)
            boost = edit.apply(old.gain, with_delta=False, halve=False)
            if gain != 1.0 and iteration > 0:
                created = edit.apply(np.ones(before, np.int8), with_delta=False, halve=False,
                                     reset_seconds=True) == 0
                birth, boost = birth.copy(), boost.copy()
                birth[created], boost[created] = iteration, gain
            if ((birth > 0) & (boost != 1.0)).any():
                records[path] = EntryRecord(birth, boost)
        return CatchUp(records)

    def multiplier(self, path, iteration, dtype="float32"):
        """The gradient multiplier of the weight at ``path`` at step ``iteration`` (a
        tensor of the weight's shape), or None when none of its entries is boosted.

        Args:
            path: the variable's path.
            iteration: the optimizer's step count (a scalar tensor or number).
            dtype: the multiplier's dtype (the gradient's).
        """
        record = self.records.get(path)
        if record is None:
            return None
        ops = keras.ops
        birth = ops.convert_to_tensor(record.birth, dtype)
        step = ops.cast(iteration, dtype)
        left = ops.clip(1.0 - (step - birth) / ops.maximum(birth, 1.0), 0.0, 1.0)
        left = ops.where(birth > 0, left, ops.zeros_like(left))
        return 1.0 + (ops.convert_to_tensor(record.gain, dtype) - 1.0) * left

    def transform(self, iteration):
        """``fn(gradient, variable)``: the gradient times its multiplier at ``iteration``
        (unchanged for weights without a record and for sparse gradients)."""
        def scale(gradient, variable):
            if gradient is None or type(gradient).__name__ == "IndexedSlices":
                return gradient
            factor = self.multiplier(variable.path, iteration, gradient.dtype)
            return gradient if factor is None else gradient * factor
        return scale


def _shape_before(edit, shape):
    """The weight's shape before ``edit``'s gathers (each gathered axis at its old size)."""
    before = list(shape)
    for axis, cmap, _ in edit.gathers:
        before[axis] = cmap.old_size
    return tuple(before)
