"""Inputs as fit takes them (float64, integer, lists), and clear refusals before any work:
string and fractional labels, bad seeds, mismatched eval_data, max_widths below a
width, empty export samples, GrowthCallback on a plain model or with NaN data, bad
`keras-split grow` and `demo` options (exit 2, nothing written), a log_dir or export
folder that cannot be written, one-example growth, non-finite int8 calibration; and
exported files with the mode of every other output."""

import os
import re
import stat
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split.apps import cli, conversion, export
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


def _fit_with_callback(model, callback_data, **grow_kwargs):
    x, y = data(32)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=16, verbose=0,
              callbacks=[ks.GrowthCallback(callback_data, every_n_epochs=1,
                                           method="exact", **grow_kwargs)])


def test_growth_callback_refuses_a_plain_model_before_training():
    plain = zoo.small_cnn()
    x, y = data(32)
    with pytest.raises(TypeError, match=r"GrowingModel.*ks\.GrowingModel\(model\).*"
                                        r"Received: model=Functional 'small_cnn'"):
        _fit_with_callback(plain, (x, y))
    assert int(plain.optimizer.iterations) == 0


@pytest.mark.parametrize("bad", ["nan", "inf", "shape", "string", "one", "log_dir"])
def test_growth_callback_checks_its_data_before_training(bad, tmp_path):
    model = compiled()
    x, y = data(32)
    weights = model.get_weights()
    if bad in ("nan", "inf"):
        x = x.copy()
        x[3, 0, 0, 0] = float(bad)
        match = r"data holds NaN or infinite values in x.*Received: data with non-finite x"
    elif bad == "shape":
        x, match = x[:, :10, :10], r"The inputs have shape \(32, 10, 10, 3\)"
    elif bad == "string":
        y, match = y.astype(str), r"y must hold numbers"
    elif bad == "one":
        x, y, match = x[:1], y[:1], r"data must hold at least 2 .*Received: data with 1 example"
    else:
        (tmp_path / "file").write_text("")
        match = r"log_dir cannot be created .*Received: log_dir='.*file/tb'"
    with pytest.raises(ValueError, match=match):
        _fit_with_callback(model, (x, y), **(
            {"log_dir": tmp_path / "file" / "tb"} if bad == "log_dir" else {}))
    assert int(model.optimizer.iterations) == 0
    _unchanged(model, weights)


def _refused_fast(capsys, args, message):
    """``keras-split ARGS`` exits 2 within 5 s with ``message`` in one line on stderr;
    returns what it wrote."""
    start = time.perf_counter()
    assert cli.main(args) == 2
    assert time.perf_counter() - start < 5
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1, captured.err
    return captured


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
    ("--budget", "params", "--budget takes NAME=LIMIT (say params=20000). "
                           "Received: --budget params"),
    ("--budget", "joules=5", "--budget: cost must be one of"),
    ("--budget", "params=-5", "--budget: The limit of budget 'params' must be a finite "
                              "positive number. Received: -5.0"),
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
    _refused_fast(capsys, args + ["--data", str(tmp_path / "cifar"), "--out", str(out)],
                  message)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["cifar"]


def test_cli_grow_corrected_rerun_into_the_same_directory(tmp_path, capsys):
    zoo.write_tiny_cifar(tmp_path / "cifar")
    args = GROW + ["--data", str(tmp_path / "cifar"), "--out", str(tmp_path / "run")]
    assert cli.main(args + ["--growth-ratio", "-1"]) == 2
    assert not (tmp_path / "run").exists()
    capsys.readouterr()
    assert cli.main(args + ["--growth-ratio", "0.5"]) == 0
    assert (tmp_path / "run" / "stage_1" / "model.keras").exists()


DEMO = ["demo", "--epochs-per-stage", "1", "--seeds", "1", "--no-baselines"]


@pytest.mark.parametrize("option, value, message", [
    ("--stages", "0", "--stages must be at least 1 (growth needs a stage to grow in; "
                      "`retrain` trains a fixed architecture). Received: --stages 0"),
    ("--seeds", "0", "Received: --seeds 0"),
    ("--grow-every", "0", "Received: --grow-every 0"),
    ("--target-width", "-1", "Received: --target-width -1"),
    ("--growth-ratio", "-1", "--growth-ratio: growth_ratio must be a finite number"),
    ("--seed", "-3", "Received: seed=-3"),
    ("--curve", "6,six", "--curve must be comma-separated integers such as -6,6. "
                         "Received: --curve 6,six"),
])
def test_cli_demo_refuses_bad_settings_before_any_work(tmp_path, capsys, option, value,
                                                       message):
    out = tmp_path / "demo"
    captured = _refused_fast(capsys, DEMO + ["--out", str(out), option, value], message)
    assert captured.out == "" and not out.exists()


