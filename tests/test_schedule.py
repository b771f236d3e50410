"""Resumable growth runs and growth inside fit."""

import json
import os

import keras
import numpy as np
import pytest

import keras_split as ks
from tests import resume_job, zoo


def test_bad_run_directories(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a keras_split run directory"):
        ks.grow_schedule(resume_job.build, resume_job.data, str(foreign), stages=0)
    assert os.listdir(foreign) == ["notes.txt"]
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        ks.grow_schedule(resume_job.build, resume_job.data, str(corrupt), stages=0)
    run = tmp_path / "run"
    ks.grow_schedule(resume_job.build, resume_job.data, str(run), stages=0, epochs_per_stage=1,
                     growth_ratio=0.5)
    assert zoo.completed_stage(run) == 0
    with pytest.raises(ValueError, match="different configuration .*growth_ratio"):
        ks.grow_schedule(resume_job.build, resume_job.data, str(run), stages=1,
                         epochs_per_stage=1, growth_ratio=0.25)
    assert sorted(os.listdir(run)) == ["run.json", "stage_0"]
    # Another number of stages resumes the run, with a warning and a record in run.json.
    ks.grow_schedule(resume_job.build, resume_job.data, str(run), stages=1, epochs_per_stage=1,
                     growth_ratio=0.5)
    with open(run / "run.json") as f:
        record = json.load(f)
    assert record["completed"] == 1 and record["config"]["stages"] == 1
    assert record["resumes"] == [{"after_stage": 0, "stages_before": 0, "stages_after": 1}]
    with pytest.raises(ValueError, match="stages"):
        ks.grow_schedule(resume_job.build, resume_job.data, str(run), stages=-1)


def test_growth_callback_grows_inside_fit():
    model = resume_job.build()
    data = resume_job.data(0)
    macs = ks.count_flops(model)
    cb = ks.GrowthCallback(data, every_n_epochs=2, max_macs=2.0 * macs, growth_ratio=0.4,
                           eigen_epochs=1)
    hist = model.fit(data, epochs=6, callbacks=[cb], verbose=0)
    assert len(hist.history["loss"]) == 6 and np.all(np.isfinite(hist.history["loss"]))
    assert 2 <= len(cb.stages) <= 3 and len(model.growth_history) == len(cb.stages)
    assert macs < ks.count_flops(model) <= 2.0 * macs
    assert model.network.get_layer("c1").kernel.shape[-1] > 4 or \
        model.network.get_layer("c2").kernel.shape[-1] > 4
    with pytest.raises(ValueError, match="every_n_epochs"):
        ks.GrowthCallback(data, every_n_epochs=0)


def test_default_stage_epochs_grow_early_and_never_in_the_second_half():
    from keras_split.growing.growth_callback import default_stage_epochs

    assert default_stage_epochs(16) == [2, 4, 6]
    assert default_stage_epochs(18) == [2, 4, 6]
    assert default_stage_epochs(60) == [7, 14, 21]
    assert default_stage_epochs(8) == [1, 2, 3]
    assert default_stage_epochs(4) == [1, 2]
    assert default_stage_epochs(2) == [1]
    assert default_stage_epochs(1) == []
    assert default_stage_epochs(16, stages=5) == [2, 4, 6, 8]


def test_growth_callback_places_its_stages_from_the_fit_epochs(caplog):
    keras.utils.set_random_seed(0)
    x, y = next(iter(resume_job.data(0).unbatch().batch(64)))
    x, y = x.numpy(), y.numpy()
    model = resume_job.build()
    cb = ks.GrowthCallback((x, y), growth_ratio=0.2, eigen_epochs=1, batch_size=16)
    hist = model.fit(x, y, epochs=8, batch_size=16, callbacks=[cb], verbose=0)
    assert cb.stage_epochs == [1, 2, 3] and len(cb.stages) == 3
    assert hist.history["growth_stages"] == [1.0, 2.0, 3.0] + [3.0] * 5
    # A fit too short to train new units grows nowhere, and says so.
    model = resume_job.build()
    short = ks.GrowthCallback((x, y), growth_ratio=0.2, eigen_epochs=1, batch_size=16)
    with caplog.at_level("WARNING", logger="keras_split.growing.growth_callback"):
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[short], verbose=0)
    assert short.stages == [] and "too short to grow" in caplog.text
    # A fixed period never grows after the last epoch.
    model = resume_job.build()
    fixed = ks.GrowthCallback((x, y), every_n_epochs=2, growth_ratio=0.2, eigen_epochs=1,
                              batch_size=16)
    model.fit(x, y, epochs=4, batch_size=16, callbacks=[fixed], verbose=0)
    assert fixed.stage_epochs == [2]
    # Given epochs: exactly those, none at or after the last (with a warning).
    model = resume_job.build()
    given = ks.GrowthCallback((x, y), grow_after=[1, 3, 5], growth_ratio=0.2, eigen_epochs=1,
                              batch_size=16)
    with caplog.at_level("WARNING", logger="keras_split.growing.growth_callback"):
        hist = model.fit(x, y, epochs=5, batch_size=16, callbacks=[given], verbose=0)
    assert given.stage_epochs == [1, 3] and "no stage after epoch 5 of 5" in caplog.text
    assert hist.history["growth_stages"] == [1.0, 1.0, 2.0, 2.0, 2.0]


