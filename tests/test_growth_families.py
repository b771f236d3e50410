"""The family benchmark resumes a retrained run in a later process (benchmarks/)."""

import numpy as np

from benchmarks.growth_families import pack_architecture, unpack_architecture
from benchmarks.families import layer_widths
from tests.zoo import cnn_data, compiled_cnn


def test_a_packed_found_architecture_is_the_same_network_with_the_same_fresh_weights():
    model = compiled_cnn()
    x, y = cnn_data()
    model.grow((x, y), growth_ratio=0.5, method="exact")
    found = model.found_architecture(seed=7)
    again = unpack_architecture(pack_architecture(found), seed=7)
    assert layer_widths(again) == layer_widths(found) != layer_widths(compiled_cnn().network)
    assert [w.shape for w in again.get_weights()] == [w.shape for w in found.get_weights()]
    for a, b in zip(again.get_weights(), found.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = unpack_architecture(pack_architecture(found), seed=8)
    assert not np.array_equal(other.get_weights()[0], found.get_weights()[0])


def test_a_report_keeps_the_command_and_notes_that_made_the_runs(tmp_path):
    import argparse
    import json

    from benchmarks.growth_families import save
    path = str(tmp_path / "runs.json")
    runs = [{"family": "vgg", "method": "scratch", "seed": 0, "val": 0.5}]
    save(path, argparse.Namespace(report=False), ["--data-dir", "d", "--eval", "test"], {},
         runs)
    with open(path) as f:
        made = json.load(f)
    made["notes"] = ["seed 0 ran elsewhere"]
    with open(path, "w") as f:
        json.dump(made, f)
    save(path, argparse.Namespace(report=True), ["--data-dir", "x", "--report"], {}, runs,
         rows=[{"family": "vgg"}])
    with open(path) as f:
        reported = json.load(f)
    assert reported["command"] == made["command"] and "--eval test" in made["command"]
    assert reported["notes"] == ["seed 0 ran elsewhere"]
    assert reported["table"] == [{"family": "vgg"}] and reported["runs"] == runs
    save(path, argparse.Namespace(report=False), ["--data-dir", "d", "--seeds", "1"], {}, runs)
    with open(path) as f:
        assert "--seeds 1" in json.load(f)["command"]   # a run records its own command
