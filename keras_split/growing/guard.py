"""The loss guard: a growth stage never raises the held-out loss."""

import dataclasses
import logging
import math

import numpy as np
import tensorflow as tf

from keras_split.data import data_utils
from keras_split.graph.channel_map import ChannelMap
from keras_split.growing import distributed
from keras_split.growing.stage_records import GuardRecord, GuardTry

logger = logging.getLogger(__name__)

# mean_loss joins consecutive batches up to this many examples and bytes, so that a
# candidate network runs eagerly once per chunk instead of once per small batch (the
# eager call's fixed cost, not the examples, dominates the guard's time on small batches).
CHUNK_EXAMPLES = 512
CHUNK_BYTES = 64 * 2**20


def mean_loss(model, dataset, network=None):
    """The compiled loss of ``model`` averaged over ``dataset`` (inference mode).

    Every example weighs the same (batches by their size); consecutive batches
    are joined into chunks of at most ``CHUNK_EXAMPLES`` examples and
    ``CHUNK_BYTES`` bytes of inputs, each evaluated in one call. ``network``
    (e.g. a widened candidate) computes the predictions instead of ``model``
    when given.

    Raises:
        ValueError: for empty data.
    """
    network = model if network is None else network
    total, count = 0.0, 0
    for (x, y, sw), n in _chunks(dataset):
        y_pred = network(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=False)
        total += float(loss) * n
        count += n
    if count == 0:
        raise ValueError("The evaluation data is empty.")
    # Across workers, every one takes the guard's decision from the same number.
    return distributed.worker_mean(total / count, model.distribute_strategy)


def _chunks(dataset):
    """``((x, y, sample_weight), examples)`` of consecutive batches of ``dataset`` joined
    into chunks."""
    chunk, examples, size = [], 0, 0
    for batch in dataset:
        parts = data_utils.unpack(batch)
        n, nbytes = int(data_utils.batch_size_of(parts[0])), data_utils.nbytes(parts[0])
        if chunk and (examples + n > CHUNK_EXAMPLES or size + nbytes > CHUNK_BYTES):
            yield _joined(chunk), examples
            chunk, examples, size = [], 0, 0
        chunk.append(parts)
        examples, size = examples + n, size + nbytes
    if chunk:
        yield _joined(chunk), examples


def _joined(batches):
    """One ``(x, y, sample_weight)`` from a list of them (concatenated on axis 0)."""
    if len(batches) == 1:
        return batches[0]
    return tuple(
        None if parts[0] is None else tf.nest.map_structure(lambda *t: tf.concat(t, 0), *parts)
        for parts in zip(*batches))


# Step factors tried by the loss guard, the last one a function-preserving split.
SHRINK = (1.0, 0.25, 0.0625, 0.0)


def children_pairs(split_units, before_units):
    """``{layer: [[first, second], ...]}``: new indices of each split unit's children."""
    pairs = {}
    for name, units in split_units.items():
        if units:
            mask = np.zeros(before_units[name], dtype=bool)
            mask[units] = True
            firsts, seconds = ChannelMap.from_split_mask(mask).pairs()
            pairs[name] = [[int(a), int(b)] for a, b in zip(firsts, seconds)]
    return pairs


@dataclasses.dataclass
class GuardOutcome:
    """What :func:`guarded_split` did: the held-out loss around it and its record.

    Attributes:
        loss_before: the held-out loss of the model before the split.
        loss_after: the held-out loss of the model after it (``loss_before`` when
            rolled back).
        record: the :class:`~keras_split.growing.stage_records.GuardRecord`: the
            action and the candidates measured.
    """

    loss_before: float
    loss_after: float
    record: GuardRecord

    @property
    def committed(self):
        """True when a candidate was committed (``"split"`` or ``"shrunk"``)."""
        return self.record.action in ("split", "shrunk")


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
        A :class:`GuardOutcome`; its record's ``action`` is ``"split"``,
        ``"shrunk"`` or ``"rolled_back"``.

    Example:
        >>> guarded_split(model, [0, 3], eig, SplitRule.get("fresh"), held_out).record.action
        'split'
    """
    if loss_before is None:
        loss_before = mean_loss(model, held_out)
    bound = loss_before + tolerance * max(1.0, abs(loss_before))
    tries = []
    # The candidate is widened once; a smaller step only moves the stepped kernels back
    # along their eigenvector steps (linear in epsilon): no second clone.
    candidate = model.widened_candidate(groups, eig, rule, seed)
    network, stepped = candidate.network, candidate.stepped()
    current = 1.0
    for factor in shrink:
        if tries and (rule.epsilon * factor == tries[-1].epsilon or not stepped):
            continue
        for var, step in stepped:
            var.assign(var - ((current - factor) * step).astype(var.dtype))
        current = factor
        loss = mean_loss(model, held_out, network=network)
        tries.append(GuardTry(rule.epsilon * factor, loss))
        # A step-0 candidate computes the same function by construction: what its loss
        # differs by is float32 rounding (5e-5 relative on a MobileNetV2), not a real rise.
        if math.isfinite(loss) and (loss <= bound or rule.epsilon * factor == 0):
            model.commit(candidate, rule.scaled(factor))
            action = "split" if len(tries) == 1 else "shrunk"
            return GuardOutcome(loss_before, loss, GuardRecord(action, tries))
    logger.warning("Growth stage rolled back: every split raised the held-out loss (%s).",
                   [(t.epsilon, t.loss) for t in tries])
    return GuardOutcome(loss_before, loss_before, GuardRecord("rolled_back", tries))
