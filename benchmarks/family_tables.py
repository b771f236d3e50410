"""The Markdown tables of the network-family benchmark (``growth_families.py``), from its
results files in benchmarks/results/ (``benchmarks/tables.py`` names them).

Accuracies are ``mean ± sample std (n=seeds)``; differences are paired by seed, in points.
Nothing here loads TensorFlow.
"""

import os

import numpy as np

from benchmarks import growth_families_report as report
from benchmarks.table_sources import load, ms, rows_to_markdown

def families(results, name="growth_families.json"):
    """Every row and paired difference of the family benchmark's results file ``name``."""
    data = load(results, name)
    rows = report.table(data["runs"], data["settings"]["train_examples"])
    return report.markdown(rows)


def families_screening(results):
    """One line per run of the one-seed screening files ``probe_*.json``."""
    return report.screening("probe", results)


# The targets growth is held to, per family (test accuracy, paired by seed, in points):
# (label, run, baseline, lowest acceptable mean difference).
CHECKS = (("found architecture - scratch", "retrained", "scratch", 0.0),
          ("in place - scratch", "energy", "scratch", -1.0),
          ("in place - uniform in place", "energy", "uniform", 0.0),
          ("in place - random in place", "energy", "random", 0.0))


def families_checks(results, name="growth_families.json"):
    """Per family: each target's paired difference (mean ± sample std, points) and whether
    it is met, the in-place runs' MAC-epochs against scratch's (target <= 0.80), and the
    mean over families of the first two (targets >= +1.0 and >= -0.5)."""
    runs = load(results, name)["runs"]
    key = "test" if runs and "test" in runs[0] else "val"
    out, means = [], {label: [] for label, *_ in CHECKS[:2]}
    for family, by in _by_family(runs).items():
        cells = [family]
        for label, run, base, target in CHECKS:
            seeds = sorted(set(by.get(run, {})) & set(by.get(base, {})))
            diff = [100 * (by[run][s][key] - by[base][s][key]) for s in seeds]
            if not diff:
                cells.append("")
                continue
            mean = float(np.mean(diff))
            if label in means:
                means[label].append(mean)
            std = f" ± {np.std(diff, ddof=1):.2f}" if len(diff) > 1 else ""
            cells.append(f"{mean:+.2f}{std} pt (n={len(diff)}) "
                         f"{'met' if mean >= target else 'missed'}")
        ratio = [by["energy"][s]["mac_epochs"] / by["scratch"][s]["mac_epochs"]
                 for s in sorted(set(by.get("energy", {})) & set(by.get("scratch", {})))]
        cells.append(f"{np.mean(ratio):.3f} {'met' if np.mean(ratio) <= 0.8 else 'missed'}"
                     if ratio else "")
        out.append(cells)
    out.append(["mean over families"]
               + [f"{np.mean(v):+.2f} pt (target {'+1.0' if i == 0 else '-0.5'})" if v else ""
                  for i, v in enumerate(means.values())] + ["", "", ""])
    head = (["family"] + [f"{label} (target >= {target:+.1f})" for label, _, _, target in CHECKS]
            + ["in-place MAC-epochs / scratch (target <= 0.80)"])
    return rows_to_markdown(head, out, right=range(1, 6))


# The selection variants of the ablation: (label, in-place run, retrained run).
BUDGETS = (("half per layer, half shared; relative values (default)", "energy", "retrained"),
           ("half per resolution, half shared; relative values", "energy-resolution-half",
            "retrained-resolution-half"),
           ("half per resolution, half shared; eigenvalues", "energy-lambda",
            "retrained-lambda"),
           ("one for the network; eigenvalues", "energy-network", "retrained-network"),
           ("one per resolution; eigenvalues", "energy-resolution", "retrained-resolution"))


def _paired(by_seed, base, key):
    """Per seed present in both, ``100 * (run - base)`` of ``key``."""
    return [100 * (by_seed[s][key] - base[s][key]) for s in sorted(set(by_seed) & set(base))]


