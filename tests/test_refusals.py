"""Inputs as fit takes them (float64, integer, lists), and clear refusals before any work:
string and fractional labels, bad seeds, mismatched eval_data, max_widths below a
width, empty export samples, GrowthCallback on a plain model or with NaN data, and bad
`keras-split grow` options (exit 2, nothing written)."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split.apps import cli, export
from keras_split.growing.growing_model import GrowingModel
from tests import zoo

compiled, data = zoo.compiled_cnn, zoo.cnn_data


def _unchanged(model, weights):
    """The model's weights are ``weights`` and no stage was recorded."""
    assert model.growth_history == []
    for a, b in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float64_integer_and_list_inputs_grow_as_fit_takes_them():
    model = compiled()
    x, y = data(32)
    rng = np.random.default_rng(0)
    eig = model.splitting_eigenpairs((rng.random((32, 12, 12, 3)), y), method="lobpcg",
                                     eigen_epochs=1)   # float64, as np.random.rand makes
    assert all(np.isfinite(e.values).all() for e in eig.values())
    images = rng.integers(0, 255, (32, 12, 12, 3)).astype("uint8")
    stage = model.grow(images / 255.0, y, method="exact", batch_size=16, dry_run=True)
    assert stage.dry_run
    stage = model.grow(images, y, method="exact", batch_size=16, dry_run=True)   # integers
    assert stage.macs_after >= stage.macs_before
    dataset = tf.data.Dataset.from_tensor_slices((x.astype("float64"), y)).batch(16)
    assert model.grow(dataset, method="exact", dry_run=True).dry_run
    stage = model.grow(x.tolist(), y.tolist(), method="exact")   # lists of lists
    assert len(model.growth_history) == 1 and stage.macs_after >= stage.macs_before


def test_ragged_lists_and_string_labels_are_refused_naming_the_argument():
    model = compiled()
    x, y = data(16)
    weights = model.get_weights()
    ragged = [[1.0, 2.0], [3.0]]
    with pytest.raises(ValueError, match=r"x must be an array .* ragged .*Received: x=a list"):
        model.grow(ragged, y[:2], method="exact")
    with pytest.raises(ValueError, match=r"y must hold numbers .*StringLookup.*Received: y "
                                         r"of dtype <U\d+ \(first value '\d'\)"):
        model.grow(x, y.astype(str), method="exact")
    strings = tf.data.Dataset.from_tensor_slices((x, y.astype(str))).batch(8)
    with pytest.raises(ValueError, match=r"y must hold numbers.*Received: y of dtype string"):
        model.grow(strings, method="exact")
    _unchanged(model, weights)


def test_fractional_float_labels_are_refused_whole_ones_taken():
    model = compiled()
    x, y = data(16)
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"y holds class indices .* not whole numbers.*"
                                         r"Received: y with value \d\.5"):
        model.grow(x, y + 0.5, method="exact")
    batches = tf.data.Dataset.from_tensor_slices((x, y + 0.25)).batch(8)
    with pytest.raises(ValueError, match=r"y holds class indices.*Received: y with value"):
        model.grow(batches, method="exact")
    _unchanged(model, weights)
    assert model.grow(x, y.astype("float64"), method="exact", dry_run=True).dry_run   # 3.0


@pytest.mark.parametrize("seed", ["x", -1, 1.5, True])
def test_bad_seed_is_named(seed):
    model = compiled()
    x, y = data(16)
    with pytest.raises(ValueError, match=f"seed must be .*Received: seed={seed!r}"):
        model.grow(x, y, seed=seed)
    with pytest.raises(ValueError, match="Received: seed="):
        model.splitting_eigenpairs((x, y), method="exact", seed=seed)


def test_eval_data_of_different_lengths_is_refused_for_every_method():
    model = compiled()
    x, y = data(16)
    for method in ("exact", "lobpcg"):
        with pytest.raises(ValueError, match=r"eval_data's arrays must have the same length.*"
                                             r"Received: eval_data with lengths \[10, 5\]"):
            model.splitting_eigenpairs((x, y), method=method, eval_data=(x[:10], y[:5]))
    with pytest.raises(ValueError, match=r"Received: eval_data with lengths \[10, 5\]"):
        model.grow(x, y, method="exact", eval_data=(x[:10], y[:5]))


