"""The memory plan of the exact method: how it stays within ``max_bytes``.

While it builds them, the exact method holds every splitting matrix in float64
(``units * fan_in**2 * 8`` bytes per layer). On top of that it needs the tensors of one
sub-batch (its forward and backward pass, the coefficients ``g[positions, units]`` and
the patches ``p[positions, fan_in]``) with one contraction chunk (``w[k, :, n] = g[n, k]
p[n]`` for a few neurons ``k`` and positions ``n``, whose product with ``p`` adds to
``S_k``), and, after the data, the output of ``numpy.linalg.eigh`` on a few matrices
(on top of the sub-batches' memory, which TensorFlow's allocator keeps).
:class:`MemoryPlan` picks the sub-batch and chunk sizes that keep the sum within
``max_bytes``, and refuses, before any work, when the matrices and the smallest working
set (one example, one neuron and one position at a time) cannot fit.
"""

FLOAT64 = 8
GIB = 2 ** 30

# TensorFlow's own memory while it runs the method (the traced functions, the kernels'
# caches): 25-70 MiB measured on the tests' networks.
RUNTIME_BYTES = 64 * 2 ** 20

# The share of the room (``max_bytes`` less the matrices and RUNTIME_BYTES) that
# ``eigh`` gets.
EIGH_SHARE = 0.125

# Ops whose outputs are not allocated by the traced function (the inputs, the
# weights, constants).
_NOT_ALLOCATED = ("Placeholder", "ReadVariableOp", "Const", "VarHandleOp")


def traced_bytes(concrete_function):
    """The bytes of every tensor that a traced function's ops output.

    An upper bound of what the function holds at once: its executor frees a tensor
    after the last op that reads it.

    Args:
        concrete_function: a ``tf.function``'s concrete function with static shapes.

    Returns:
        int.
    """
    total = 0
    for op in concrete_function.graph.get_operations():
        if op.type in _NOT_ALLOCATED:
            continue
        for t in op.outputs:
            numeric = t.dtype.is_floating or t.dtype.is_integer or t.dtype.is_bool
            if numeric and t.shape.is_fully_defined():
                total += t.shape.num_elements() * t.dtype.size
    return total


def eigh_bytes(units, fan_in):
    """Bytes of ``numpy.linalg.eigh`` on ``units`` matrices: its outputs and the LAPACK
    buffers of one matrix."""
    d = fan_in
    return FLOAT64 * (units * (d * d + d) + 3 * d * d + 12 * d)


