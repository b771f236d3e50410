"""Tables and the plot of the network-family benchmark (``growth_families.py``), from its
results JSON alone (no TensorFlow): per family and method the accuracies (mean, sample std
and n over seeds), MACs, MAC-epochs against scratch, a stage's cost and the selection's
stability, and the paired differences (in-place penalty, selection gains).
"""

import json
import os

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

GROWING = ("energy", "energy-network", "energy-resolution", "energy-resolution-half",
           "energy-lambda", "uniform", "random", "scratch-rule")
METHODS = ("energy", "energy-network", "energy-resolution", "energy-resolution-half",
           "energy-lambda", "uniform", "random", "retrained", "retrained-network",
           "retrained-resolution", "retrained-resolution-half", "retrained-lambda", "scratch")
# The growing run whose found architecture each retrained run trains from scratch.
RETRAINS = {"retrained": "energy", "retrained-network": "energy-network",
            "retrained-resolution": "energy-resolution",
            "retrained-resolution-half": "energy-resolution-half",
            "retrained-lambda": "energy-lambda"}


def _stats(values):
    """``(mean, sample std, n)``."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return float(values.mean()), std, int(len(values))


def stage_costs(rs, train_examples, epoch_examples=15_000):
    """Every growth stage's seconds in epochs of ``epoch_examples`` images of the network it
    grew (its epoch just before the stage, scaled from ``train_examples``)."""
    out = []
    for r in rs:
        if "epoch_seconds" not in r:
            continue
        for epoch, st in zip(r.get("stage_epochs", []), r.get("stages", [])):
            seconds = r["epoch_seconds"][epoch - 1] * epoch_examples / train_examples
            out.append(st["seconds"] / seconds)
    return out


def table(runs, train_examples=10_000):
    """One row per (family, method): accuracies (mean, sample std, n), MACs, MAC-epochs
    against scratch, stage cost and stability, and per family the penalty and gains
    (paired by seed)."""
    rows = []
    keys = [k for k in ("val", "test") if runs and k in runs[0]]
    for family in dict.fromkeys(r["family"] for r in runs):
        mine = [r for r in runs if r["family"] == family]
        scratch = {r["seed"]: r for r in mine if r["method"] == "scratch"}
        by_method = {}
        for r in mine:
            by_method.setdefault(r["method"], []).append(r)
        for method, rs in by_method.items():
            row = {"family": family, "method": method,
                   "macs": float(np.mean([r["macs"] for r in rs])),
                   "params": float(np.mean([r["params"] for r in rs]))}
            ratios = [r["mac_epochs"] / scratch[r["seed"]]["mac_epochs"] for r in rs
                      if r["seed"] in scratch]
            row["mac_epochs_vs_scratch"] = float(np.mean(ratios)) if ratios else None
            cost = stage_costs(rs, train_examples)
            row["stage_epochs_15k"] = (float(np.mean(cost)), float(np.max(cost))) if cost \
                else None
            jac = [st["stability"]["jaccard"] for r in rs for st in r.get("stages", [])
                   if st.get("stability") and st["stability"].get("jaccard") is not None]
            row["stability"] = float(np.mean(jac)) if jac else None
            for k in keys:
                row[k] = _stats([r[k] for r in rs])
            rows.append(row)
        pairs = {"in_place_penalty": ("uniform", "scratch"),
                 "selection_gain_in_place": ("energy", "uniform"),
                 "energy_vs_random": ("energy", "random"),
                 "found_vs_scratch": ("retrained", "scratch"),
                 "in_place_vs_scratch": ("energy", "scratch"),
                 "network_budget_in_place_vs_uniform": ("energy-network", "uniform"),
                 "network_budget_found_vs_scratch": ("retrained-network", "scratch"),
                 "resolution_budgets_in_place_vs_uniform": ("energy-resolution", "uniform"),
                 "resolution_budgets_found_vs_scratch": ("retrained-resolution", "scratch"),
                 "half_per_resolution_in_place_vs_uniform": ("energy-resolution-half",
                                                             "uniform"),
                 "half_per_resolution_found_vs_scratch": ("retrained-resolution-half",
                                                          "scratch"),
                 "lambda_values_in_place_vs_uniform": ("energy-lambda", "uniform"),
                 "lambda_values_found_vs_scratch": ("retrained-lambda", "scratch")}
        for label, (a, b) in pairs.items():
            ra = {r["seed"]: r for r in by_method.get(a, [])}
            rb = {r["seed"]: r for r in by_method.get(b, [])}
            seeds = sorted(set(ra) & set(rb))
            if seeds:
                rows.append({"family": family, "method": label, "paired": True,
                             **{k: _stats([ra[s][k] - rb[s][k] for s in seeds]) for k in keys}})
    return rows


def print_table(rows):
    keys = [k for k in ("val", "test") if rows and k in rows[0]]
    print(f"{'family':<12}{'method / difference':<38}{'MACs':>11}{'MAC-ep':>8}"
          + "".join(f"{k + ' (mean ± std, n)':>26}" for k in keys)
          + f"{'stage ep (15k)':>16}{'Jaccard':>8}")
    for r in rows:
        macs = f"{r['macs']:>11,.0f}" if "macs" in r else " " * 11
        ratio = r.get("mac_epochs_vs_scratch")
        ratio = f"{ratio:>8.2f}" if ratio is not None else " " * 8
        cells = "".join(f"{r[k][0]:>+13.4f} ± {r[k][1]:.4f} n={r[k][2]}" if r.get("paired")
                        else f"{r[k][0]:>13.4f} ± {r[k][1]:.4f} n={r[k][2]}" for k in keys)
        cost = r.get("stage_epochs_15k")
        cost = f"{cost[0]:>9.2f}/{cost[1]:.2f}" if cost else " " * 14
        jac = r.get("stability")
        jac = f"{jac:>8.2f}" if jac is not None else ""
        print(f"{r['family']:<12}{r['method']:<38}{macs}{ratio}{cells}  {cost}{jac}")


def screening(prefix, results=RESULTS):
    """Markdown: one line per run of every ``<prefix>*.json`` in ``results``, with its
    seed and settings."""
    lines = ["| family | run | seed | epochs | split rule | growth settings | MACs | "
             "val accuracy | LOBPCG passes per stage | file |",
             "|---|---|---:|---:|---|---|---:|---:|---|---|"]
    for name in sorted(os.listdir(results)):
        if not (name.startswith(prefix) and name.endswith(".json")):
            continue
        with open(os.path.join(results, name)) as f:
            result = json.load(f)
        rule, grow = result["settings"].get("rule"), result["settings"].get("grow")
        # Files without "default_rule" predate the default rule's old_scale.
        default = (result["settings"].get("default_rule") or {"old_scale": 1.0})["old_scale"]
        rule = rule or f"default (old_scale {default:g})"
        grow = (grow or "default") + (f"; GrowingModel {result['settings']['model']}"
                                      if result["settings"].get("model") else "")
        decay = result["settings"].get("weight_decay")
        epochs = f"{result['settings']['epochs']}" + (f", weight decay {decay:g}" if decay else "")
        for r in sorted(result["runs"], key=lambda r: (r["family"], r["method"], r["seed"])):
            growing = r["method"] in GROWING
            passes = [st.get("passes") for st in r.get("stages", [])]
            lines.append(
                f"| {r['family']} | {r['method']} | {r['seed']} | "
                f"{epochs} | {rule if growing else ''} | "
                f"{grow if growing else ''} | {r['macs']:,} | {r['val']:.4f} | "
                f"{passes if any(p is not None for p in passes) else ''} | {name} |")
    return "\n".join(lines)


def markdown(rows):
    """The table as Markdown (for the docs): one line per row, differences signed."""
    keys = [k for k in ("val", "test") if rows and k in rows[0]]
    head = ("| family | run | MACs | MAC-epochs / scratch | "
            + " | ".join(f"{k} accuracy (mean ± std, n)" for k in keys)
            + " | stage, epochs of 15k (mean / max) | Jaccard |")
    lines = [head, "|---|---" + "|---:" * (head.count("|") - 3) + "|"]
    for r in rows:
        sign = "+" if r.get("paired") else ""
        cells = " | ".join(f"{r[k][0]:{sign}.4f}" + (f" ± {r[k][1]:.4f}" if r[k][2] > 1 else "")
                           + f" (n={r[k][2]})" for k in keys)
        macs = f"{r['macs']:,.0f}" if "macs" in r else ""
        ratio = r.get("mac_epochs_vs_scratch")
        cost = r.get("stage_epochs_15k")
        jac = r.get("stability")
        lines.append(f"| {r['family']} | {r['method']} | {macs} | "
                     f"{'' if ratio is None else f'{ratio:.2f}'} | {cells} | "
                     f"{'' if not cost else f'{cost[0]:.2f} / {cost[1]:.2f}'} | "
                     f"{'' if jac is None else f'{jac:.2f}'} |")
    return "\n".join(lines)


def with_curve(runs, other):
    """``runs`` and the ``width-<w>`` runs of ``other`` (another results file's runs, same
    protocol: no split rule touches a width trained from scratch) of the families and
    widths that ``runs`` lacks: the width multiplier's curve completed."""
    own = {(r["family"], r["method"]) for r in runs}
    families = {family for family, _ in own}
    return runs + [r for r in other if r["method"].startswith("width-")
                   and r["family"] in families and (r["family"], r["method"]) not in own]


def plot(runs, rows, tag):
    """Accuracy against MACs per family: the width multiplier's curve and the other rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "test" if runs and "test" in runs[0] else "val"
    families = list(dict.fromkeys(r["family"] for r in rows))
    if not families:
        return
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        mine = [r for r in rows if r["family"] == family and not r.get("paired")]
        curve = sorted((r for r in mine if r["method"] == "scratch"
                        or r["method"].startswith("width-")), key=lambda r: r["macs"])
        ax.errorbar([r["macs"] / 1e6 for r in curve], [r[key][0] for r in curve],
                    yerr=[r[key][1] for r in curve], fmt="-", color="grey", capsize=2,
                    label="width multiplier")
        for r in mine:
            if r not in curve:
                ax.errorbar(r["macs"] / 1e6, r[key][0], yerr=r[key][1], fmt="o", capsize=3,
                            label=r["method"])
        ax.set_title(family)
        ax.set_xlabel("MACs (millions)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"CIFAR-10 {key} accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, tag + ".png"), dpi=110)