def families_budgets(results):
    """Per family and budget variant: the in-place run against uniform widening in place
    and the found architecture against scratch (validation, paired by seed, points), and
    both on the test images; then each variant's mean over families (validation)."""
    runs = _by_family(load(results, "growth_families.json")["runs"])
    out, val = [], {}   # val: {label: {family: {part: mean validation difference}}}
    for family, by in runs.items():
        for label, grown, found in BUDGETS:
            if grown not in by:
                continue
            cells = [family, label]
            for part, run, base in (("in place", grown, "uniform"), ("found", found, "scratch")):
                for key in ("val", "test"):
                    diff = _paired(by.get(run, {}), by.get(base, {}), key)
                    cells.append(_diff_cell(diff))
                    if key == "val" and diff:
                        val.setdefault(label, {}).setdefault(family, {})[part] = float(
                            np.mean(diff))
            out.append(cells)
    for label, families in val.items():
        cells = []
        for part in ("in place", "found"):
            means = [v[part] for v in families.values() if part in v]
            cells.append(f"{np.mean(means):+.2f} pt ({len(means)} families)" if means else "")
        out.append(["mean over families", label, cells[0], "", cells[1], ""])
    out.extend(_criterion_rows(val))
    head = ["family", "budgets; values", "in place - uniform in place, val", "(test)",
            "found - scratch, val", "(test)"]
    return rows_to_markdown(head, out, right=range(2, 6))


def _criterion_rows(per_family):
    """Per variant, the choice's criterion on validation: the mean over families of each
    family's mean of its two differences, the worst family's, and the smallest single
    difference of any family."""
    rows = []
    for label, families in per_family.items():
        both = {f: float(np.mean(list(v.values()))) for f, v in families.items() if len(v) == 2}
        if not both:
            continue
        worst = min(both, key=both.get)
        least = min(((d, f, part) for f, v in families.items() if len(v) == 2
                     for part, d in v.items()))
        rows.append(["criterion (mean of the two, val)", label,
                     f"{np.mean(list(both.values())):+.2f} pt over families", "",
                     f"worst {worst} {both[worst]:+.2f} pt",
                     f"smallest {least[1]} {least[2]} {least[0]:+.2f} pt"])
    return rows


def _by_family(runs):
    """``{family: {method: {seed: run}}}``."""
    by = {}
    for r in runs:
        by.setdefault(r["family"], {}).setdefault(r["method"], {})[r["seed"]] = r
    return by


def _diff_cell(diff):
    if not diff:
        return ""
    std = f" ± {np.std(diff, ddof=1):.2f}" if len(diff) > 1 else ""
    return f"{np.mean(diff):+.2f}{std} (n={len(diff)})"


SUMMARY = (("scratch", "target width from scratch"), ("energy", "grown in place"),
           ("uniform", "uniform widening in place"), ("retrained", "found architecture, retrained"))


def families_summary(results, name="growth_families.json"):
    """Per family: test accuracy of the four runs that matter, and their MACs
    (``name``: the results file)."""
    runs = load(results, name)["runs"]
    key = "test" if runs and "test" in runs[0] else "val"
    out = []
    for family in dict.fromkeys(r["family"] for r in runs):
        cells, macs = [family], []
        for method, _ in SUMMARY:
            rs = [r for r in runs if (r["family"], r["method"]) == (family, method)]
            cells.append(ms([r[key] for r in rs]) if rs else "")
            macs.append(f"{np.mean([r['macs'] for r in rs]) / 1e6:.2f} M" if rs else "-")
        out.append(cells + [" / ".join(macs)])
    head = ["family"] + [label for _, label in SUMMARY] + ["MACs (same order)"]
    return rows_to_markdown(head, out, right=range(1, 6))


def _curve(by):
    """The width multiplier's ``[(MACs, mean test accuracy, n)]`` by MACs: ``scratch`` and
    every ``width-<w>`` row."""
    points = [(float(np.mean([r["macs"] for r in runs.values()])),
               float(np.mean([r["test"] for r in runs.values()])), len(runs))
              for method, runs in by.items() if method == "scratch" or method.startswith("width-")]
    return sorted(points)


