"""SavedModel and TFLite exports of a grown model, with parity figures."""

import collections
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split import models
from keras_split.apps import export
from keras_split.apps.demo import load_digits


@pytest.fixture(scope="module")
def grown():
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = load_digits()
    model = ks.GrowingModel(models.mobilenet_v2_cifar(width=8, input_shape=(8, 8, 1)))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    model.grow((x, y), growth_ratio=0.5, eigen_epochs=1)
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    return model, (x_test, y_test)


def _op_counts(path):
    fn = tf.saved_model.load(path).signatures["serving_default"]
    return collections.Counter(op.type for op in fn.graph.get_operations())


def test_saved_model_equals_the_architecture_built_from_its_widths(grown, tmp_path):
    model, (x_test, _) = grown
    result = export.saved_model(model, str(tmp_path / "grown"), sample_data=[x_test])
    assert result.relative_max_diff <= 1e-4 and result.top1_agreement == 1.0
    assert result.size_bytes > 0 and result.n_samples == 64
    fresh = models.mobilenet_v2_cifar(channels=models.channels_of(model), input_shape=(8, 8, 1))
    fresh.set_weights(model.get_weights())
    export.saved_model(fresh, str(tmp_path / "fresh"))
    assert _op_counts(str(tmp_path / "grown")) == _op_counts(str(tmp_path / "fresh"))
    loaded = tf.saved_model.load(str(tmp_path / "grown"))
    names = sorted(v.name for v in loaded.variables)
    assert not any("split" in n for n in names)
    assert len(loaded.variables) == len(fresh.weights)
    with pytest.raises(ValueError, match="already exists"):
        export.saved_model(model, str(tmp_path / "grown"))


@pytest.mark.parametrize("quantization, check", [
    (None, lambda r: r.relative_max_diff <= 1e-4),
    ("float16", lambda r: r.relative_max_diff <= 2e-2 and r.top1_agreement >= 0.98),
    ("int8", lambda r: r.top1_agreement >= 0.9),
])
def test_tflite_round_trips(grown, tmp_path, quantization, check):
    model, (x_test, _) = grown
    data = tf.data.Dataset.from_tensor_slices(x_test).batch(64)
    result = export.tflite(model, str(tmp_path / "m.tflite"), quantization=quantization,
                           representative_data=data, sample_data=[x_test[:200]])
    assert result.n_samples == 64 and result.size_bytes == (tmp_path / "m.tflite").stat().st_size
    assert check(result), result
    assert result.parity_inputs == "64 inputs from the given data"
    if quantization is None:
        assert result.quantized_fraction == 0.0 and result.weight_dtypes["FLOAT32"] > 10_000
    if quantization == "float16":
        assert result.weight_dtypes["FLOAT16"] > 10_000 and result.quantized_fraction > 0.9
    if quantization == "int8":
        assert result.weight_dtypes.get("FLOAT32", 0) == 0 and result.quantized_fraction == 1.0
        float_size = export.tflite(model, str(tmp_path / "f.tflite")).size_bytes
        assert result.size_bytes < float_size


def test_dynamic_quantization_says_what_it_quantized(tmp_path):
    # Every weight tensor of a narrow model (32 x 16 and 16 x 10 kernels) has < 1024
    # elements: TFLite's dynamic-range quantization keeps them all in float32. Refused,
    # nothing written.
    x = keras.Input((32,))
    narrow = keras.Model(x, keras.layers.Dense(10)(keras.layers.Dense(16, activation="relu")(x)))
    with pytest.raises(ValueError, match="stored no weight in a smaller type"):
        export.tflite(narrow, str(tmp_path / "d.tflite"), quantization="dynamic",
                      sample_data=np.random.default_rng(0).normal(size=(8, 32)))
    assert not list(tmp_path.iterdir())
    x = keras.Input((64,))
    wide = keras.Model(x, keras.layers.Dense(10)(keras.layers.Dense(128, activation="relu")(x)))
    result = export.tflite(wide, str(tmp_path / "w.tflite"), quantization="dynamic",
                           sample_data=np.random.default_rng(0).normal(size=(32, 64)))
    # The 64 x 128 kernel (8 192 elements) is int8; the 1 280-element kernel is too.
    assert result.weight_dtypes["INT8"] == 64 * 128 + 128 * 10
    assert result.quantized_fraction == 1.0
    assert result.size_bytes < export.tflite(wide, str(tmp_path / "f.tflite")).size_bytes / 2
    assert result.parity_inputs == "32 inputs from the given data"
    assert result.top1_agreement >= 0.9


