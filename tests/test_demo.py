"""The offline demo (the README's main job) and the CLI."""

import json
import os
import subprocess
import sys

import pytest

from keras_split import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_reduced_setting(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--out", str(out), "--stages", "1", "--epochs-per-stage", "2"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["stage"] for r in rows] == [0, 1]
    assert rows[0]["macs"] < rows[1]["macs"] <= 1.5 * rows[0]["macs"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)
    printed = capsys.readouterr().out
    assert "test acc" in printed and "results.json" in printed


def test_cli_reports_bad_run_dir(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("not a run")
    assert cli.main(["demo", "--out", str(tmp_path), "--stages", "0"]) == 2
    assert "not a keras_split run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_full_demo_as_installed_command(tmp_path):
    """The README's main job, end to end, as a subprocess: growth improves test accuracy."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "keras_split.cli", "demo", "--out",
                           str(tmp_path / "demo")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(rows) == 4
    for before, after in zip(rows, rows[1:]):
        assert before["macs"] < after["macs"] <= 1.5 * before["macs"]
    assert rows[-1]["test_accuracy"] > rows[0]["test_accuracy"]
    assert rows[-1]["test_accuracy"] >= 0.9