def _refused_before_estimation(monkeypatch, model, call, match, error=ValueError):
    """``call(model)`` raises ``error`` matching ``match`` before any eigen estimation,
    and leaves ``model`` unchanged."""
    weights = model.get_weights()
    calls = []
    monkeypatch.setattr(GrowingModel, "splitting_eigenpairs", lambda *a, **k: calls.append(1))
    with pytest.raises(error, match=match):
        call(model)
    assert calls == []
    _unchanged(model, weights)
    monkeypatch.undo()


def _read_only(monkeypatch, folder):
    """``folder``, made read-only; for root, whom the mode does not stop, ``os.access``
    reports it so."""
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: (
            False if os.fspath(path) == str(folder) else access(path, mode, **kwargs)))
    return folder


def test_log_dir_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    model = compiled()
    x, y = data(16)
    (tmp_path / "file").write_text("")
    for log_dir, match in (
            (tmp_path / "file" / "tb", r"log_dir cannot be created \(.*not a directory\)"),
            (tmp_path / "file", r"log_dir cannot be created"),
            (str(tmp_path / "file" / "a" / "b"), r"log_dir cannot be created")):
        _refused_before_estimation(
            monkeypatch, model, lambda m: m.grow(x, y, method="exact", log_dir=log_dir),
            rf"{match}.*Received: log_dir='{re.escape(str(tmp_path / 'file'))}")
    _refused_before_estimation(
        monkeypatch, model, lambda m: m.grow(x, y, method="exact", log_dir=3),
        r"log_dir must be a folder path .*Received: log_dir=3", TypeError)
    read_only = _read_only(monkeypatch, tmp_path / "read_only")
    with pytest.raises(ValueError, match=r"log_dir cannot be written. Received: "
                                         rf"log_dir='{re.escape(str(read_only))}'$"):
        model.grow(x, y, method="exact", log_dir=read_only)
    read_only.chmod(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "read_only"]


def test_grow_on_one_example_is_refused(monkeypatch):
    model = compiled()
    x, y = data(16)
    for one in ((x[:1], y[:1]), (tf.data.Dataset.from_tensor_slices((x[:1], y[:1])).batch(4),)):
        _refused_before_estimation(
            monkeypatch, model, lambda m: m.grow(*one, method="exact"),
            r"x must hold at least 2 examples to estimate .*Received: x with 1 example$")
    stage = model.grow(x[:2], y[:2], method="exact", dry_run=True)   # the fewest taken
    assert stage.dry_run and model.growth_history == []


def test_export_into_a_folder_that_cannot_be_written_names_the_path(tmp_path, monkeypatch):
    model = compiled()
    (tmp_path / "file").write_text("")
    for path, match in ((tmp_path / "missing" / "m.tflite", "does not exist"),
                        (tmp_path / "file" / "m.tflite", "is not a directory")):
        for write in (export.tflite, export.saved_model):
            with pytest.raises(ValueError, match=rf"{match}. Received: "
                                                 rf"path='{re.escape(str(path))}'$"):
                write(model, str(path))
    read_only = _read_only(monkeypatch, tmp_path / "read_only")
    for write in (export.tflite, export.saved_model):
        with pytest.raises(PermissionError, match=rf"'{re.escape(str(read_only))}', cannot be "
                                                  rf"written. Received: path='.*read_only/m'$"):
            write(model, str(read_only / "m"))
    read_only.chmod(0o755)
    assert list(read_only.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "read_only"]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_int8_calibration_with_nan_or_inf_is_refused(tmp_path, monkeypatch, value):
    model = compiled()
    x, _ = data(8)
    x[5, 1, 2, 0] = value
    monkeypatch.setattr(conversion, "convert", lambda *a: 1 / 0)   # no conversion starts
    with pytest.raises(ValueError, match=r"representative_data holds NaN or infinite values "
                                         r"\(1 of the 3456 values of its first 8 inputs\).*"
                                         r"Received: representative_data with non-finite"):
        export.tflite(model, tmp_path / "m.tflite", "int8", representative_data=x)
    assert list(tmp_path.iterdir()) == []


def test_exported_tflite_files_get_the_mode_of_other_outputs(tmp_path):
    model = compiled()
    umask = os.umask(0o027)
    try:
        export.tflite(model, tmp_path / "m.tflite")
        (tmp_path / "other.json").write_text("{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.tflite").st_mode) == 0o666 & ~0o027 == \
        stat.S_IMODE(os.stat(tmp_path / "other.json").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "other.json"]
