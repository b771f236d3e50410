"""Growth under a measured-latency budget against a MACs budget and the width multiplier.

On the CIFAR-10 families of ``growth_families.py`` (same protocol: 10 000 training
images, a validation split, 16 epochs, SGD Nesterov, seeded), for every family and seed:

* ``latency``: grown in place inside ``fit`` by ``GrowthCallback(data,
  cost=TFLiteLatency(), budgets={latency: L})``, where ``L`` is the latency of the
  family's target width (the main cost is the latency: each stage may add
  ``growth_ratio`` of it); each stage's prediction is compared with its model timed after
  training (nothing else running: timings taken while the input pipeline prefetches, or
  while any other job runs, are off by tens of percent);
* the MACs-budget runs (``energy``) are read from the first of ``--baselines``' results
  files of ``growth_families.py`` (made with today's default split rule, which the
  latency runs use), the width multiplier's curve (``scratch`` and ``width-<w>``, which
  no split rule touches) from the first of them that has each run; each file must have
  this protocol (it is refused otherwise), and the architectures are timed here, with
  the same interpreter settings.

Latency: the TFLite interpreter (XNNPACK), one thread, batch 1, median of 50 runs, on
this machine; the per-layer table is cached in ``benchmarks/results/latency_tables``
and its build time recorded. Absolute times are this CPU's; the comparisons are ratios
in one run.

Every finished run is written to ``benchmarks/results/<tag>.json`` as it ends and
a rerun skips it.

    python benchmarks/device_costs.py --data-dir /tmp/cifar --families mbv1_swish,mbv2_relu6
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_split as ks  # noqa: E402

from cifar10_common import (RESULTS, command_line, evaluate,  # noqa: E402
                            family_protocol_arguments, load, machine, normalised, train)
from families import FAMILIES, layer_widths, widening_plan  # noqa: E402
from growth_families import SHARED  # noqa: E402

TABLES = os.path.join(RESULTS, "latency_tables")


def latency_model(args):
    return ks.costs.TFLiteLatency(threads=1, batch_size=1, repeats=args.repeats,
                                  cache_dir=TABLES, device=args.device)


def at_widths(family, widths):
    """The family's network with ``widths`` ({layer: units}), freshly initialised: the
    seed widened (tied layers once, by their first member) to those widths."""
    fam = FAMILIES[family]
    model = ks.GrowingModel(fam.build(fam.seed_width))
    while True:   # a split at most doubles a layer: as many rounds as it takes
        plan = widening_plan(model, widths)
        if not plan:
            return model
        model.split(plan, epsilon=0.0)


class LatencyGrowth(ks.GrowthCallback):
    """GrowthCallback that records each stage's widths and predicted latency (the stage's
    ``latency_ms`` limit record); the stages' models are timed after ``fit``, on a quiet
    machine (the input pipeline prefetches while a callback runs)."""

    def __init__(self, data, **kwargs):
        super().__init__(data, **kwargs)
        self.timings = []

    def _grow(self):
        stage = super()._grow()
        if stage is not None:
            [record] = [r for r in stage.limits if r.cost == "latency_ms"]
            self.timings.append({"predicted_ms": record.after, "before_ms": record.before,
                                 "macs": ks.count_flops(self.model),
                                 "widths": layer_widths(self.model)})
        return stage


def time_architecture(family, widths, latency):
    """``{predicted_ms, measured_ms, macs}`` of the family at ``widths``."""
    model = at_widths(family, widths)
    return {"predicted_ms": latency.network_cost(model.channel_graph),
            "measured_ms": latency.measure_model(model.network),
            "macs": ks.count_flops(model)}


# The protocol settings a baselines file must share with this benchmark's runs: those of
# growth_families.py's results files but the evaluation and the growing runs' settings.
PROTOCOL = tuple(k for k in SHARED if k not in ("eval", "rule", "grow", "model"))


def baseline_runs(tags, args):
    """The ``energy``, ``scratch`` and ``width-<w>`` runs of ``growth_families.py``'s
    results files ``tags`` (first file first): ``energy`` from the first file only,
    each (family, method, seed) of the curve from the first file that has it.

    Raises:
        SystemExit: when a file's protocol differs from ``args``', or the first one was
            not made with today's default split rule.
    """
    out, seen = [], set()
    for i, tag in enumerate(tags):
        with open(os.path.join(RESULTS, tag + ".json")) as f:
            data = json.load(f)
        settings = data["settings"]
        other = {k: settings.get(k) for k in PROTOCOL if settings.get(k) != getattr(args, k)}
        if other:
            raise SystemExit(f"{tag}.json has another protocol: {other}")
        if i == 0 and (settings.get("rule") is not None or settings.get("grow") is not None
                       or settings.get("default_rule")
                       != ks.GrowthSettings().rule.get_config()):
            raise SystemExit(f"{tag}.json's growing runs were not made with today's default "
                             "split rule: name another file first in --baselines")
        for r in data["runs"]:
            curve = r["method"] == "scratch" or r["method"].startswith("width-")
            key = (r["family"], r["method"], r["seed"])
            if (curve or (i == 0 and r["method"] == "energy")) and key not in seen:
                seen.add(key)
                out.append(dict(r, source=tag))
    return out


def baselines(family, runs, latency):
    """The family's baseline ``runs`` (:func:`baseline_runs`), their architectures timed
    here."""
    out, timed = [], {}
    for r in (r for r in runs if r["family"] == family):
        key = json.dumps(r["widths"], sort_keys=True)
        if key not in timed:
            timed[key] = time_architecture(family, r["widths"], latency)
        out.append({"family": family, "method": r["method"], "seed": r["seed"],
                    "source": r["source"], "widths": r["widths"], "val": r["val"],
                    "test": r["test"], **timed[key]})
    return out


def run(family, seed, args, train_xy, sets, latency):
    fam = FAMILIES[family]
    target = latency.network_cost(ks.GrowingModel(fam.build(fam.target_width)).channel_graph)
    keras.utils.set_random_seed(seed)
    x, y = train_xy
    model = ks.GrowingModel(fam.build(fam.seed_width))
    grower = LatencyGrowth((normalised(x[:args.eigen_examples]), y[:args.eigen_examples]),
                           cost=latency, budgets={latency: target}, seed=seed)
    t0 = time.perf_counter()
    timer = train(model, args, seed, x, y, [grower])
    seconds = time.perf_counter() - t0
    for stage in grower.timings:   # timed now that training is over
        stage["measured_ms"] = latency.measure_model(at_widths(family, stage["widths"]).network)
    return {"family": family, "method": "latency", "seed": seed, "budget_ms": target,
            "stages": grower.timings, "widths": layer_widths(model),
            "macs": ks.count_flops(model), "mac_epochs": float(sum(timer.macs)),
            "seconds": seconds,
            "measured_ms": latency.measure_model(model.network),
            "predicted_ms": grower.timings[-1]["predicted_ms"] if grower.timings else target,
            **evaluate(model, sets)}


def report(result):
    """Per family: accuracy and measured latency of each method (means over seeds), and
    the width multiplier's test accuracy at each method's measured latency."""
    rows = []
    for family in sorted({r["family"] for r in result["runs"]}):
        runs = [r for r in result["runs"] + result["baselines"] if r["family"] == family]
        curve = sorted({(r["measured_ms"], r["method"]) for r in runs
                        if r["method"] == "scratch" or r["method"].startswith("width-")})
        points = [(ms, np.mean([r["test"] for r in runs if r["method"] == m])) for ms, m in curve]
        for method in ("latency", "energy"):
            mine = [r for r in runs if r["method"] == method]
            if not mine:
                continue
            ms = float(np.mean([r["measured_ms"] for r in mine]))
            test = [r["test"] for r in mine]
            rows.append({
                "family": family, "method": method, "n": len(mine),
                "measured_ms": ms, "predicted_ms": float(np.mean([r["predicted_ms"]
                                                                   for r in mine])),
                "test": float(np.mean(test)), "test_std": float(np.std(test, ddof=1))
                if len(test) > 1 else None,
                "width_multiplier_at_that_latency": float(np.interp(
                    ms, [p[0] for p in points], [p[1] for p in points])) if points else None})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--families", default="mbv1_swish,mbv2_relu6")
    family_protocol_arguments(parser)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default=None, help="latency table label (default: CPU)")
    parser.add_argument("--baselines", default="growth_families_old07,growth_families",
                        help="results files (tags) of growth_families.py: the MACs-budget "
                             "runs from the first, the width multiplier's curve from any")
    parser.add_argument("--tag", default="device_costs")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    path = os.path.join(RESULTS, args.tag + ".json")
    result = json.load(open(path)) if os.path.exists(path) else {
        "runs": [], "baselines": [], "tables": []}
    if not args.report:
        tf.config.experimental.enable_op_determinism()
        train_xy, val, test = load(args.data_dir, args.train_examples, args.val_examples)
        sets = {"val": (normalised(val[0]), val[1]), "test": (normalised(test[0]), test[1])}
        runs = baseline_runs(args.baselines.split(","), args)
        for family in args.families.split(","):
            if not any(r["family"] == family for r in result["baselines"]):
                latency = latency_model(args)
                t0 = time.perf_counter()
                result["baselines"] += baselines(family, runs, latency)
                result["tables"].append({"family": family, "seconds": time.perf_counter() - t0,
                                         "measurements": latency.measurements})
                _save(path, result, argv)
        for seed in (int(s) for s in args.seeds.split(",")):
            for family in args.families.split(","):
                if any((r["family"], r["seed"]) == (family, seed) for r in result["runs"]):
                    continue
                r = run(family, seed, args, train_xy, sets, latency_model(args))
                result["runs"].append(r)
                print(f"{family:<12} seed {seed} latency {r['measured_ms']:.3f} ms measured, "
                      f"{r['predicted_ms']:.3f} predicted, test {r['test']:.4f}", flush=True)
                _save(path, result, argv)
    result["table"] = report(result)
    for row in result["table"]:
        print(json.dumps(row))
    _save(path, result, argv)


def _save(path, result, argv):
    result.update(command=command_line("device_costs.py", argv), machine=machine())
    os.makedirs(RESULTS, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
