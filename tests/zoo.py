"""The tests' shared helpers: small models of every supported topology, their data,
compiled GrowingModels, eigenpair comparisons, a tiny CIFAR-10 folder, and jobs in a
subprocess with the comparison of their run directories."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

import keras_split as ks

L = keras.layers


def mlp(act="tanh"):
    x = keras.Input((6,), name="x")
    h = L.Dense(5, activation=act, name="d1")(x)
    h = L.Dense(4, name="d2")(h)
    h = L.Activation("swish", name="a2")(h)
    return keras.Model(x, L.Dense(3, name="out")(h), name="mlp")


def cnn_bn_swish(synchronized=False):
    x = keras.Input((9, 9, 3), name="x")
    h = L.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="c1")(x)
    h = L.BatchNormalization(synchronized=synchronized, name="bn1")(h)
    h = L.Activation("swish", name="a1")(h)
    h = L.Conv2D(5, 3, dilation_rate=2, padding="same", name="c2")(h)
    h = L.BatchNormalization(synchronized=synchronized, name="bn2")(h)
    h = L.Activation("swish", name="a2")(h)
    h = L.Conv2D(3, 2, padding="valid", activation="tanh", name="c3")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="cnn")


def separable_block(act="swish"):
    x = keras.Input((8, 8, 3), name="x")
    h = L.Conv2D(4, 1, name="expand")(x)
    h = L.BatchNormalization(name="bn_e")(h)
    h = L.Activation(act, name="act_e")(h)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="bn_dw")(h)
    h = L.Activation(act, name="act_dw")(h)
    h = L.Conv2D(5, 1, name="pw")(h)
    h = L.BatchNormalization(name="bn_pw")(h)
    h = L.Activation(act, name="act_pw")(h)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", name="dw2")(h)
    h = L.Activation(act, name="act_dw2")(h)
    h = L.Conv2D(3, 1, activation=act, name="pw2")(h)
    h = L.ZeroPadding2D(1, name="pad")(h)
    h = L.MaxPooling2D(2, name="pool")(h)
    h = L.Dropout(0.2, name="drop")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="separable")


def flatten_dense():
    x = keras.Input((6, 6, 2), name="x")
    h = L.Conv2D(3, 3, activation="tanh", name="c1")(x)
    h = L.AveragePooling2D(2, name="pool")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(4, activation="swish", name="d1")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="flatten")


def residual(act="swish"):
    x = keras.Input((6, 6, 3), name="x")
    a = L.Conv2D(4, 3, padding="same", name="stem")(x)
    a = L.BatchNormalization(name="bn_stem")(a)
    a = L.Activation(act, name="act_stem")(a)
    b = L.Conv2D(4, 3, padding="same", name="res_conv")(a)
    b = L.BatchNormalization(name="bn_res")(b)
    b = L.Activation(act, name="act_res")(b)
    s = L.Add(name="add")([a, b])
    c = L.Conv2D(3, 1, activation=act, name="head")(s)
    c = L.GlobalAveragePooling2D(name="gap")(c)
    return keras.Model(x, L.Dense(2, name="out")(c), name="residual")


def concatenate():
    x = keras.Input((5, 5, 2), name="x")
    a = L.Conv2D(3, 3, padding="same", activation="tanh", name="ca")(x)
    b = L.Conv2D(2, 1, activation="swish", name="cb")(x)
    c = L.Concatenate(name="cat")([a, b])
    d = L.Conv2D(5, 1, activation="tanh", name="cd")(x)
    s = L.Add(name="add")([c, d])
    h = L.Conv2D(3, 3, activation="swish", name="ce")(s)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="concat")


def conv1d_block(act="swish"):
    """The 1-D producers of keyword-spotting and sensor models: causal and dilated Conv1D,
    DepthwiseConv1D, SeparableConv1D, with BatchNorm and 1-D pooling."""
    x = keras.Input((12, 3), name="x")
    h = L.Conv1D(4, 3, padding="causal", dilation_rate=2, use_bias=False, name="c1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation(act, name="a1")(h)
    h = L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name="dw")(h)
    h = L.Activation(act, name="a_dw")(h)
    h = L.SeparableConv1D(5, 3, strides=2, padding="same", name="sep1")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.Activation(act, name="a2")(h)
    h = L.MaxPooling1D(2, name="pool")(h)
    h = L.Conv1D(3, 2, activation="tanh", name="c3")(h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="conv1d")


def separable_conv(act="swish"):
    """SeparableConv2D producers (Xception's and NASNet's layer) after a Conv2D."""
    x = keras.Input((8, 8, 3), name="x")
    h = L.Conv2D(4, 3, padding="same", name="stem")(x)
    h = L.BatchNormalization(name="bn_stem")(h)
    h = L.Activation(act, name="a_stem")(h)
    h = L.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", use_bias=False,
                          name="sep1")(h)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation(act, name="a1")(h)
    h = L.SeparableConv2D(3, 3, strides=2, activation="tanh", name="sep2")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="separable_conv")


TOPOLOGIES = {
    "mlp": mlp,
    "cnn_bn_swish": cnn_bn_swish,
    "separable": separable_block,
    "flatten_dense": flatten_dense,
    "residual": residual,
    "concatenate": concatenate,
    "conv1d": conv1d_block,
    "separable_conv": separable_conv,
}


def randomize_batchnorm(model, rng):
    """Non-trivial BatchNorm statistics, so that the frozen scale matters."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, n))