class _DriftingParams(ks.costs.Params):
    """Parameters times a factor that a test changes between epochs: a measured cost
    (a latency) that moves between stages."""

    name = "drifting_params"

    def __init__(self):
        self.factor = 1.0

    def network_cost(self, graph):
        return self.factor * super().network_cost(graph)


def test_growth_callback_skips_a_stage_above_a_moved_budget_and_the_fit_goes_on(caplog):
    keras.utils.set_random_seed(0)
    x, y = next(iter(resume_job.data(0).unbatch().batch(64)))
    x, y = x.numpy(), y.numpy()
    model = resume_job.build()
    cost = _DriftingParams()
    limit = 3.0 * model.count_params()
    cb = ks.GrowthCallback((x, y), grow_after=[1, 2, 3], growth_ratio=0.2, eigen_epochs=1,
                           batch_size=16, budgets={cost: limit})
    # After the first stage the measured cost doubles, above the limit, then comes back.
    drift = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(
        cost, "factor", {0: 4.0, 1: 1.0}.get(epoch, cost.factor)))
    with caplog.at_level("WARNING", logger="keras_split.growing.growth_callback"):
        hist = model.fit(x, y, epochs=5, batch_size=16, callbacks=[cb, drift], verbose=0)
    assert cb.stage_epochs == [1, 3] and len(hist.history["loss"]) == 5
    assert ("no stage at this epoch: the network costs" in caplog.text
            and "'drifting_params'" in caplog.text)
    assert model.count_params() <= limit
    # Above the limit when the fit begins: refused before any training step.
    cost.factor = 10.0
    with pytest.raises(ValueError, match="budget 'drifting_params'"):
        resume_job.build().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[
            ks.GrowthCallback((x, y), budgets={cost: limit})])


def test_growth_callback_checks_grow_arguments_when_built():
    data = (np.zeros((8, 4), "float32"), np.zeros(8))
    for kwargs, pattern in (({"cost": "watts"}, "cost must be one of"),
                            ({"growth_ratio": -1}, "growth_ratio"),
                            ({"split_rule": "triple"}, "Received: split_rule='triple'"),
                            ({"epochs": 3}, r"Unknown growth settings \['epochs'\]"),
                            ({"max_stages": -1}, "Received: max_stages=-1"),
                            ({"grow_after": [3, 2]}, r"Received: grow_after=\[3, 2\]"),
                            ({"grow_after": [0]}, r"Received: grow_after=\[0\]"),
                            ({"grow_after": [2], "every_n_epochs": 2}, "not both")):
        with pytest.raises(ValueError, match=pattern):
            ks.GrowthCallback(data, **kwargs)


