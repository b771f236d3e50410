"""Measured latency as a cost: every layer timed alone with the TFLite interpreter.

As hardware-aware architecture search does (a latency lookup table), a network's
latency is predicted as the sum of its layers' latencies, each measured once on the
device: the layer rebuilt from its config at its input shape and batch size, converted
to TFLite on its own and run by the interpreter (XNNPACK on a CPU) with the deploy
threads, the median of ``repeats`` runs. What widening a layer costs comes from the
same table: each layer is also timed with ``step`` more input and output channels, and
one more channel costs the difference over ``step`` (never below 0; XNNPACK works in
tiles of channels, so one-channel differences are steps and noise). Timed alone, layers
sum to less than the whole model (the ops' handoffs between each other), so by default
the whole network is timed too and the per-layer table is scaled to it: the total now
is measured, and what a split adds is predicted at the same scale. Measurements are
cached on disk per device, keyed by the layer's class, config and input shapes, so that
a stage measures only configurations it has not seen.

Layers that the export folds or fuses (BatchNormalization, ReLU, Dropout: their handlers
say so) cost nothing; a Keras op node (``x + 1.0``) is not timed.
"""

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_split.select import costs as cost_lib
from keras_split.select.cost_models import CostModel

logger = logging.getLogger(__name__)

# Timed runs before the measured ones, and blocks of ``repeats`` runs whose smallest median
# is kept.
WARMUP = 5
BLOCKS = 7
PAUSE = 0.05