def data_for(model, n=32, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    x = rng.normal(size=shape).astype(keras.config.floatx())
    y = rng.normal(size=(n,) + tuple(model.outputs[0].shape[1:])).astype(keras.config.floatx())
    return x, y


def compiled_topology(topology, surrogate=None, rng=None):
    """A zoo model with random BatchNorm statistics, as a GrowingModel compiled with mse."""
    base = TOPOLOGIES[topology]()
    randomize_batchnorm(base, rng or np.random.default_rng(3))
    model = ks.GrowingModel(base, surrogate=surrogate)
    model.compile(optimizer="sgd", loss="mse")
    return model


def estimate_and_exact(topology, n, batch_size, **kwargs):
    """A zoo model's exact eigenpairs and another method's (``kwargs``), on the same data."""
    model = compiled_topology(topology, surrogate="softplus")
    x, y = data_for(model.network, n=n)
    exact = model.splitting_eigenpairs((x, y), method="exact", batch_size=batch_size)
    estimate = model.splitting_eigenpairs((x, y), batch_size=batch_size, **kwargs)
    assert set(estimate) == set(exact) == set(model.splittable_layers)
    return estimate, exact


def assert_matches_exact(estimate, exact, rtol, min_cos, norm_rtol, residual_rtol=None):
    """Every neuron with ``|lambda| >= 1 %`` of the largest: eigenvalue within ``rtol``,
    vector within ``min_cos`` (and residual within ``residual_rtol * |lambda|``)."""
    top = max(np.abs(e.values).max() for e in exact.values())
    checked = 0
    for name, e in exact.items():
        f = estimate[name]
        assert f.vectors.shape == e.vectors.shape
        np.testing.assert_allclose(np.linalg.norm(f.vectors, axis=1), 1.0, rtol=norm_rtol)
        for k in np.flatnonzero(np.abs(e.values) >= 0.01 * top):
            assert abs(f.values[k] - e.values[k]) <= rtol * abs(e.values[k]), (
                name, k, f.values[k], e.values[k])
            assert abs(f.vectors[k] @ e.vectors[k]) >= min_cos, (name, k)
            if residual_rtol is not None:
                assert f.residuals[k] <= residual_rtol * abs(e.values[k]), (name, k)
            checked += 1
    assert checked >= 5


def small_cnn():
    """Layers with very different per-neuron costs: a full-resolution conv, a pooled one, a dense."""
    x = keras.Input((12, 12, 3), name="x")
    h = L.Conv2D(6, 3, padding="same", use_bias=False, name="wide")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation("swish", name="a1")(h)
    h = L.MaxPooling2D(4, name="pool")(h)
    h = L.Conv2D(6, 1, activation="swish", name="narrow")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(8, activation="tanh", name="fc")(h)
    return keras.Model(x, L.Dense(3, name="logits")(h), name="small_cnn")


def cnn_data(n=96, seed=0):
    """Three classes that depend on the mean colour of ``small_cnn``'s images."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 12, 3)).astype("float32")
    w = rng.normal(size=(3, 3))
    y = np.argmax(x.mean(axis=(1, 2)) @ w + 0.1 * rng.normal(size=(n, 3)), axis=1)
    return x, y


def compiled_cnn(model=None):
    """``small_cnn`` (or ``model``) as a GrowingModel, compiled with SGD and cross-entropy."""
    m = ks.GrowingModel(model or small_cnn())
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return m


def write_tiny_cifar(root, train_per_class=4, test_per_class=2, seed=0):
    """A CIFAR-10 folder layout of random 32x32 JPEGs under ``root``; returns its path."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                (folder / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return root


# ------------------------------------------------------------------ run directories
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The wall-clock fields of a run's records (growth stages' ``seconds``): the only
# entries two identical runs may differ in.
TIMING_FIELDS = ("seconds",)