def test_max_widths_below_a_width_is_refused_before_estimation(monkeypatch):
    model = compiled()
    x, y = data(16)
    weights = model.get_weights()
    calls = []
    monkeypatch.setattr(GrowingModel, "splitting_eigenpairs",
                        lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"max_widths of layer 'fc' \(4\) is below its current "
                                         r"width of 8 units.*Received: max_widths=\{'fc': 4\}"):
        model.grow(x, y, method="exact", max_widths={"fc": 4})
    assert calls == []
    _unchanged(model, weights)


def test_empty_export_samples_are_named(tmp_path):
    model = compiled()
    x, _ = data(4)
    for empty in (x[:0], [], (x[:0], np.zeros(0))):
        with pytest.raises(ValueError, match=r"sample_data must hold at least one input.*"
                                             r"Received: sample_data with 0 examples"):
            export.saved_model(model, tmp_path / "m", sample_data=empty)
    with pytest.raises(ValueError, match="Received: representative_data with 0 examples"):
        export.tflite(model, tmp_path / "m.tflite", representative_data=x[:0])
    assert list(tmp_path.iterdir()) == []


def _fit_with_callback(model, callback_data):
    x, y = data(32)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=16, verbose=0,
              callbacks=[ks.GrowthCallback(callback_data, every_n_epochs=1,
                                           method="exact")])


def test_growth_callback_refuses_a_plain_model_before_training():
    plain = zoo.small_cnn()
    x, y = data(32)
    with pytest.raises(TypeError, match=r"GrowingModel.*ks\.GrowingModel\(model\).*"
                                        r"Received: model=Functional 'small_cnn'"):
        _fit_with_callback(plain, (x, y))
    assert int(plain.optimizer.iterations) == 0


@pytest.mark.parametrize("bad", ["nan", "inf", "shape", "string"])
def test_growth_callback_checks_its_data_before_training(bad):
    model = compiled()
    x, y = data(32)
    weights = model.get_weights()
    if bad in ("nan", "inf"):
        x = x.copy()
        x[3, 0, 0, 0] = float(bad)
        match = r"data holds NaN or infinite values in x.*Received: data with non-finite x"
    elif bad == "shape":
        x, match = x[:, :10, :10], r"The inputs have shape \(32, 10, 10, 3\)"
    else:
        y, match = y.astype(str), r"y must hold numbers"
    with pytest.raises(ValueError, match=match):
        _fit_with_callback(model, (x, y))
    assert int(model.optimizer.iterations) == 0
    _unchanged(model, weights)


GROW = ["grow", "--model", "mobilenet_v1_cifar", "--width", "8", "--stages", "1",
        "--epochs-per-stage", "1", "--batch-size", "16", "--eigen-batches", "2",
        "--verbose", "0"]


@pytest.mark.parametrize("option, value, message", [
    ("--growth-ratio", "-1", "--growth-ratio: growth_ratio must be a finite number in "
                             "(0, 100.0]. Received: growth_ratio=-1.0"),
    ("--growth-ratio", "nan", "Received: growth_ratio=nan"),
    ("--stages", "0", "--stages must be at least 1"),
    ("--seed", "-3", "--seed: seed must be a non-negative integer. Received: seed=-3"),
    ("--batch-size", "0", "Received: --batch-size 0"),
    ("--eigen-batches", "-1", "Received: --eigen-batches -1"),
    ("--learning-rate", "0", "Received: --learning-rate 0.0"),
    ("--epochs-per-stage", "-2", "Received: --epochs-per-stage -2"),
])
def test_cli_grow_refuses_bad_settings_before_any_file(tmp_path, capsys, option, value,
                                                       message):
    zoo.write_tiny_cifar(tmp_path / "cifar")   # real data: without the check, it trains
    out = tmp_path / "run"
    args = [a for a in GROW]
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    start = time.perf_counter()
    assert cli.main(args + ["--data", str(tmp_path / "cifar"), "--out", str(out)]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["cifar"]


def test_cli_grow_corrected_rerun_into_the_same_directory(tmp_path, capsys):
    zoo.write_tiny_cifar(tmp_path / "cifar")
    args = GROW + ["--data", str(tmp_path / "cifar"), "--out", str(tmp_path / "run")]
    assert cli.main(args + ["--growth-ratio", "-1"]) == 2
    assert not (tmp_path / "run").exists()
    capsys.readouterr()
    assert cli.main(args + ["--growth-ratio", "0.5"]) == 0
    assert (tmp_path / "run" / "stage_1" / "model.keras").exists()