def default_device():
    """A label of this machine (processor and system) that names its latency table."""
    name = f"{platform.system()}-{platform.machine()}-{platform.processor() or 'cpu'}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class TFLiteLatency(CostModel):
    """Milliseconds of one inference, predicted from per-layer TFLite measurements.

    Args:
        threads: interpreter threads (as deployed).
        batch_size: examples per inference.
        repeats: timed runs per block (the smallest of seven blocks' medians is kept).
        step: channels added when measuring what one more channel costs.
        cache_dir: folder of the latency tables (default
            ``~/.cache/keras_split/latency``); one JSON file per device and setting.
        device: the table's device label (default: this machine's processor).
        calibrate: time the whole network too and scale the per-layer table to it
            (False: the per-layer sum alone).

    Raises:
        ValueError: for a bad argument.

    Example:
        >>> latency = TFLiteLatency(threads=1)
        >>> model.grow(data, budgets={latency: 1.3})   # at most 1.3 ms predicted
        >>> latency.measure_model(model)               # the whole model, measured
    """

    name = "latency_ms"

    def __init__(self, threads=1, batch_size=1, repeats=30, step=8, cache_dir=None,
                 device=None, calibrate=True):
        for arg, value in (("threads", threads), ("batch_size", batch_size),
                           ("repeats", repeats), ("step", step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer. Received: {arg}={value!r}")
        self.threads, self.batch_size, self.repeats, self.step = threads, batch_size, repeats, step
        self.calibrate = bool(calibrate)
        self.device = device or default_device()
        cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "keras_split",
                                              "latency")
        self.path = os.path.join(
            cache_dir, f"{self.device}_t{threads}_b{batch_size}.json")
        self.table = _read_table(self.path)
        #: How many configurations this object has timed (not found in the table).
        self.measurements = 0

    # ------------------------------------------------------------ CostModel
    def network_cost(self, graph):
        if self.calibrate:
            return self._whole(graph.model)
        return self.layer_sum(graph)

    def layer_sum(self, graph):
        """The sum of the network's layers timed alone (milliseconds)."""
        return float(sum(self._ms(node, *self._channels(graph, node))
                         for node in self._timed(graph)))

    def group_costs(self, graph, groups):
        return self._scale(graph) * self._added(graph, {int(g): i for i, g in enumerate(groups)},
                                                len(groups))

    def widened_cost(self, graph, groups):
        """The predicted total after splitting ``groups``: the total now plus every
        layer's per-channel costs times the channels the split adds to it."""
        return self.network_cost(graph) + self._scale(graph) * float(
            self._added(graph, {int(g): 0 for g in groups}, 1)[0])

    def _scale(self, graph):
        """The whole network's measured time over its layers' sum (1 without calibration)."""
        if not self.calibrate:
            return 1.0
        return self._whole(graph.model) / max(self.layer_sum(graph), 1e-12)

    def _whole(self, model):
        """The whole model's milliseconds, from the table or timed now."""
        shapes = [(self.batch_size, *t.shape[1:]) for t in model.inputs]
        key = "model:" + hashlib.sha1(json.dumps([model.to_json(), shapes, self.repeats])
                                      .encode()).hexdigest()
        if key not in self.table:
            self.table[key] = self._time(_convert(model, shapes), shapes)
            self.measurements += 1
            _write_table(self.path, self.table)
        return self.table[key]

    def measure_model(self, model):
        """The measured milliseconds of a whole model (converted as it is, same settings).

        Example:
            >>> latency.measure_model(model)
            0.41
        """
        shapes = [(self.batch_size, *t.shape[1:]) for t in model.inputs]
        return self._time(_convert(model, shapes), shapes)

    # ------------------------------------------------------------ the table
    def _timed(self, graph):
        for node in graph.nodes:
            handler = graph.handlers[node.layer.name]
            if (isinstance(node.layer, keras.layers.Layer) and node.inputs
                    and handler.exported_tensors(node.layer) > 0):
                yield node

    def _channels(self, graph, node):
        """``(input channels, output channels, the config key of the output channels)``
        as they are now; the last two None for a layer whose outputs follow its inputs."""
        key = getattr(graph.handlers[node.layer.name], "units_key", None)
        cout = int(node.outputs[0].shape[-1]) if key else None
        return tuple(int(t.shape[-1]) for t in node.inputs), cout, key

    def _added(self, graph, index, n_cols):
        total = np.zeros(n_cols)
        for node in self._timed(graph):
            cins, cout, key = self._channels(graph, node)
            a = np.array([cost_lib.column_counts(graph, t, index, n_cols) for t in node.inputs])
            b = cost_lib.column_counts(graph, node.outputs[0], index, n_cols)
            if not (a.any() or (cout is not None and b.any())):
                continue
            now = self._ms(node, cins, cout, key)
            # One more channel of every input (tied channels of a merge come together).
            wider_in = tuple(c + self.step for c in cins)
            per_in = max(self._ms(node, wider_in, cout, key) - now, 0.0) / self.step
            total += per_in * a.max(axis=0)
            if cout is not None:
                per_out = max(self._ms(node, cins, cout + self.step, key) - now, 0.0) / self.step
                total += per_out * b
        return total

    def _ms(self, node, cins, cout, units_key):
        """The layer's measured milliseconds with ``cins`` input and ``cout`` output
        channels (from the table, else timed now)."""
        layer = node.layer
        config = dict(layer.get_config())
        config.pop("name", None)
        if units_key is not None:
            config[units_key] = cout
        shapes = [(self.batch_size, *t.shape[1:-1], c) for t, c in zip(node.inputs, cins)]
        key = hashlib.sha1(json.dumps([type(layer).__name__, config, shapes, self.repeats],
                                      sort_keys=True, default=str).encode()).hexdigest()
        if key not in self.table:
            one = _one_layer(type(layer), config, shapes)
            self.table[key] = self._time(_convert(one, shapes), shapes)
            self.measurements += 1
            _write_table(self.path, self.table)
        return self.table[key]

    def _time(self, content, shapes):
        """Milliseconds of one invoke: the smallest of ``BLOCKS`` medians of ``repeats``
        runs each (other work on the machine only ever adds time, in bursts)."""
        interpreter = tflite_interpreter(content, num_threads=self.threads)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for detail, shape in zip(interpreter.get_input_details(), shapes):
            interpreter.set_tensor(detail["index"], rng.normal(size=shape).astype(np.float32))
        for _ in range(WARMUP):
            interpreter.invoke()
        medians = []
        for _ in range(BLOCKS):
            runs = []
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                interpreter.invoke()
                runs.append(time.perf_counter() - t0)
            medians.append(np.median(runs))
            time.sleep(PAUSE)   # blocks spread in time: a slow spell spoils fewer of them
        return float(min(medians) * 1e3)

    def __repr__(self):
        return (f"TFLiteLatency(threads={self.threads}, batch_size={self.batch_size}, "
                f"device={self.device!r})")


def tflite_interpreter(content, num_threads=None):
    """The LiteRT interpreter of a flatbuffer (TensorFlow's where LiteRT is missing).

    Example:
        >>> tflite_interpreter(open("m.tflite", "rb").read()).allocate_tensors()
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # tf.lite.Interpreter's deprecation notice
        return Interpreter(model_content=content, num_threads=num_threads)


def _one_layer(cls, config, shapes):
    """A model of one layer, rebuilt from ``config``, at the given input shapes."""
    inputs = [keras.Input(shape[1:], batch_size=shape[0]) for shape in shapes]
    layer = cls.from_config(config)
    return keras.Model(inputs, layer(inputs[0] if len(inputs) == 1 else inputs))


def _convert(model, shapes):
    """A model's float32 TFLite flatbuffer (inference mode)."""
    specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(*specs)], model)
    return converter.convert()


def _read_table(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("Latency table '%s' unreadable (%s): starting an empty one.", path, err)
        return {}


def _write_table(path, table):
    """Writes the table atomically (a temporary file moved over it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(table, f, sort_keys=True)
    os.replace(tmp, path)
