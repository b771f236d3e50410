"""The device-cost benchmark compares with baselines of its own protocol and rule."""

import argparse
import json

import pytest

import keras_split as ks
from benchmarks import device_costs
from benchmarks.cifar10_common import family_protocol_arguments


def _write(tmp_path, tag, runs, **settings):
    base = {"epochs": 16, "train_examples": 10_000, "val_examples": 5_000,
            "eigen_examples": 1_024, "batch_size": 128, "lr": 0.05, "rule": None,
            "grow": None, "default_rule": ks.GrowthSettings().rule.get_config()}
    with open(tmp_path / f"{tag}.json", "w") as f:
        json.dump({"settings": {**base, **settings}, "runs": runs}, f)


def _run(method, seed, test):
    return {"family": "vgg_relu", "method": method, "seed": seed, "widths": {"c": 1},
            "val": test, "test": test}


def test_baselines_take_growth_from_the_default_rule_and_the_curve_from_any_file(
        tmp_path, monkeypatch):
    monkeypatch.setattr(device_costs, "RESULTS", str(tmp_path))
    args = family_protocol_arguments(argparse.ArgumentParser()).parse_args([])
    _write(tmp_path, "new", [_run("energy", 0, 0.7), _run("scratch", 0, 0.6)])
    _write(tmp_path, "old", [_run("energy", 1, 0.1), _run("scratch", 0, 0.2),
                             _run("scratch", 1, 0.61), _run("width-8", 0, 0.5)],
           default_rule=None)
    runs = device_costs.baseline_runs(["new", "old"], args)
    got = sorted((r["method"], r["seed"], r["test"], r["source"]) for r in runs)
    assert got == [("energy", 0, 0.7, "new"), ("scratch", 0, 0.6, "new"),
                   ("scratch", 1, 0.61, "old"), ("width-8", 0, 0.5, "old")]
    with pytest.raises(SystemExit, match="today's default split rule"):
        device_costs.baseline_runs(["old", "new"], args)
    _write(tmp_path, "short", [], epochs=8)
    with pytest.raises(SystemExit, match="another protocol.*'epochs': 8"):
        device_costs.baseline_runs(["new", "short"], args)