def test_growth_callback_max_stages_and_logs():
    keras.utils.set_random_seed(0)
    model = resume_job.build()
    x, y = next(iter(resume_job.data(0).unbatch().batch(64)))
    x, y = x.numpy(), y.numpy()
    cb = ks.GrowthCallback((x, y), every_n_epochs=1, max_stages=2, growth_ratio=0.3,
                           eigen_epochs=1, batch_size=16)
    hist = model.fit(x, y, epochs=4, batch_size=16, callbacks=[cb], verbose=0)
    assert len(cb.stages) == 2
    macs = hist.history["macs"]
    assert macs[0] > ks.count_flops(resume_job.build()) and macs[1] > macs[0]
    assert macs[3] == macs[2] == macs[1] == ks.count_flops(model)
    assert hist.history["growth_stages"] == [1.0, 2.0, 2.0, 2.0]
    assert hist.history["twin_fraction"][-1] == ks.twin_statistics(model)["twin_fraction"]
    # A growth epoch logs the twins its stage measured (the same weights).
    assert hist.history["twin_fraction"][1] == cb.stages[1].twins["twin_fraction"]


def test_keras_callbacks_across_a_split(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = next(iter(resume_job.data(0).unbatch().batch(64)))
    x, y = x.numpy(), y.numpy()

    def grower():
        return ks.GrowthCallback((x, y), every_n_epochs=2, max_stages=1, growth_ratio=0.5,
                                 eigen_epochs=1, batch_size=16)

    # EarlyStopping(restore_best_weights=True): today's Keras would set the narrow network's
    # best weights into the grown one at the end; it restores the grown network's best epoch.
    model = resume_job.build()
    early = keras.callbacks.EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    keeper = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: kept.append((logs["loss"], model.get_weights())))
    kept = []
    growth = grower()
    model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[growth, early, keeper])
    assert len(growth.stages) == 1 and growth.restorers == [early]
    # The best of the grown network's epochs: epoch 1 ends with the split (its weights,
    # kept after it, compute the function that had epoch 1's loss), then epochs 2-4.
    best = min(range(1, 5), key=lambda e: kept[e][0])
    assert early.best_epoch == best
    for a, b in zip(model.get_weights(), kept[best][1]):
        np.testing.assert_array_equal(a, b)
    # ModelCheckpoint of whole models: the grown architecture reloads.
    model = resume_job.build()
    path = str(tmp_path / "ckpt.keras")
    model.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=[grower(), keras.callbacks.ModelCheckpoint(path)])
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # Weights-only checkpoints and BackupAndRestore are refused before training starts.
    model = resume_job.build()
    weights = model.get_weights()
    for callback, pattern in (
            (keras.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5"),
                                             save_weights_only=True), "save_weights_only"),
            (keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), "grow_schedule")):
        with pytest.raises(ValueError, match=pattern):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[grower(), callback])
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    # Without a GrowthCallback nothing is refused: the epoch runs and trains the model.
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))


def test_growth_epochs_grow_early_and_schedule_takes_a_list(tmp_path):
    assert ks.growth_epochs(60, 3) == [10, 10, 10, 30]
    assert ks.growth_epochs(18, 3) == [3, 3, 3, 9]
    assert ks.growth_epochs(5, 3) == [1, 1, 1, 2]
    assert ks.growth_epochs(7, 0) == [7]
    assert ks.growth_epochs(60, 3, every=2) == [2, 2, 2, 54]
    with pytest.raises(ValueError, match="Received: epochs=3"):
        ks.growth_epochs(3, 3)
    for every in (0, 3, 2.0, True):
        with pytest.raises(ValueError, match=f"Received: every={every!r}"):
            ks.growth_epochs(9, 3, every=every)
    _, history = ks.grow_schedule(resume_job.build, resume_job.data, str(tmp_path / "r"),
                                  stages=1, epochs_per_stage=[1, 2], growth_ratio=0.5,
                                  grow_kwargs={"eigen_epochs": 1})
    assert [len(f["loss"]) for f in history["fit"]] == [1, 2]
    with pytest.raises(ValueError, match=r"Received: epochs_per_stage=\[1, 2\]"):
        ks.grow_schedule(resume_job.build, resume_job.data, str(tmp_path / "r2"), stages=2,
                         epochs_per_stage=[1, 2])