def test_exports_take_numpy_inputs_and_write_nothing_on_failure(grown, tmp_path, monkeypatch):
    model, (x_test, y_test) = grown
    path = str(tmp_path / "m.tflite")
    # A plain array (the crash of issue 10: the file was written, then a shape error).
    result = export.tflite(model, path, sample_data=x_test[:40])
    assert result.n_samples == 40 and result.relative_max_diff <= 1e-4
    result = export.saved_model(model, str(tmp_path / "sm"), sample_data=(x_test, y_test))
    assert result.n_samples == 64 and result.top1_agreement == 1.0
    # Inputs of the wrong shape: the error names the expected one, and nothing is written.
    with pytest.raises(ValueError, match=r"expects inputs of shape \(8, 8, 1\)"):
        export.tflite(model, str(tmp_path / "bad.tflite"), sample_data=np.zeros((4, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"expects inputs of shape \(8, 8, 1\)"):
        export.saved_model(model, str(tmp_path / "bad_sm"), sample_data=np.zeros((4, 9, 9, 1)))
    # A failure after the conversion (here in the parity run) leaves no file either.
    monkeypatch.setattr(export, "run_tflite", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export.tflite(model, str(tmp_path / "late.tflite"), sample_data=x_test)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "sm"]
    monkeypatch.undo()
    # ... so that the same call succeeds when retried.
    assert export.tflite(model, str(tmp_path / "late.tflite"), sample_data=x_test).n_samples == 64
    # Without data, the parity figures say they come from random inputs.
    assert "random" in export.tflite(model, str(tmp_path / "r.tflite")).parity_inputs


def test_strip_needs_no_keras_split(grown, tmp_path):
    model, (x_test, _) = grown
    plain = model.strip()
    assert not isinstance(plain, ks.GrowingModel)
    assert plain.get_config()["layers"] == model.network.get_config()["layers"]
    assert ks.count_flops(plain) == ks.count_flops(model)
    path = tmp_path / "plain.keras"
    plain.save(path)
    with zipfile.ZipFile(path) as z:
        assert "keras_split" not in json.dumps(json.loads(z.read("config.json")))
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x_test[:16], verbose=0),
                               model.predict(x_test[:16], verbose=0), atol=1e-5)
    # Its own variables: changing them leaves the model alone.
    kernel = plain.weights[0]
    kernel.assign(keras.ops.zeros_like(kernel))
    assert np.any(keras.ops.convert_to_numpy(model.network.weights[0]) != 0)


def _sequence_model():
    """Token ids -> Embedding -> Conv1D -> GRU -> Bidirectional(LSTM) -> Dense, with dropout."""
    x = keras.Input((10,), dtype="int32")
    h = keras.layers.Embedding(20, 6)(x)
    h = keras.layers.Conv1D(6, 3, activation="relu", name="conv_1d")(h)
    h = keras.layers.GRU(5, return_sequences=True)(h)
    h = keras.layers.Bidirectional(keras.layers.LSTM(3))(h)
    h = keras.layers.Dropout(0.2)(keras.layers.Dense(6, activation="relu", name="hidden")(h))
    return keras.Model(x, keras.layers.Dense(3)(h))


def _augmented_image_model():
    """RandomFlip and RandomRotation in front of a Conv2D, Conv2DTranspose decoder."""
    x = keras.Input((8, 8, 3))
    h = keras.layers.RandomRotation(0.1)(keras.layers.RandomFlip("horizontal")(x))
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv_2d")(h)
    h = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(5, 3, name="head")(h))
    return keras.Model(x, keras.layers.Dense(3)(h))