def job_env(kill=None):
    """The environment of a job in a subprocess: the repository importable, and
    ``RESUME_JOB_KILL=kill`` when given (see ``tests/resume_job.py``)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RESUME_JOB_KILL", None)
    if kill:
        env["RESUME_JOB_KILL"] = kill
    return env


def job(args, kill=None, timeout=600):
    """Runs ``python -m ARGS`` from the repository root (``kill``: see :func:`job_env`);
    returns the ``CompletedProcess`` with its text output."""
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT,
                          env=job_env(kill), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def completed_stage(out_dir):
    """The last complete stage in ``out_dir/run.json`` (-1 without one)."""
    try:
        with open(os.path.join(out_dir, "run.json")) as f:
            return json.load(f)["completed"]
    except (OSError, ValueError, KeyError):
        return -1


def without_timing(records):
    """``records`` (dicts, lists) without the :data:`TIMING_FIELDS` of any dict."""
    if isinstance(records, dict):
        return {k: without_timing(v) for k, v in records.items() if k not in TIMING_FIELDS}
    if isinstance(records, list):
        return [without_timing(r) for r in records]
    return records


def _json(path):
    with open(path) as f:
        return json.load(f)


def assert_same_stage(a, b):
    """Stage directories ``a`` and ``b`` hold the same model: architecture, weights,
    optimizer state (every slot and the step), growth records and training state."""
    model_a, model_b = (keras.saving.load_model(os.path.join(d, "model.keras")) for d in (a, b))
    assert model_a.network.get_config() == model_b.network.get_config()
    for name, (va, vb) in (("weights", (model_a.weights, model_b.weights)),
                           ("optimizer", (model_a.optimizer.variables,
                                          model_b.optimizer.variables))):
        # Names, not paths: an optimizer's path holds its process-dependent name.
        assert [v.name for v in va] == [v.name for v in vb], name
        for x, y in zip(va, vb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=x.path)
    assert (without_timing([s.to_dict() for s in model_a.growth_history])
            == without_timing([s.to_dict() for s in model_b.growth_history]))
    assert without_timing(_json(os.path.join(a, "history.json"))) == without_timing(
        _json(os.path.join(b, "history.json")))
    states = [os.path.join(d, "training_state.npz") for d in (a, b)]
    assert os.path.exists(states[0]) == os.path.exists(states[1])
    if os.path.exists(states[0]):
        with np.load(states[0]) as sa, np.load(states[1]) as sb:
            assert sorted(sa.files) == sorted(sb.files)
            for key in sa.files:
                np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def assert_same_runs(a, b, stages):
    """Run directories ``a`` and ``b`` are bit-identical but for timing: every stage
    (:func:`assert_same_stage`), ``run.json`` and ``results.json``; ``b`` holds no
    leftover ``*.tmp``."""
    for stage in range(stages + 1):
        assert_same_stage(os.path.join(a, f"stage_{stage}"), os.path.join(b, f"stage_{stage}"))
    for name in ("run.json", "results.json"):
        assert _json(os.path.join(a, name)) == _json(os.path.join(b, name)), name
    leftovers = [os.path.join(root, n) for root, dirs, files in os.walk(b)
                 for n in dirs + files if n.endswith(".tmp")]
    assert not leftovers, leftovers


def grouped_conv(act="swish"):
    """Grouped Conv2D producers (groups=2) and a depthwise-like Conv2D(groups=C)."""
    x = keras.Input((7, 7, 3), name="x")
    h = L.Conv2D(4, 3, padding="same", name="stem")(x)
    h = L.BatchNormalization(name="bn_stem")(h)
    h = L.Activation(act, name="a_stem")(h)
    h = L.Conv2D(6, 3, groups=2, padding="same", name="grouped")(h)
    h = L.BatchNormalization(name="bn_g")(h)
    h = L.Activation(act, name="a_g")(h)
    h = L.Conv2D(12, 3, groups=6, padding="same", name="dwlike")(h)
    h = L.Activation(act, name="a_dw")(h)
    h = L.Conv2D(4, 1, groups=2, activation="tanh", name="grouped_pw")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="grouped")


TOPOLOGIES["grouped_conv"] = grouped_conv