def test_schedule_stage_above_a_moved_budget_trains_without_growing(tmp_path, monkeypatch,
                                                                    caplog):
    from keras_split.select import cost_library
    cost = _DriftingParams()
    monkeypatch.setitem(cost_library.BUILT_IN, "drifting_params", lambda: cost)
    limit = 3.0 * resume_job.build().count_params()
    factors = iter([4.0, 1.0, 1.0])   # set after each stage's fit: stage 1 finds 4x the cost
    drift = keras.callbacks.LambdaCallback(
        on_train_end=lambda logs: setattr(cost, "factor", next(factors)))
    with caplog.at_level("INFO", logger="keras_split.growing.schedule"):
        model, history = ks.grow_schedule(
            resume_job.build, resume_job.data, str(tmp_path / "run"), stages=2,
            epochs_per_stage=1, growth_ratio=0.2, fit_kwargs={"callbacks": [drift]},
            grow_kwargs={"eigen_epochs": 1, "budgets": {"drifting_params": limit}})
    assert len(history["fit"]) == 3 and len(history["stages"]) == 1   # stage 2 grew
    assert "Stage 1 does not grow: the network costs" in caplog.text
    assert "max_macs" not in caplog.text   # the budget, not a MACs cap, stopped stage 1
    assert history["stages"][0]["macs_after"] > history["stages"][0]["macs_before"]
    assert model.count_params() <= limit
    # A seed above the limit: refused before any training, nothing written.
    cost.factor = 10.0
    with pytest.raises(ValueError, match="budget 'drifting_params'"):
        ks.grow_schedule(resume_job.build, resume_job.data, str(tmp_path / "over"), stages=1,
                         grow_kwargs={"budgets": {"drifting_params": limit}})
    assert not (tmp_path / "over" / "stage_0").exists()


def test_schedule_max_macs_cuts_the_last_ratio_and_stops_growing(tmp_path):
    from keras_split.growing.growth_settings import capped_growth_ratio

    assert capped_growth_ratio(100, 0.5, None) == 0.5
    assert capped_growth_ratio(100, 0.5, 120) == pytest.approx(0.2)
    assert capped_growth_ratio(100, 0.5, 1000) == 0.5
    assert capped_growth_ratio(120, 0.5, 120) is None
    seed_macs = ks.count_flops(resume_job.build())
    cap = 1.3 * seed_macs
    model, history = ks.grow_schedule(
        resume_job.build, resume_job.data, str(tmp_path / "capped"), stages=2,
        epochs_per_stage=1, growth_ratio=0.5, grow_kwargs={"eigen_epochs": 1}, max_macs=cap)
    first = history["stages"][0]
    assert first["macs_before"] == seed_macs
    assert first["growth_ratio"] == pytest.approx(0.3)   # cut from 0.5 to reach the cap
    assert seed_macs < first["macs_after"] <= cap
    assert all(s["macs_after"] <= cap for s in history["stages"]) and ks.count_flops(model) <= cap
    with open(tmp_path / "capped" / "run.json") as f:
        assert json.load(f)["config"]["max_macs"] == cap
    # At the cap already: no stage grows, and none is recorded.
    model, history = ks.grow_schedule(
        resume_job.build, resume_job.data, str(tmp_path / "full"), stages=2,
        epochs_per_stage=1, growth_ratio=0.5, max_macs=seed_macs)
    assert history["stages"] == [] and ks.count_flops(model) == seed_macs
    assert len(history["fit"]) == 3
    with pytest.raises(ValueError, match="Received: max_macs=0"):
        ks.grow_schedule(resume_job.build, resume_job.data, str(tmp_path / "bad"), stages=1,
                         max_macs=0)