@pytest.mark.parametrize("build, make_x", [
    (_sequence_model, lambda rng: rng.integers(0, 20, size=(24, 10))),
    (_augmented_image_model, lambda rng: rng.normal(size=(24, 8, 8, 3)).astype("float32")),
])
def test_exports_of_token_recurrent_and_augmented_models(build, make_x, tmp_path):
    """Token ids reach the exports as integers, recurrent layers are unrolled for TFLite,
    the augmentation layers (random ops) are left out of it, and the grown model's
    exports agree with Keras."""
    rng = np.random.default_rng(0)
    model = ks.GrowingModel(build())
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = make_x(rng), rng.integers(0, 3, size=24)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.split({"hidden" if build is _sequence_model else "head": [0, 2]}, epsilon=0.0)
    result = export.tflite(model, str(tmp_path / "m.tflite"), sample_data=x)
    assert result.n_samples == 24 and result.top1_agreement == 1.0
    assert result.max_abs_diff < 1e-5
    saved = export.saved_model(model, str(tmp_path / "sm"), sample_data=x)
    assert saved.n_samples == 24 and saved.max_abs_diff < 1e-5
    if build is _sequence_model:
        random = export.tflite(model, str(tmp_path / "random.tflite"))
        assert "0 and 1" in random.parity_inputs and random.max_abs_diff < 1e-5
        random = export.saved_model(model, str(tmp_path / "random_sm"))
        assert "0 and 1" in random.parity_inputs and random.max_abs_diff < 1e-5


def test_bad_export_arguments(grown, tmp_path):
    model, _ = grown
    with pytest.raises(ValueError, match="quantization"):
        export.tflite(model, str(tmp_path / "a.tflite"), quantization="int4")
    with pytest.raises(ValueError, match="representative_data"):
        export.tflite(model, str(tmp_path / "a.tflite"), quantization="int8")


@pytest.mark.slow
def test_int8_agrees_with_float_on_real_cifar10(tmp_path, real_cifar10):
    """A trained CIFAR-10 MobileNet (ReLU6): int8 TFLite top-1 agrees with Keras on >= 98 %.

    Measured: 98.4 % (width 32, grown once, 10 epochs with a cosine decay, 67 % test
    accuracy). Narrower or less trained models agree less (width 16, 61 %: 97.8 %):
    the disagreements are near-ties of the float logits (median top-2 margin 0.04
    against 1.3 overall), and int8 weights of narrow layers are the main error (int16
    activations help little). See the README.
    """
    from keras_split import data

    root = real_cifar10
    keras.utils.set_random_seed(0)
    model = ks.GrowingModel(models.mobilenet_v1_cifar(blocks=3, width=32, activation="relu6"))
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 10 * (50_000 // 128 + 1), alpha=0.01)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    # A fixed element order: with the parallel pipeline's free order the run varies, and
    # the agreement with it (0.975-0.984 measured) straddles the threshold.
    train = data.cifar_dataset(root, "train", batch_size=128, validate=False, seed=0,
                               deterministic=True)
    model.fit(train, epochs=5, verbose=0)
    model.grow(train.take(20), growth_ratio=0.5, eigen_epochs=3)
    model.fit(train, epochs=5, verbose=0)
    _, accuracy = model.evaluate(data.cifar_dataset(root, "test", batch_size=500,
                                                    validate=False), verbose=0)
    assert accuracy > 0.6, accuracy  # a trained model, not a random one
    test = data.cifar_dataset(root, "test", batch_size=500, validate=False)
    x_test = np.concatenate([x.numpy() for x, _ in test])
    result = export.tflite(model, str(tmp_path / "int8.tflite"), quantization="int8",
                           representative_data=train.take(20))
    x, reference = x_test, model.predict(x_test, batch_size=500, verbose=0)
    with open(tmp_path / "int8.tflite", "rb") as f:
        got = export.run_tflite(f.read(), x)
    agreement = float(np.mean(np.argmax(got, -1) == np.argmax(reference, -1)))
    assert result.quantization == "int8"
    assert agreement >= 0.98, (agreement, accuracy)
