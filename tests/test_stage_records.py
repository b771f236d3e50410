"""The typed records of a growth stage: JSON round trips, older JSON, the dict view."""

import json

import pytest

import keras_split as ks
from keras_split.growing import stage_records as rec


def _stage(**overrides):
    fields = dict(
        stage=0, method="lobpcg", cost="flops", solver="milp", growth_ratio=0.5, epsilon=0.0,
        budget=120.0, macs_before=240, macs_after=352, params_before=40, params_after=52,
        n_candidates=5, n_selected=2, selected_value=-0.75, predicted_loss_change=0.0,
        loss_before=1.5, loss_after=1.5, measured_loss_change=0.0,
        layers={"d": rec.LayerRecord(4, 6, [0, 3], -0.5, -0.1, 3, 0.02, 0.01,
                                     [-0.5, 0.2, 0.1, -0.25])},
        seconds=rec.StageSeconds(1.25, 0.5, 0.25),
        guard=rec.GuardRecord("split", [rec.GuardTry(0.0, 1.5)]),
        children={"d": [[0, 4], [3, 5]]}, twins=rec.TwinRecord(6, 0, 0.0, 6),
        eigen=rec.EigenSummary(4, 0.05, 0.07, {"d": 0}),
        stability=rec.StabilityRecord(0.5, 2, 3))
    fields.update(overrides)
    return ks.GrowthStage(**fields)


def test_a_stage_round_trips_through_json_with_its_typed_parts():
    stage = _stage()
    back = ks.GrowthStage.from_json(stage.to_json())
    assert back == stage
    assert isinstance(back.layers["d"], rec.LayerRecord)
    assert isinstance(back.guard.tries[0], rec.GuardTry) and back.guard.tries[0].loss == 1.5
    assert back.seconds.total() == 2.0 and back.stability.jaccard == 0.5
    assert json.loads(stage.to_json())["layers"]["d"]["split_indices"] == [0, 3]


def test_the_dict_view_reads_the_fields_and_refuses_others():
    stage = _stage()
    assert stage["macs_after"] == 352 and stage.layers["d"]["units_after"] == 6
    assert stage.guard["tries"][0]["epsilon"] == 0.0 and stage.twins.get("distinct") == 6
    assert stage.get("nothing", "x") == "x"
    with pytest.raises(KeyError, match="nothing"):
        stage.guard["nothing"]


def test_older_json_with_empty_parts_and_unknown_fields():
    d = _stage().to_dict()
    d.update(twins={}, stability={}, eigen={})
    old = ks.GrowthStage.from_dict(d)
    assert old.twins is None and old.stability is None and old.eigen == rec.EigenSummary()
    with pytest.raises(ValueError, match=r"Unknown GuardRecord fields: \['step'\]"):
        rec.GuardRecord.from_dict({"action": "split", "step": 1})
    with pytest.raises(ValueError, match=r"Unknown GrowthStage fields: \['extra'\]"):
        ks.GrowthStage.from_dict(dict(d, extra=1))