def _macs_for(curve, accuracy):
    """The MACs at which the width multiplier's curve (linear between its points) reaches
    ``accuracy``, as text: beyond its ends, the end it passes."""
    macs, acc = [p[0] for p in curve], [p[1] for p in curve]
    if accuracy > max(acc):
        return f"> {macs[int(np.argmax(acc))] / 1e6:.2f} M"
    if accuracy < min(acc):
        return f"< {macs[int(np.argmin(acc))] / 1e6:.2f} M"
    for (m0, a0), (m1, a1) in zip(zip(macs, acc), zip(macs[1:], acc[1:])):
        if min(a0, a1) <= accuracy <= max(a0, a1) and a0 != a1:
            return f"{(m0 + (accuracy - a0) / (a1 - a0) * (m1 - m0)) / 1e6:.2f} M"
    return f"{macs[int(np.argmin(np.abs(np.array(acc) - accuracy)))] / 1e6:.2f} M"


def families_frontier(results, name="growth_families.json", curve_from=None):
    """Per family: the width multiplier's curve (test accuracy at each width's MACs, means
    over seeds), and for the grown network and the found architecture their accuracy and
    MACs and the MACs at which the curve reaches that accuracy (``name``: the results
    file; ``curve_from``: another results file of the same protocol whose ``width-<w>``
    runs, which no split rule touches, complete the curve where ``name`` has none)."""
    runs = load(results, name)["runs"]
    if curve_from:
        runs = report.with_curve(runs, load(results, curve_from)["runs"])
    out = []
    for family, by in _by_family(runs).items():
        curve = _curve(by)
        if len(curve) < 2:
            continue
        cells = [family, " · ".join(f"{m / 1e6:.2f} M: {a:.4f} (n={n})" for m, a, n in curve)]
        for run in ("energy", "retrained"):
            runs = by.get(run, {})
            if not runs:
                cells += ["", ""]
                continue
            acc = float(np.mean([r["test"] for r in runs.values()]))
            macs = float(np.mean([r["macs"] for r in runs.values()]))
            cells += [f"{acc:.4f} at {macs / 1e6:.2f} M (n={len(runs)})", _macs_for(curve, acc)]
        out.append(cells)
    head = ["family", "width multiplier from scratch (MACs: test accuracy)", "grown in place",
            "width multiplier's MACs at that accuracy", "found architecture, retrained",
            "width multiplier's MACs at that accuracy"]
    return rows_to_markdown(head, out, right=range(2, 6))


def families_reach(results):
    """Per family, the default stage's LOBPCG passes and cost (in epochs of 15 000 images)
    when the estimate waits for every candidate (``growth_families.json``'s energy runs) and
    when it waits only for the units the knapsack could pick (``probe_reach.json``), and
    whether the runs' accuracies are the same."""
    old = load(results, "growth_families.json")
    new = load(results, "probe_reach.json")
    out = []
    for family, by in _by_family(new["runs"]).items():
        mine = by.get("energy", {})
        before = {r["seed"]: r for r in old["runs"]
                  if r["family"] == family and r["method"] == "energy-resolution-half"
                  and r["seed"] in mine}
        cells = [family, str(len(mine))]
        for runs in (list(before.values()), list(mine.values())):
            passes = [st["passes"] for r in runs for st in r["stages"]]
            cost = report.stage_costs(runs, new["settings"]["train_examples"])
            cells += [f"{np.mean(passes):.2f}", f"{np.mean(cost):.2f} / {np.max(cost):.2f}"]
        same = all(before[s][k] == mine[s][k] for s in mine for k in ("val", "test"))
        cells.append("yes" if same else "no")
        out.append(cells)
    head = ["family", "seeds", "passes, every candidate",
            "stage cost, every candidate (mean / max)",
            "passes, within reach", "stage cost, within reach (mean / max)",
            "same accuracies"]
    return rows_to_markdown(head, out, right=range(1, 6))


