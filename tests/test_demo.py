"""The offline demo (the README's main job) and the `keras-split` CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_split.apps import cli
from tests import zoo
from tests.zoo import write_tiny_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    code = cli.main(["demo", "--out", str(out), "--stages", "1", "--epochs-per-stage", "2",
                     "--seeds", "2"])
    assert code == 0
    return out


def test_demo_reduced_setting_writes_results_and_report(demo_run, capsys):
    rows = json.loads((demo_run / "results.json").read_text())
    assert [r["stage"] for r in rows] == [0, 1]
    assert rows[0]["macs"] < rows[1]["macs"] <= 1.5 * rows[0]["macs"]
    # Fractions of the 449 test digits; with statistics re-estimated, far above chance
    # (0.52 and 0.66 with the seeds' data).
    for r in rows:
        for key in ("test_accuracy", "test_accuracy_bn"):
            assert round(449 * r[key], 4) == round(449 * r[key]), (key, r[key])
        assert r["test_accuracy_bn"] > 0.4
    baselines = json.loads((demo_run / "baselines.json").read_text())
    # The first seed's width-multiplier curve: the matched width and 6 channels either side.
    matched = [b for b in baselines if b.get("matched")]
    assert len(matched) == 1 and len(baselines) == 3
    width = int(matched[0]["label"].split()[-1])
    assert [b["label"] for b in baselines] == [f"width {width + d}" for d in (-6, 0, 6)]
    assert [b["macs"] for b in baselines] == sorted(b["macs"] for b in baselines)
    comparison = json.loads((demo_run / "comparison.json").read_text())
    assert comparison["grown"]["accuracy"] == rows[-1]["test_accuracy"]
    assert comparison["grown"]["macs"] == rows[-1]["macs"] == comparison["retrained"]["macs"]
    assert comparison["width"] == matched[0]
    # the narrowest width with at least the grown network's MACs, trained as many epochs (2 x 2)
    assert comparison["width"]["epochs"] == comparison["retrained"]["epochs"] == 4
    assert rows[-1]["macs"] <= matched[0]["macs"] < 1.2 * rows[-1]["macs"]
    # The other seeds train the matched width only.
    assert len(json.loads((demo_run / "seeds" / "seed_1" / "baselines.json").read_text())) == 1
    diff = 100 * (comparison["grown"]["accuracy"] - comparison["width"]["accuracy"])
    assert f"{abs(diff):.1f} points" in comparison["verdict"]
    report = (demo_run / "report" / "report.md").read_text()
    for png in ("accuracy_vs_macs.png", "widths.png", "spectra.png", "attention.png"):
        assert f"({png})" in report
        data = (demo_run / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "| 1 |" in report and (demo_run / "report" / "report.html").exists()
    assert comparison["verdict"] in report and "found architecture, retrained" in report


def test_demo_rerun_with_the_same_seed_is_identical(demo_run, tmp_path):
    from keras_split.apps.demo import run_seed

    run_seed(str(tmp_path / "again"), stages=1, epochs_per_stage=2, seed=0, baselines=False)
    zoo.assert_same_runs(demo_run, tmp_path / "again", stages=1)


def test_digits_validation_split_is_carved_from_the_training_images():
    from keras_split.apps.demo import load_digits

    (x_train, y_train), (x_test, y_test) = load_digits(seed=3)
    (x_fit, y_fit), (x_val, y_val) = load_digits(seed=3, validation=True)
    assert len(x_test) == 449 and len(x_train) == 1348
    assert len(x_val) == 1348 // 4 and len(x_fit) + len(x_val) == len(x_train)
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    # The validation and fitting images are the training images, none of the test ones
    # (the digits hold a few exact duplicates: compared as sets, labels as multisets).
    assert rows(x_fit) | rows(x_val) == rows(x_train)
    assert np.sort(np.concatenate([y_fit, y_val])).tolist() == np.sort(y_train).tolist()
    assert not rows(x_val) & (rows(x_test) - rows(x_train))


def test_demo_compares_the_means_over_seeds(demo_run):
    """Every seed is a whole run; the verdict over seeds is computed from their results."""
    over = json.loads((demo_run / "seeds.json").read_text())
    assert over["seeds"] == [0, 1]
    second = demo_run / "seeds" / "seed_1"
    runs = [json.loads((d / "comparison.json").read_text()) for d in (demo_run, second)]
    for run, kept in zip(runs, over["runs"]):
        assert {k: kept[k] for k in run} == run
    # The seeds differ (their own split of the digits, initialisation and shuffling).
    assert runs[0]["grown"]["accuracy"] != runs[1]["grown"]["accuracy"] or \
        runs[0]["width"]["accuracy"] != runs[1]["width"]["accuracy"]
    grown = np.mean([r["grown"]["accuracy"] for r in runs])
    width = np.mean([r["width"]["accuracy"] for r in runs])
    diff = 100 * (grown - width)
    spread = np.std([r["grown"]["accuracy"] for r in runs], ddof=1)   # the sample std
    assert f"grown in place {grown:.4f} ± {spread:.4f} " in over["verdict"]
    assert f"{abs(diff):.1f} points {'ahead of' if diff >= 0 else 'behind'}" in over["verdict"]
    assert over["verdict"] in (demo_run / "report" / "report.md").read_text()
    assert not (second / "report").exists()


def test_cli_export_and_report(demo_run, tmp_path, capsys):
    stage = demo_run / "stage_1"
    assert cli.main(["export", str(stage), "--format", "tflite",
                     "--out", str(tmp_path / "m.tflite")]) == 0
    out = capsys.readouterr().out
    size = (tmp_path / "m.tflite").stat().st_size
    assert f"wrote {tmp_path / 'm.tflite'} ({size:,} bytes)" in out and size > 10_000
    assert "top-1 agreement 1.0000 on 64 inputs from the given data" in out
    assert cli.main(["export", str(stage), "--out", str(tmp_path / "sm")]) == 0
    assert (tmp_path / "sm" / "saved_model.pb").exists()
    # int8 with no --data: the run's calibration.npz (the demo's test inputs).
    calibration = np.load(demo_run / "calibration.npz")["x"]
    assert calibration.shape[1:] == (8, 8, 1) and len(calibration) > 400
    assert cli.main(["export", str(stage), "--format", "tflite", "--quantization", "int8",
                     "--out", str(tmp_path / "q.tflite")]) == 0
    out = capsys.readouterr().out
    assert f"parity inputs and calibration: {demo_run / 'calibration.npz'}" in out
    assert "on 64 inputs from the given data" in out and "weights: 100% stored below" in out
    np.savez(tmp_path / "inputs.npz", x=calibration[:10])
    assert cli.main(["export", str(stage), "--format", "tflite", "--quantization", "int8",
                     "--data", str(tmp_path / "inputs.npz"),
                     "--out", str(tmp_path / "q10.tflite")]) == 0
    assert "on 10 inputs from the given data" in capsys.readouterr().out
    # The digits model's weights are all too small for dynamic-range quantization.
    assert cli.main(["export", str(stage), "--format", "tflite", "--quantization", "dynamic",
                     "--out", str(tmp_path / "d.tflite")]) == 2
    assert "stored no weight in a smaller type" in capsys.readouterr().err
    assert not (tmp_path / "d.tflite").exists()
    assert cli.main(["report", str(demo_run)]) == 0
    report = capsys.readouterr().out.split("Report: ")[1].strip()
    assert os.path.samefile(report, demo_run / "report" / "report.md")
    before = json.loads((demo_run / "retrained.json").read_text())
    assert cli.main(["retrain", str(demo_run)]) == 0
    out = capsys.readouterr().out
    after = json.loads((demo_run / "retrained.json").read_text())
    assert after == before      # the same recipe and seed: the same result
    assert f"test accuracy {after['accuracy']:.4f}" in out and "points" in out


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("not a run")
    assert cli.main(["demo", "--out", str(tmp_path), "--stages", "1"]) == 2
    assert "not a keras_split run directory" in capsys.readouterr().err
    assert cli.main(["grow", "--data", str(tmp_path / "missing"), "--out",
                     str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path)]) == 2
    assert "holds no model.keras" in capsys.readouterr().err
    stage = tmp_path / "run" / "stage_0"
    stage.mkdir(parents=True)
    (stage / "model.keras").write_bytes(b"PK\x03\x04" + b"\0" * 200)   # a truncated archive
    assert cli.main(["export", str(stage)]) == 2
    assert "is not a complete .keras archive (204 bytes; truncated or corrupt)" in \
        capsys.readouterr().err
    assert cli.main(["retrain", str(tmp_path)]) == 2
    assert "not a keras_split run directory" in capsys.readouterr().err
    assert cli.main(["grow", "--model", "mobilenet_v1_cifar", "--width", "0.5", "--data",
                     str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    assert "Received: --width 0.5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["grow", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--model", "--width", "--data", "--stages", "--epochs-per-stage",
                 "--growth-ratio", "--out", "--cost", "--seed", "--no-deterministic"):
        assert flag in help_text


def _cli_grow_on_a_cifar_folder(tmp_path):
    write_tiny_cifar(tmp_path / "cifar")
    args = ["grow", "--model", "mobilenet_v1_cifar", "--width", "8", "--data",
            str(tmp_path / "cifar"), "--stages", "1", "--epochs-per-stage", "1",
            "--batch-size", "16", "--eigen-batches", "2", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 0          # the default --verbose 1: progress bars and summaries
    return args


def test_cli_grow_on_a_cifar_folder_and_refuses_other_config(tmp_path, capsys):
    args = _cli_grow_on_a_cifar_folder(tmp_path)
    assert "stage 0: MACs" in capsys.readouterr().out   # the first growth stage
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(rows) == 2 and rows[1]["macs"] > rows[0]["macs"]
    assert np.load(tmp_path / "run" / "calibration.npz")["x"].shape[1:] == (32, 32, 3)
    # The schedule follows the folder's 40 training images (2 steps of 16 per epoch, 2
    # epochs), not CIFAR-10's 50 000.
    import keras

    optimizer = keras.saving.load_model(tmp_path / "run" / "stage_1" / "model.keras").optimizer
    assert optimizer.get_config()["learning_rate"]["config"]["decay_steps"] == 2 * (40 // 16)
    other = list(args)
    other[other.index("--width") + 1] = "16"
    assert cli.main(other) == 2
    assert "different configuration" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_grow_on_a_cifar_folder_twice_is_bit_identical(tmp_path):
    args = _cli_grow_on_a_cifar_folder(tmp_path)
    again = list(args)
    again[again.index("--out") + 1] = str(tmp_path / "again")
    assert cli.main(again + ["--verbose", "0"]) == 0
    zoo.assert_same_runs(tmp_path / "run", tmp_path / "again", stages=1)


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory):
    """The README's main job, end to end, as a subprocess."""
    out = tmp_path_factory.mktemp("full") / "demo"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "keras_split", "demo", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_full_demo_as_installed_command(full_demo):
    """Growth improves test accuracy, and the console states the comparison plainly."""
    out, proc = full_demo
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 4
    for before, after in zip(rows, rows[1:]):
        assert before["macs"] < after["macs"] <= 1.5 * before["macs"]
    assert rows[-1]["test_accuracy"] > rows[0]["test_accuracy"]
    assert rows[-1]["test_accuracy"] >= 0.9
    assert (out / "report" / "attention.png").exists()
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["verdict"] in proc.stdout
    assert comparison["verdict"] in (out / "report" / "report.md").read_text()