class MemoryPlan:
    """Sub-batch and chunk sizes that keep the exact method within ``max_bytes``.

    Args:
        sizes: ``{layer: (units, fan_in)}`` of every layer whose matrices are built.
        itemsizes: ``{layer: bytes of one element of its compute dtype}`` of the layers
            whose matrices are computed (those with a splitting signal).
        max_bytes: the cap on the method's memory.

    Raises:
        ValueError: when the float64 matrices and the smallest working set need more
            than ``max_bytes``.

    Example:
        >>> plan = MemoryPlan({"dense": (64, 128)}, {"dense": 4}, 2**30)
        >>> plan.fit_examples(example_bytes=4096)
    """

    def __init__(self, sizes, itemsizes, max_bytes):
        self.sizes = dict(sizes)
        self.itemsizes = dict(itemsizes)
        self.max_bytes = int(max_bytes)
        self.matrices = FLOAT64 * sum(u * d * d for u, d in self.sizes.values())
        # The eigenpairs returned (values, vectors) are held with the matrices.
        vectors = FLOAT64 * sum(u * (d + 2) for u, d in self.sizes.values())
        self.room = self.max_bytes - self.matrices - vectors - RUNTIME_BYTES
        self.smallest_chunk = max((self.chunk_bytes(n, 1, 1) for n in self.itemsizes), default=0)
        self.smallest_eigh = max((eigh_bytes(1, d) for _, d in self.sizes.values()), default=0)
        self.eigh_room = self.smallest_eigh
        self.examples = None
        self.example_bytes = 0
        self.chunk_room = 0
        self.check()

    def chunk_bytes(self, name, units, rows):
        """Bytes of one contraction chunk of ``units`` neurons of layer ``name`` over
        ``rows`` positions: the slices of ``g`` and ``p``, ``w`` and the product."""
        d = self.sizes[name][1]
        return self.itemsizes[name] * (
            units * rows * d + 2 * units * d * d + 2 * rows * (d + units))

    def smallest_work(self, example_bytes=0):
        """Bytes of the smallest working set: one example, a chunk of one neuron over one
        position and ``eigh`` of one matrix."""
        return example_bytes + self.smallest_chunk + self.smallest_eigh

    def check(self, example_bytes=0):
        """Raises ValueError when the matrices and the smallest working set do not fit."""
        work = self.smallest_work(example_bytes)
        if work <= self.room:
            return
        need = self.max_bytes - self.room + work
        detail = ", ".join(f"{n}: {u}x{d}x{d}" for n, (u, d) in self.sizes.items())
        raise ValueError(
            f"The exact method would need {need / GIB:.2f} GiB: {self.matrices / GIB:.2f} "
            f"GiB for the float64 splitting matrices ({detail}) and at least "
            f"{(need - self.matrices) / GIB:.3f} GiB to build them one example and one "
            "neuron at a time (TensorFlow's own memory included), "
            f"more than max_bytes={self.max_bytes / GIB:.2f} GiB. Use method='lobpcg' or "
            f"'fast', fewer layers, or a larger max_bytes. Received: max_bytes={self.max_bytes}")

    def fit_examples(self, example_bytes, batch_size=None):
        """Shares the room out once the bytes of one example are known.

        ``eigh`` gets ``EIGH_SHARE`` of it (TensorFlow's allocator keeps the memory of
        the sub-batches, so ``eigh`` cannot reuse it); a sub-batch gets as many
        examples as half of the rest holds (at least one, at most ``batch_size``), and
        the contraction chunks what is left.

        Args:
            example_bytes: an upper bound of the bytes one example's tensors take.
            batch_size: the size of the data's batches (None: no limit).

        Returns:
            int, the examples per sub-batch.

        Raises:
            ValueError: when one example does not fit with the matrices.
        """
        self.check(example_bytes)
        e = max(int(example_bytes), 1)
        spare = self.room - e - self.smallest_chunk
        self.eigh_room = max(self.smallest_eigh, min(int(self.room * EIGH_SHARE), spare))
        tf_room = self.room - self.eigh_room
        self.example_bytes = e
        self.examples = int(max(1, min(tf_room // 2, tf_room - self.smallest_chunk) // e))
        if batch_size is not None:
            self.examples = min(self.examples, int(batch_size))
        self.chunk_room = tf_room - self.examples * e
        return self.examples

    def chunks(self, name, rows, examples):
        """``(k0, k1, n0, n1)``: the neurons and positions of each contraction chunk of
        layer ``name``, over the ``rows`` positions of a sub-batch of ``examples``.

        The chunks are those of a full sub-batch (a smaller one gets smaller ones), so
        that the allocator reuses the same blocks from one sub-batch to the next."""
        units, d = self.sizes[name]
        full = rows // examples * self.examples
        budget = self.chunk_room // self.itemsizes[name]
        k = (budget - 2 * full * d) // (full * d + 2 * d * d + 2 * full)
        n = full
        if k < 1:
            k, n = 1, max(1, (budget - 2 * d * d) // (3 * d + 2))
        k = min(k, units)
        for k0 in range(0, units, k):
            for n0 in range(0, rows, n):
                yield k0, min(k0 + k, units), n0, min(n0 + n, rows)

    def eigh_units(self, name):
        """How many of layer ``name``'s matrices one ``eigh`` call may take."""
        units, d = self.sizes[name]
        fixed = eigh_bytes(0, d)
        return int(min(units, max(1, (self.eigh_room - fixed) // (FLOAT64 * (d * d + d)))))
