"""The Markdown tables of README.md and docs/, each made from benchmarks/results/*.json.

Every function takes the results folder and returns one table (``benchmarks/tables.py``
holds the registry that names them). Accuracies are ``mean ± sample std (n=seeds)``.
Nothing here loads TensorFlow.
"""

import json
import os

import numpy as np


HERE = os.path.dirname(os.path.abspath(__file__))


def load(results, name):
    with open(os.path.join(results, name)) as f:
        return json.load(f)


def ms(values, digits=4):
    """``mean ± sample std (n=k)`` of ``values`` (ddof 1; no std for one value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return f"{values.mean():.{digits}f} (n={len(values)})"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f} (n={len(values)})"


def rows_to_markdown(head, rows, right=()):
    """A Markdown table: ``head`` names, ``rows`` of cells, ``right``-aligned columns."""
    align = ["---:" if i in right else "---" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- costs of the machinery -----------------------------------------------------------

def _passes(solver, max_passes):
    if solver["reached"]:
        return str(solver["passes"])
    return f"> {max_passes} ({solver['fraction_within']:.0%} of neurons)".replace("%", " %")


def splitting_cost(results):
    data = load(results, "splitting_cost.json")
    out = []
    for r in data["rows"]:
        eq = r.get("equal_accuracy")
        peaks = [r.get(f"peak_bytes_{k}") for k in ("train", "fast", "exact")]
        out.append([
            r["width"], f"{r['macs']:,}", f"{r['train_plain'] * 1000:.1f}",
            f"{r['growing_over_plain']:.3f}", f"{r['fast_over_train']:.3f}",
            f"{r['exact_over_fast']:.1f}" if "exact_over_fast" in r else "-",
            " / ".join("-" if p is None else f"{p / 2 ** 20:,.0f}" for p in peaks),
            _passes(eq["lobpcg"], data["max_passes"]) if eq else "-",
            f"{eq['lobpcg']['exact_over_this_per_neuron']:.2f}" if eq else "-",
            _passes(eq["rmsprop"], data["max_passes"]) if eq else "-"])
    head = ["width", "MACs", "train step (ms)", "GrowingModel / plain", "fast / train step",
            "exact / fast step", "peak MiB train / fast / exact", "LOBPCG passes to 2 %",
            "exact / LOBPCG per neuron-eigenpair", "RMSprop passes to 2 %"]
    return rows_to_markdown(head, out, right=range(10))


def data_throughput(results):
    rows = load(results, "data_throughput.json")["rows"]
    labels = (("raw_decode", "raw JPEG decode (parallel `decode_jpeg`, nothing else)"),
              ("pipeline", "training pipeline (decode, pad-crop-flip, normalise, batch)"),
              ("pipeline_cached", "training pipeline, cached decoded images"),
              ("train_step", "training step of the CIFAR MobileNetV1 (width 32)"))
    out = [[label, f"{rows[k]:,.0f}", f"{rows[k] / rows['train_step']:.1f}"]
           for k, label in labels]
    return rows_to_markdown(["what (CIFAR-10, batch 128)", "images/s", "x training step"],
                            out, right=(1, 2))


def selection(results):
    out = [[f"{r['n']:,}", r["solver"], f"{r['value']:.6g}", f"{r['budget_used']:.4f}",
            f"{r['seconds']:.3f}", f"{r['lp_bound']:.6g}"]
           for r in load(results, "selection.json")["rows"]]
    head = ["candidates", "solver", "sum(lambda)", "budget used", "seconds", "LP bound"]
    return rows_to_markdown(head, out, right=(0, 2, 3, 4, 5))


def keras_applications(results):
    out = [[r["model"], f"{r['macs']:,}", r["splittable_layers"], f"{r['wrap_s']:.1f}",
            f"{r['eigenpairs_s']:.1f}", f"{r['grow_s']:.1f} ({r['macs_after'] / r['macs']:.2f}x)",
            f"{r['save_load_s']:.1f}", f"{r['split_change']:.1e}",
            f"{r['loss_before']:.4f} -> {r['loss_after']:.4f}"]
           for r in load(results, "keras_applications.json")["rows"]]
    head = ["model", "MACs", "splittable layers", "wrap s", "eigenpairs s",
            "grow s (MACs after)", "save+load s", "eps=0 softmax change",
            "held-out loss before -> after"]
    return rows_to_markdown(head, out, right=range(1, 9))


# --- MobileNetV1-CIFAR (cifar10_growth.py and its studies) ----------------------------

MBV1_LABELS = {
    "energy": "energy-aware, in place", "vanilla": "vanilla (lambda only), in place",
    "random": "random units, in place", "retrained": "found architecture, retrained",
    "width": "width multiplier (width 19), from scratch", "seed": "seed width 8, from scratch",
    "energy-copy": "papers' split: `theta +/- 0.01 v`, `w/2` each, slots copied (`\"copy\"`)",
    "energy-anti0": "antisymmetric outgoing shares `w/2 +/- z`, no eigen step",
    "energy-antisym": "the same with the relative eigen step `0.1 norm(theta) v` "
                      "(`\"antisymmetric\"`)",
    "energy-fresh": "parent kept, fresh second child, zero outgoing weights and slots "
                    "(`\"fresh\"`, `fresh_scale=1`)"}


def _by_method(runs):
    out = {}
    for r in runs:
        out.setdefault(r["method"], []).append(r)
    return out


def _mbv1_rows(data, methods, extra=(), labels=None):
    """Rows of a ``cifar10_growth.py`` JSON: label, MACs, params, accuracies, twins,
    MAC-epochs against the width multiplier."""
    by = _by_method(data["runs"])
    keys = [k for k in ("val", "test") if k in data["runs"][0]]
    width = np.mean([r["mac_epochs"] for r in by["width"]]) if "width" in by else None
    out = []
    for method in (m for m in methods if m in by):
        rs = by[method]
        ratio = np.mean([r["mac_epochs"] for r in rs]) / width if width else None
        out.append([{**MBV1_LABELS, **(labels or {})}.get(method, method),
                    *[e(rs) for e in extra],
                    f"{np.mean([r['macs'] for r in rs]):,.0f}",
                    f"{np.mean([r['params'] for r in rs]):,.0f}",
                    *[ms([r[k] for r in rs]) for k in keys],
                    f"{np.mean([r['twin_fraction'] for r in rs]):.1%}",
                    "-" if ratio is None else f"{ratio:.2f}"])
    return keys, out


def _mbv1_table(data, methods, first=("method",), labels=None):
    keys, out = _mbv1_rows(data, methods, labels=labels)
    head = [*first, "MACs", "params", *[f"{k} accuracy" for k in keys], "twins",
            "MAC-epochs / width"]
    return rows_to_markdown(head, out, right=range(len(first), len(head)))


def mbv1(results):
    return _mbv1_table(load(results, "cifar10_growth.json"),
                       ("energy", "vanilla", "random", "retrained", "width", "seed"))


def mbv1_split_rules(results):
    return _mbv1_table(load(results, "cifar10_growth_rules.json"),
                       ("energy-copy", "energy-anti0", "energy", "energy-fresh", "retrained",
                        "width"), first=("children (energy-aware, in place)",),
                       labels={"energy": MBV1_LABELS["energy-antisym"],
                               "retrained": "the `\"antisymmetric\"` runs' architecture, "
                                            "retrained"})


def mbv1_eigen_tol(results):
    """The MobileNetV1 runs with LOBPCG stopped at two tolerances (the 0.01 runs are in
    ``archive/``: an ablation, not the current configuration)."""
    lines = []
    for name in ("archive/cifar10_growth_eigen_tol_0.01.json", "cifar10_growth.json"):
        data = load(results, name)
        tol = "0.01" if "0.01" in name else "0.2"
        keys, rows = _mbv1_rows(data, ("energy", "vanilla", "retrained"),
                                extra=(lambda rs, t=tol: t,))
        lines += rows
    lines.sort(key=lambda r: list(MBV1_LABELS.values()).index(r[0]))
    head = ["method", "`eigen_tol`", "MACs", "params", *[f"{k} accuracy" for k in keys],
            "twins", "MAC-epochs / width"]
    return rows_to_markdown(head, lines, right=range(1, len(head)))


def mbv1_grow_every(results):
    """Growth after epochs 2, 4, 6 against 3, 6, 9 (both with ``eigen_tol=0.01``)."""
    every2 = load(results, "ablate_every2.json")
    every3 = load(results, "archive/cifar10_growth_eigen_tol_0.01.json")
    width = np.mean([r["mac_epochs"] for r in every3["runs"] if r["method"] == "width"])
    out = []
    for label, data in (("after epochs 3, 6, 9", every3), ("after epochs 2, 4, 6", every2)):
        rs = [r for r in data["runs"] if r["method"] == "energy"]
        out.append([label, f"{np.mean([r['macs'] for r in rs]):,.0f}",
                    ms([r["val"] for r in rs]),
                    f"{np.mean([r['mac_epochs'] for r in rs]) / width:.2f}"])
    rs = [r for r in every3["runs"] if r["method"] == "width"]
    out.append(["width 19 from scratch", f"{np.mean([r['macs'] for r in rs]):,.0f}",
                ms([r["val"] for r in rs]), "1.00"])
    return rows_to_markdown(["growth (energy-aware, in place)", "MACs", "val accuracy",
                             "MAC-epochs / width"], out, right=(1, 2, 3))


def _stage_cells(sts):
    def col(key):
        return [st[key] for st in sts]
    part = {k: np.mean([st["parts"][k] for st in sts]) for k in ("eigen", "select", "split")}
    return [f"{np.mean(col('macs_before')):,.0f}",
            f"{ms(col('grow_seconds'), 1)} ({part['eigen']:.1f} / {part['select']:.1f} / "
            f"{part['split']:.1f})",
            f"{np.mean(col('passes')):.1f}", ms(col("retrace_seconds"), 1),
            f"{ms(col('epochs_45000'), 2)} ({np.mean(col('epochs_with_retrace_45000')):.2f})",
            f"{ms(col('epochs_10000'), 2)} ({np.mean(col('epochs_with_retrace_10000')):.2f})"]


def stage_cost(results):
    runs = load(results, "growth_stage_cost.json")["runs"]
    out = []
    for k in sorted({st["stage"] for r in runs for st in r["stages"]}):
        sts = [st for r in runs for st in r["stages"] if st["stage"] == k]
        out.append([k + 1, *_stage_cells(sts)])
    head = ["stage", "MACs before", "`grow` seconds (eigen / select / split)",
            "LOBPCG passes", "retrace of the training step, s",
            "epochs of 45 000 images (with retrace)", "epochs of 10 000 images (with retrace)"]
    return rows_to_markdown(head, out, right=range(1, 7))


def eigen_tol(results):
    data = load(results, "eigen_tol.json")
    tols = [str(t) for t in data["settings"]["tols"]]
    out = []
    for stage in sorted({r["stage"] for r in data["rows"]}):
        rs = [r for r in data["rows"] if r["stage"] == stage]
        same = [r["tols"][tols[-1]]["jaccard_vs_tightest"] for r in rs]
        other = [r["jaccard_set_a_vs_b"] for r in rs]
        out.append([stage + 1,
                    " / ".join(f"{np.mean([r['tols'][t]['passes'] for r in rs]):.1f}"
                               for t in tols),
                    f"{np.mean(same):.2f} ({min(same):.2f}-{max(same):.2f})",
                    f"{np.mean(other):.2f} ({min(other):.2f}-{max(other):.2f})"])
    head = ["stage", f"passes at {' / '.join(tols)}",
            f"chosen units, {tols[-1]} against {tols[0]} (same images)",
            f"chosen units, two samples (both at {tols[0]})"]
    return rows_to_markdown(head, out, right=(0, 1, 2, 3))


# --- the digits demo (keras-split demo) and its protocol study ------------------------

def digits_demo(results):
    data = load(results, "digits_demo.json")
    out = []
    for key in ("grown", "width", "retrained"):
        rs = [r[key] for r in data["runs"]]
        out.append([rs[0]["label"], f"{np.mean([r['macs'] for r in rs]):,.0f}",
                    ms([r["accuracy"] for r in rs])])
    return rows_to_markdown(["network (60 epochs)", "MACs", "test accuracy"], out,
                            right=(1, 2))


def digits_stages(results):
    out = [[s["stage"], s["epochs"], f"{s['macs']:,}", f"{s['test_accuracy']:.4f}",
            f"{s['test_accuracy_bn']:.4f}"]
           for s in load(results, "digits_demo.json")["first_seed_stages"]]
    head = ["stage", "epochs trained", "MACs", "test accuracy",
            "test accuracy, BatchNorm statistics re-estimated"]
    return rows_to_markdown(head, out, right=range(5))


PROTOCOLS = {"demo": "growth after epochs 2, 4, 6 of 60", "every1": "after epochs 1, 2, 3",
             "every5": "after epochs 5, 10, 15", "every10": "after epochs 10, 20, 30",
             "antisymmetric": "after epochs 2, 4, 6, `\"antisymmetric\"` children",
             "no_cap": "after epochs 2, 4, 6, no MACs cap"}


def digits_protocols(results):
    sources = (("0.2", ["digits_protocols_eigen_tol_0.2.json"]),
               ("0.01", ["digits_protocols.json", "digits_protocols_seeds3to5.json"]))
    out = []
    for tol, names in sources:
        runs = [r for name in names for r in load(results, name)["runs"]]
        for protocol, label in PROTOCOLS.items():
            rs = [r for r in runs if r["protocol"] == protocol]
            if not rs:
                continue
            cells = [ms([r[k] for r in rs]) if all(k in r for r in rs) else ""
                     for k in ("grown", "width", "retrained")]
            out.append([label, tol, f"{np.mean([r['macs'] for r in rs]):,.0f}", *cells])
    head = ["protocol", "`eigen_tol`", "MACs", "grown in place", "width 18, from scratch",
            "found architecture, retrained"]
    return rows_to_markdown(head, out, right=range(1, 6))


# --- across workers ------------------------------------------------------------------

def multi_worker_table(result):
    """One row per configuration of ``benchmarks/multi_worker.py``'s result: seconds per
    training step and per growth stage (the slowest process), and both against one
    process."""
    runs = result["runs"]
    base = runs.get("single")
    rows = []
    for name, records in runs.items():
        step = max(r["step_seconds"] for r in records)
        grow = max(r["grow_seconds"] for r in records)
        same = len({(r["n_selected"], r["macs_after"]) for r in records}) == 1
        rows.append([name, len(records), f"{step:.3f}", f"{grow:.2f}",
                     f"{step / max(r['step_seconds'] for r in base):.2f}" if base else "",
                     f"{grow / max(r['grow_seconds'] for r in base):.2f}" if base else "",
                     "yes" if same else "no"])
    return rows_to_markdown(["run", "processes", "s / training step", "s / growth stage",
                             "step vs one process", "stage vs one process",
                             "same choice in every process"], rows, right=(1, 2, 3, 4, 5))


def multi_worker(results):
    return multi_worker_table(load(results, "multi_worker.json"))


def device_costs(results):
    """Per family and budget (``device_costs.json``): measured and predicted latency of the
    grown networks, test accuracy, and the width multiplier's accuracy at that latency
    (means over seeds)."""
    out = []
    for r in load(results, "device_costs.json")["table"]:
        std = f" ± {r['test_std']:.4f}" if r["test_std"] is not None else ""
        wm = r["width_multiplier_at_that_latency"]
        out.append([r["family"], "latency" if r["method"] == "latency" else "MACs",
                    str(r["n"]), f"{r['measured_ms']:.3f}", f"{r['predicted_ms']:.3f}",
                    f"{r['test']:.4f}{std}", "" if wm is None else f"{wm:.4f}"])
    head = ["family", "budget", "n", "measured ms", "predicted ms", "test accuracy",
            "width multiplier at that measured latency"]
    return rows_to_markdown(head, out, right=range(2, 7))


def device_costs_runs(results):
    """Every latency-budget run (``device_costs.json``): its budget, each stage's predicted
    total against the same widths timed after training, and the final network."""
    out = []
    for r in sorted(load(results, "device_costs.json")["runs"],
                    key=lambda r: (r["family"], r["seed"])):
        stages = " · ".join(f"{s['predicted_ms']:.2f} / {s['measured_ms']:.2f}"
                            for s in r["stages"])
        error = 100 * (r["measured_ms"] / r["predicted_ms"] - 1)
        out.append([r["family"], str(r["seed"]), f"{r['budget_ms']:.3f}", stages,
                    f"{r['predicted_ms']:.3f}", f"{r['measured_ms']:.3f}", f"{error:+.0f} %",
                    f"{r['macs']:,}", f"{r['test']:.4f}"])
    head = ["family", "seed", "budget ms", "stages: predicted / measured ms",
            "predicted ms", "measured ms", "measured vs predicted", "MACs", "test accuracy"]
    return rows_to_markdown(head, out, right=(1, 2, 4, 5, 6, 7, 8))