def eigen_exact(results):
    """Per family and seed, the default estimate of a first stage against exact eigenvalues
    (``eigen_exact.json``): passes, the units within the knapsack's reach, how many are
    more than 5 % from exact, the largest error, and the choice's Jaccard index against the
    exact values', with and without the relative floor."""
    data = load(results, "eigen_exact.json")
    out = []
    for r in sorted(data["runs"], key=lambda r: (r["family"], r["seed"])):
        cells = [r["family"], str(r["seed"]), str(r["default"]["within_reach"])]
        for k in ("default", "no_floor"):
            e = r[k]
            cells += [str(e["passes"]), str(e["over_5pct"]), f"{100 * e['max_error']:.1f} %",
                      f"{e['jaccard']:.2f}"]
        out.append(cells)
    head = ["family", "seed", "units within reach",
            "passes", "> 5 % off", "largest error", "choice's Jaccard",
            "passes, no floor", "> 5 % off, no floor", "largest error, no floor",
            "choice's Jaccard, no floor"]
    return rows_to_markdown(head, out, right=range(1, 11))


def surrogate_beta(results):
    """Per ReLU family, seed and surrogate sharpness, a first stage's choice
    (``surrogate_beta.json``): units chosen, the Jaccard index between the choices on the
    estimation (768) and held-out (256) images, and against the default sharpness's."""
    data = load(results, "surrogate_beta.json")
    out = []
    for r in sorted(data["runs"], key=lambda r: (r["family"], r["seed"])):
        for beta, b in sorted(r["betas"].items(), key=lambda kv: float(kv[0])):
            out.append([r["family"], str(r["seed"]), f"{float(beta):g}", str(b["chosen"]),
                        f"{b['est_vs_held']:.2f}", f"{b['vs_default']:.2f}"])
    head = ["family", "seed", "surrogate_beta", "units chosen",
            "Jaccard, estimation vs held-out images", "Jaccard against beta = 3"]
    return rows_to_markdown(head, out, right=range(1, 6))


def estimation_size(results):
    """Per family and sample size, how far a first stage's choice depends on its
    estimation sample (``estimation_size.json``): units chosen on each of two disjoint
    samples and the Jaccard index between the two choices, over seeds; then the mean
    over the families."""
    runs = load(results, "estimation_size.json")["runs"]
    sizes = sorted({n for r in runs for n in r["sizes"]}, key=int)
    out, by_size = [], {n: [] for n in sizes}
    for family in dict.fromkeys(r["family"] for r in runs):
        mine = [r for r in runs if r["family"] == family]
        for n in sizes:
            jac = [r["sizes"][n]["jaccard"] for r in mine if n in r["sizes"]]
            chosen = [c for r in mine if n in r["sizes"] for c in r["sizes"][n]["chosen"]]
            by_size[n].append(np.mean(jac))
            out.append([family, n, f"{np.mean(chosen):.1f}", ms(jac, 2)])
    for n in sizes:
        out.append(["mean over families", n, "", f"{np.mean(by_size[n]):.2f}"])
    head = ["family", "images per sample", "units chosen (mean)",
            "Jaccard between the two samples' choices"]
    return rows_to_markdown(head, out, right=range(1, 4))


def _runs_by_key(results, name):
    """``{(family, method, seed): run}`` of the results file ``name``."""
    return {(r["family"], r["method"], r["seed"]): r for r in load(results, name)["runs"]}


def _defaults_for(results):
    """``{(family, method, seed): run}`` of the defaults: ``probe_avx2_default.json``
    (validation runs on the AVX2 CPU model of the old_scale screening) where it has the
    run, else ``growth_families.json``."""
    return {**_runs_by_key(results, "growth_families.json"),
            **_runs_by_key(results, "probe_avx2_default.json")}


def _default_run(base, run):
    """The run of ``base`` that ``run`` of the old_scale screening pairs with (None
    without one): the same family, method and seed, ``scratch-rule`` with ``scratch``."""
    method = "scratch" if run["method"] == "scratch-rule" else run["method"]
    return base.get((run["family"], method, run["seed"]))


