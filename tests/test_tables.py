"""The tables of README.md and docs/ are the ones benchmarks/results/*.json give."""

import os
import re

from benchmarks import family_tables, table_sources, tables


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _one_digit_changed(text, match):
    """``text`` with the first digit inside ``match``'s block changed (d -> d + 1 mod 10)."""
    start = match.start(3)
    digit = re.search(r"\d", match.group(3))
    assert digit, f"table {match.group(2)} has no digit"
    at = start + digit.start()
    return text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:]


def test_committed_tables_are_current():
    stale = tables.check()
    assert stale == [], ("stale tables (run `python -m benchmarks.tables`):\n"
                         + "\n".join(stale))


def test_every_block_is_registered_and_every_table_is_used():
    names = [m.group(2) for path in tables.documents()
             for m in tables.BLOCK.finditer(_read(path))]
    assert set(names) <= set(tables.TABLES), set(names) - set(tables.TABLES)
    assert set(tables.TABLES) <= set(names), set(tables.TABLES) - set(names)
    assert "families_summary" in [m.group(2) for m in tables.BLOCK.finditer(
        _read(os.path.join(tables.ROOT, "README.md")))]


def test_a_one_digit_change_of_any_table_is_reported(tmp_path):
    """Each generated block, one digit changed in a copy: the check names that block alone."""
    checked = 0
    for path in tables.documents():
        fresh, _ = tables.render(_read(path))
        copy = tmp_path / os.path.basename(path)
        for match in tables.BLOCK.finditer(fresh):
            copy.write_text(_one_digit_changed(fresh, match), encoding="utf-8")
            stale = tables.check([str(copy)])
            assert len(stale) == 1 and stale[0].endswith(f": {match.group(2)}"), \
                (path, match.group(2), stale)
            checked += 1
        copy.write_text(fresh, encoding="utf-8")
        assert tables.check([str(copy)]) == []
    assert checked >= len(tables.TABLES)


def test_write_repairs_a_stale_block_and_main_check_fails_on_it(tmp_path, monkeypatch, capsys):
    text, _ = tables.render(_read(os.path.join(tables.ROOT, "README.md")))
    match = next(tables.BLOCK.finditer(text))
    copy = tmp_path / "README.md"
    copy.write_text(_one_digit_changed(text, match), encoding="utf-8")
    monkeypatch.setattr(tables, "documents", lambda root=None: [str(copy)])
    assert tables.main(["--check"]) == 1
    assert f": {match.group(2)}" in capsys.readouterr().out
    assert tables.main([]) == 0
    assert copy.read_text(encoding="utf-8") == text
    assert tables.main(["--check"]) == 0


def test_accuracies_are_mean_and_sample_std_with_n():
    assert table_sources.ms([0.5, 0.6, 0.7]) == "0.6000 ± 0.1000 (n=3)"
    assert table_sources.ms([0.5]) == "0.5000 (n=1)"
    assert table_sources.ms([1.0, 2.0], digits=1) == "1.5 ± 0.7 (n=2)"


def _run(family, method, seed, val, test=None):
    return {"family": family, "method": method, "seed": seed, "val": val,
            "test": val if test is None else test}


def test_budget_variants_are_paired_by_seed_against_the_baselines(tmp_path):
    import json
    runs = [_run("vgg", m, s, v) for m, s, v in (
        ("uniform", 0, 0.60), ("uniform", 1, 0.62), ("scratch", 0, 0.65), ("scratch", 1, 0.64),
        ("energy-resolution", 0, 0.61), ("energy-resolution", 1, 0.64),
        ("retrained-resolution", 0, 0.66), ("energy", 1, 0.65), ("retrained", 1, 0.61))]
    (tmp_path / "growth_families.json").write_text(json.dumps({"runs": runs}))
    rows = [r.split(" | ") for r in family_tables.families_budgets(str(tmp_path)).splitlines()]
    by_label = {r[1]: r for r in rows[2:] if r[0] == "| vgg"}
    labels = {grown: label for label, grown, _ in family_tables.BUDGETS}
    default, per_resolution = labels["energy"], labels["energy-resolution"]
    # Energy - uniform: +1 and +2 points; retrained - scratch, seed 0 only: +1.
    assert by_label[per_resolution][2:4] == ["+1.50 ± 0.71 (n=2)"] * 2
    assert by_label[per_resolution][4] == "+1.00 (n=1)"
    assert by_label[default][2] == "+3.00 (n=1)"
    assert by_label[default][4] == "-3.00 (n=1)"
    assert labels["energy-network"] not in by_label   # no energy-network runs
    means = {r[1]: r[2] for r in rows[2:] if r[0] == "| mean over families"}
    assert means == {per_resolution: "+1.50 pt (1 families)",
                     default: "+3.00 pt (1 families)"}
    # The criterion: each family's mean of its two differences, then over families.
    criterion = {r[1]: (r[2], r[4]) for r in rows[2:]
                 if r[0] == "| criterion (mean of the two, val)"}
    assert criterion == {per_resolution: ("+1.25 pt over families", "worst vgg +1.25 pt"),
                         default: ("+0.00 pt over families", "worst vgg +0.00 pt")}