@pytest.mark.slow
def test_full_demo_grown_matches_width_multiplier(full_demo):
    """Issue 12's bar: the grown network at least as accurate as the width multiplier with
    at least its MACs, in the mean over the demo's seeds, and the console says so (as
    measured: 0.9852 against 0.9785; on a validation split the two are level within the
    seeds' spread, README)."""
    out, proc = full_demo
    over = json.loads((out / "seeds.json").read_text())
    assert len(over["runs"]) == 3
    assert over["verdict"] in proc.stdout
    grown = np.mean([r["grown"]["accuracy"] for r in over["runs"]])
    width = np.mean([r["width"]["accuracy"] for r in over["runs"]])
    assert grown >= width
    assert all(r["grown"]["macs"] <= r["width"]["macs"] for r in over["runs"])


def test_cli_starts_fast_and_quiet(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    probe = ("import sys, time; t = time.perf_counter(); import keras_split; "
             "print(time.perf_counter() - t, 'tensorflow' in sys.modules, keras_split.__version__)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    seconds, *rest = out.stdout.split()
    # Importing the package loads no TensorFlow: milliseconds, where TensorFlow takes seconds.
    assert float(seconds) < 0.5, out.stdout
    assert rest == ["False", "0.1.0"]
    help_run = subprocess.run([sys.executable, "-m", "keras_split", "--help"], env=env,
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert help_run.returncode == 0 and "export" in help_run.stdout and help_run.stderr == ""
    # A command that loads TensorFlow prints its one error line and nothing of TensorFlow's.
    error = subprocess.run([sys.executable, "-m", "keras_split", "export", str(tmp_path)],
                           env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert error.returncode == 2
    assert error.stderr.splitlines() == [
        f"keras-split: error: '{tmp_path}' holds no model.keras (expected RUN_DIR/stage_K)."]