def families_old_scale(results):
    """The screening of ``SplitRule(old_scale=0.7)``: each run of ``probe_old07.json``
    against the run with the defaults of the same family, method and seed (from
    ``probe_avx2_default.json`` on the same CPU model where there is one, else from
    ``growth_families.json``, whose CPU the last column names); validation accuracy.
    ``scratch-rule`` (the shrink alone, at the target width) pairs with ``scratch``."""
    base = _defaults_for(results)
    out = []
    for r in load(results, "probe_old07.json")["runs"]:
        b = _default_run(base, r)
        if b is None:
            continue
        same = "same" if b.get("cpu") == r.get("cpu") else "other"
        out.append([r["family"], r["method"], str(r["seed"]), f"{b['val']:.4f}",
                    f"{r['val']:.4f}", f"{100 * (r['val'] - b['val']):+.2f} pt", same])
    head = ["family", "run", "seed", "defaults (val)", "old_scale 0.7 (val)", "difference",
            "CPU model of the defaults' run"]
    return rows_to_markdown(head, sorted(out), right=range(2, 6))


def families_old_scale_summary(results):
    """Per family and run of ``probe_old07.json``: the mean ± sample std over seeds (n) of
    the difference to the defaults (as :func:`families_old_scale` pairs them), of the run's
    lead over the target width from scratch (the plain one, paired the same way) and over
    it with the same shrinks (``scratch-rule``, same seed) where that control ran;
    validation, points."""
    base = _defaults_for(results)
    old = load(results, "probe_old07.json")["runs"]
    control = {(r["family"], r["seed"]): r["val"] for r in old if r["method"] == "scratch-rule"}
    gains, leads, plain = {}, {}, {}
    for r in old:
        b = _default_run(base, r)
        scratch = base.get((r["family"], "scratch", r["seed"]))
        key = (r["family"], r["method"])
        if b is not None:
            gains.setdefault(key, []).append(100 * (r["val"] - b["val"]))
        if r["method"] != "scratch-rule" and (r["family"], r["seed"]) in control:
            leads.setdefault(key, []).append(100 * (r["val"] - control[(r["family"], r["seed"])]))
        if r["method"] != "scratch-rule" and scratch is not None:
            plain.setdefault(key, []).append(100 * (r["val"] - scratch["val"]))
    out = [[family, method, _diff_cell(gains[(family, method)]),
            _diff_cell(plain.get((family, method))), _diff_cell(leads.get((family, method)))]
           for family, method in sorted(gains)]
    head = ["family", "run", "old_scale 0.7 - defaults (val, pt)",
            "old_scale 0.7 - scratch (val, pt)", "old_scale 0.7 - scratch-rule (val, pt)"]
    return rows_to_markdown(head, out, right=range(2, 5))


def families_weight_decay(results):
    """The runs with weight decay (``probe_wd*.json``; those of ``probe_wd_old07*`` with
    ``old_scale=0.7``) against the same run without (``probe_avx2_default.json``,
    ``probe_old07.json``): the same family, method, seed and CPU model; validation."""
    plain = {"old_scale 1": _runs_by_key(results, "probe_avx2_default.json"),
             "old_scale 0.7": _runs_by_key(results, "probe_old07.json")}
    out = []
    for name in sorted(n for n in os.listdir(results)
                       if n.startswith("probe_wd") and n.endswith(".json")):
        rule = "old_scale 0.7" if name.startswith("probe_wd_old07") else "old_scale 1"
        decay = load(results, name)["settings"]["weight_decay"]
        for key, r in sorted(_runs_by_key(results, name).items()):
            p = plain[rule].get(key)
            out.append([key[0], key[1], str(key[2]), rule if key[1] != "scratch" else "",
                        f"{decay:g}", f"{p['val']:.4f}" if p else "", f"{r['val']:.4f}",
                        f"{100 * (r['val'] - p['val']):+.2f} pt" if p else ""])
    head = ["family", "run", "seed", "split rule", "weight decay", "without (val)",
            "with (val)", "difference"]
    return rows_to_markdown(head, sorted(out, key=lambda row: (row[3], row[1], row[4])),
                            right=(2, 4, 5, 6, 7))
