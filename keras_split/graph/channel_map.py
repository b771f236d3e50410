"""Index maps from a widened tensor's channels back to the original channels.

Splitting channel ``k`` of a tensor inserts its copy right after it, so that the
order of channels is kept under concatenation and element-wise merges. A
:class:`ChannelMap` records, for every channel of the widened tensor, the
original channel it comes from (``src``); ``mult`` is how many copies of that
original channel exist (2 for a split channel, 1 otherwise).
"""

import numpy as np


class ChannelMap:
    """Where each channel of a widened tensor comes from.

    Args:
        src: integer array, ``src[j]`` is the original channel of new channel ``j``.
        old_size: the number of channels before widening.

    Example:
        >>> m = ChannelMap.from_split_mask(np.array([False, True, False]))
        >>> m.src.tolist(), m.mult.tolist()
        ([0, 1, 1, 2], [1, 2, 2, 1])
    """

    def __init__(self, src, old_size):
        self.src = np.asarray(src, dtype=np.int64)
        self.old_size = int(old_size)
        counts = np.bincount(self.src, minlength=self.old_size)
        self.mult = counts[self.src]

    @classmethod
    def identity(cls, size):
        return cls(np.arange(size), size)

    @classmethod
    def from_split_mask(cls, mask):
        """Duplicates every channel whose ``mask`` entry is true, copy right after it."""
        mask = np.asarray(mask, dtype=bool)
        return cls(np.repeat(np.arange(mask.size), 1 + mask.astype(np.int64)), mask.size)

    @property
    def size(self):
        return int(self.src.size)

    @property
    def changed(self):
        return self.size != self.old_size

    def pairs(self):
        """``(firsts, seconds)``: new indices of the first and second copy of every split channel."""
        _, first_of = np.unique(self.src, return_index=True)
        seconds = np.setdiff1d(np.arange(self.size), first_of)
        return first_of[np.searchsorted(np.unique(self.src), self.src[seconds])], seconds

    def children(self, channel):
        """The new indices of the copies of original ``channel`` (1 or 2 of them)."""
        return np.flatnonzero(self.src == channel)

    def gather(self, array, axis, halve=False):
        """Duplicates ``array`` entries along ``axis``; divides copies by ``mult`` if ``halve``."""
        out = np.take(array, self.src, axis=axis)
        if halve:
            shape = [1] * out.ndim
            shape[axis] = -1
            out = out / self.mult.reshape(shape).astype(out.dtype)
        return out.astype(array.dtype, copy=False)

    def repeat(self, times):
        """The map of a tensor whose channels are this one's, each repeated ``times`` in a row."""
        src = (self.src[:, None] * times + np.arange(times)[None, :]).reshape(-1)
        return ChannelMap(src, self.old_size * times)

    def tile(self, times):
        """The map of a tensor holding ``times`` consecutive blocks of these channels."""
        offsets = np.arange(times)[:, None] * self.old_size
        return ChannelMap((offsets + self.src[None, :]).reshape(-1), self.old_size * times)


class WeightEdit:
    """How one weight array of a layer is rebuilt after a split.

    A list of ``(axis, ChannelMap, halve)`` gathers, then an optional additive
    ``delta`` (the perturbation along the splitting eigenvector). Optimizer
    slot variables of the weight go through the gathers only.

    Args:
        gathers: list of ``(axis, ChannelMap, halve)``.
        delta: None or an array of the new weight's shape.
        step: the part of ``delta`` that is the split's step along eigenvectors
            (linear in epsilon, so that a smaller step is ``delta - (1 - f) * step``).
        scale: multiplies the rebuilt weight, ``delta`` included (not its slots).
    """

    def __init__(self, gathers=(), delta=None, step=None, scale=1.0):
        self.gathers = list(gathers)
        self.delta = delta
        self.step = step
        self.scale = scale

    def apply(self, array, with_delta=True, halve=True, reset_seconds=False):
        """The rebuilt array.

        Args:
            array: the old weight (or one of its optimizer slots).
            with_delta: add ``delta`` and multiply by ``scale`` (weights, not slots).
            halve: halve duplicated entries where the gather says so.
            reset_seconds: zero the entries of every second copy of a split
                channel, on every gathered axis (optimizer slots of new children).
        """
        out = np.asarray(array)
        for axis, cmap, do_halve in self.gathers:
            if cmap.changed:
                out = cmap.gather(out, axis, halve=do_halve and halve)
                if reset_seconds:
                    index = [slice(None)] * out.ndim
                    index[axis] = cmap.pairs()[1]
                    out = out.copy()
                    out[tuple(index)] = 0
        if with_delta and self.delta is not None:
            out = out + self.delta.astype(out.dtype)
        if with_delta and self.scale != 1.0:
            out = out * np.asarray(self.scale, dtype=out.dtype)
        return out