def test_the_frontier_reads_the_width_multipliers_curve(tmp_path):
    import json
    runs = [dict(_run("vgg", m, s, 0.0), macs=macs, test=acc) for m, s, macs, acc in (
        ("width-8", 0, 2_000_000, 0.60), ("scratch", 0, 4_000_000, 0.64),
        ("scratch", 1, 4_000_000, 0.66), ("width-14", 0, 8_000_000, 0.70),
        ("energy", 0, 4_000_000, 0.62), ("retrained", 0, 4_000_000, 0.72))]
    (tmp_path / "growth_families.json").write_text(json.dumps({"runs": runs}))
    row = family_tables.families_frontier(str(tmp_path)).splitlines()[2].split(" | ")
    assert row[1] == "2.00 M: 0.6000 (n=1) · 4.00 M: 0.6500 (n=2) · 8.00 M: 0.7000 (n=1)"
    # 0.62 lies 2/5 of the way from 0.60 (2 M) to 0.65 (4 M): 2.8 M; 0.72 is above the curve.
    assert row[2:] == ["0.6200 at 4.00 M (n=1)", "2.80 M", "0.7200 at 4.00 M (n=1)", "> 8.00 M |"]


def test_the_frontier_completes_its_curve_from_another_file(tmp_path):
    import json
    mine = [dict(_run("vgg", m, s, 0.0), macs=macs, test=acc) for m, s, macs, acc in (
        ("scratch", 0, 4_000_000, 0.64), ("energy", 0, 4_000_000, 0.66),
        ("retrained", 0, 4_000_000, 0.61))]
    other = [dict(_run(f, m, s, 0.0), macs=macs, test=acc) for f, m, s, macs, acc in (
        ("vgg", "width-8", 0, 2_000_000, 0.60), ("vgg", "width-14", 0, 8_000_000, 0.72),
        ("vgg", "scratch", 0, 4_000_000, 0.99), ("resnet", "width-8", 0, 3_000_000, 0.5))]
    (tmp_path / "mine.json").write_text(json.dumps({"runs": mine}))
    (tmp_path / "other.json").write_text(json.dumps({"runs": other}))
    lines = family_tables.families_frontier(str(tmp_path), "mine.json",
                                            curve_from="other.json").splitlines()
    assert len(lines) == 3   # no row for a family of the other file only
    row = lines[2].split(" | ")
    # Its own scratch (0.64), not the other file's (0.99); the other file's widths.
    assert row[1] == "2.00 M: 0.6000 (n=1) · 4.00 M: 0.6400 (n=1) · 8.00 M: 0.7200 (n=1)"
    # 0.66 is 1/4 of the way from 0.64 (4 M) to 0.72 (8 M): 5 M; 0.61 is 1/4 from 0.60.
    assert row[2:] == ["0.6600 at 4.00 M (n=1)", "5.00 M", "0.6100 at 4.00 M (n=1)", "2.50 M |"]


def test_device_cost_tables_show_predicted_against_measured(tmp_path):
    import json

    from benchmarks import table_sources
    stage = {"predicted_ms": 1.5, "measured_ms": 1.2}
    data = {"table": [{"family": "vgg", "method": "latency", "n": 2, "measured_ms": 2.0,
                       "predicted_ms": 1.6, "test": 0.61, "test_std": 0.02,
                       "width_multiplier_at_that_latency": 0.6}],
            "runs": [{"family": "vgg", "seed": 1, "budget_ms": 2.5, "stages": [stage, stage],
                      "predicted_ms": 2.0, "measured_ms": 2.5, "macs": 1_234_567,
                      "test": 0.6}]}
    (tmp_path / "device_costs.json").write_text(json.dumps(data))
    [row] = table_sources.device_costs(str(tmp_path)).splitlines()[2:]
    assert row == "| vgg | latency | 2 | 2.000 | 1.600 | 0.6100 ± 0.0200 | 0.6000 |"
    [row] = table_sources.device_costs_runs(str(tmp_path)).splitlines()[2:]
    # 2.5 ms measured against 2.0 predicted: +25 %.
    assert row == ("| vgg | 1 | 2.500 | 1.50 / 1.20 · 1.50 / 1.20 | 2.000 | 2.500 | +25 % | "
                   "1,234,567 | 0.6000 |")
