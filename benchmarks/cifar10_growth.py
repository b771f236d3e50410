"""Growth in place vs the found architecture vs width multipliers, on real CIFAR-10.

One protocol for every method: the MobileNetV1-CIFAR family (6 blocks, swish),
SGD with Nesterov momentum, learning rate 0.1, batch 128, ONE cosine schedule
over ``--epochs`` epochs (a split keeps the iteration count, so the schedule
goes on), seeded stateless augmentation (pad-4 crop + flip), deterministic per
seed. Growing methods start from the width-8 seed and grow inside ``fit`` with
``GrowthCallback(every_n_epochs=--grow-every, max_stages=3, growth_ratio=0.5,
max_macs=<MACs of --target-width>)``, so that no grown network has more MACs than the
width multiplier it is compared with:

* ``energy``: ``grow`` as shipped (energy-aware knapsack, the default split rule);
* ``energy-copy`` / ``energy-fresh`` / ``energy-antisym`` / ``energy-anti0``: the same
  with the papers' split (children ``theta +/- 0.01 v``, halved outgoing weights) / fresh
  second children / the antisymmetric rule / antisymmetric outgoing shares without an
  eigen step (ablations);
* ``vanilla``: selection by lambda alone (``cost="uniform"``), default rule;
* ``random``: random groups, random directions, same MACs budget, default rule;
* ``retrained``: the architecture ``energy`` found with the same seed, freshly
  initialised and trained from scratch;
* ``width``: the uniform width ``--target-width`` (19), from scratch (``--target-width 0``:
  the uniform width closest to ``energy``'s final MACs);
* ``seed``: the width-8 seed, from scratch.

Settings are chosen on a validation split of the training images; ``--eval test`` adds test.

    python benchmarks/cifar10_growth.py --data-dir /tmp/cifar --eval test

Prints a table (mean and std over seeds) and writes ``benchmarks/results/<tag>.json``
(partial results after every run) and ``<tag>.png``.
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
from keras_split import models  # noqa: E402
from keras_split.growing import estimation_data, growth_settings, guard  # noqa: E402
from keras_split.growing.stage_records import StageSeconds  # noqa: E402
from keras_split.select import costs  # noqa: E402

from cifar10_common import (RESULTS, command_line, evaluate, load, machine,  # noqa: E402
                            normalised, train, width_macs)

METHODS = ("energy", "energy-copy", "energy-fresh", "energy-antisym", "energy-anti0", "vanilla",
           "random", "retrained", "width", "seed")
# Growing methods: (cost, split rule); None is grow()'s default rule.
GROWING = {"energy": ("flops", None), "energy-copy": ("flops", "copy"),
           "energy-fresh": ("flops", "fresh"), "energy-antisym": ("flops", "antisymmetric"),
           "energy-anti0": ("flops", {"epsilon": 0.0, "outgoing": "antisymmetric", "noise": 1.0,
                                      "reset_slots": True}),
           "vanilla": ("uniform", None), "random": ("random", None)}
# The default run: grow()'s default rule against its baselines (the rule ablation is
# benchmarks/results/cifar10_growth_rules.json, run with --methods energy,energy-copy,...).
DEFAULT_METHODS = ("energy", "vanilla", "random", "retrained", "width", "seed")


class RandomGrowth(ks.GrowthCallback):
    """Random groups along random directions, same MACs budget, same split rule and guard."""

    def _grow(self):
        t0 = time.perf_counter()
        epoch = len(self.stages)
        model = self.model
        rng = np.random.default_rng([self.grow_kwargs.get("seed", 0), 1000 + epoch])
        graph = model.channel_graph
        groups = sorted(graph.groups)
        macs = costs.network_cost(graph, "flops")
        chosen = []
        bound = macs * 1.5 if self.max_macs is None else min(macs * 1.5, self.max_macs)
        for i in rng.permutation(len(groups)):
            if costs.widened_cost(graph, [groups[j] for j in chosen + [i]], "flops") <= bound:
                chosen.append(i)
        eig = {}
        for name in graph.splittable_layers:
            kernel = model.network.get_layer(name).kernel
            v = rng.normal(size=(kernel.shape[-1], int(np.prod(kernel.shape[:-1]))))
            eig[name] = ks.Eigenpairs(np.zeros(len(v)), v / np.linalg.norm(v, axis=1, keepdims=True))
        _, held_out = estimation_data.split_holdout(
            tf.data.Dataset.from_tensor_slices(self.data).batch(128))
        rule = ks.SplitRule.get(growth_settings.DEFAULT_SPLIT_RULE)
        record = guard.guarded_split(model, [groups[i] for i in chosen], eig, rule,
                                     held_out, seed=epoch).record
        self.stages.append(argparse.Namespace(seconds=StageSeconds(split=time.perf_counter() - t0),
                                              guard=record, twins=None, epsilon=rule.epsilon))


def run(method, args, seed, train_xy, sets, found=None, width=None):
    keras.utils.set_random_seed(seed)
    x, y = train_xy
    t0 = time.perf_counter()
    stages = []
    if method in GROWING:
        cost, rule = GROWING[method]
        model = ks.GrowingModel(models.mobilenet_v1_cifar(blocks=6, width=8, activation="swish"))
        eig_data = (normalised(x[:args.eigen_examples]), y[:args.eigen_examples])
        kwargs = {} if rule is None else {"split_rule": rule}
        cls = RandomGrowth if cost == "random" else ks.GrowthCallback
        grower = cls(eig_data, every_n_epochs=args.grow_every, max_stages=args.stages,
                     max_macs=width_macs(args.target_width) if args.target_width else None,
                     growth_ratio=0.5, batch_size=128, seed=seed,
                     **({} if cost == "random" else {"cost": cost}), **kwargs)
        timer = train(model, args, seed, x, y, [grower])
        for k, st in enumerate(grower.stages):
            # The stage's epoch (before the split), the next one (retraces the train step
            # of the widened model) and the one after (the widened model's steady epoch).
            before, first, steady = timer.epochs[(k + 1) * args.grow_every - 1:][:3]
            seconds = st.seconds.total()
            stages.append({"seconds": seconds, "guard": st.guard["action"],
                           "epsilon": getattr(st, "epsilon", None),
                           "twins_after_split": st.twins and st.twins.twin_fraction,
                           "retrace_seconds": max(first - steady, 0.0),
                           "overhead_epochs": seconds / before,
                           "overhead_epochs_with_retrace": (seconds + max(first - steady, 0.0))
                           / before})
    else:
        if method == "retrained":
            network = found
        else:
            network = models.mobilenet_v1_cifar(blocks=6, width=width, activation="swish")
        model = network
        timer = train(model, args, seed, x, y)
    twins = ks.twin_statistics(model)
    out = {"method": method, "seed": seed, "macs": ks.count_flops(model),
           "params": int(model.count_params()), **evaluate(model, sets),
           "twin_fraction": twins["twin_fraction"], "distinct": twins["distinct"],
           "units": twins["units"], "mac_epochs": float(sum(timer.macs)),
           "epoch_seconds": timer.epochs, "stages": stages,
           "seconds": time.perf_counter() - t0}
    if method in GROWING:
        out["widths"] = {n: model.network.get_layer(n).kernel.shape[-1]
                         for n in model.splittable_layers}
        out["found"] = model.found_architecture(seed=seed)
    return out


def build_parser():
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder layout")
    parser.add_argument("--eval", choices=("val", "test"), default="test",
                        help="val: validation accuracy only (choosing settings); test: both")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--target-width", type=int, default=19,
                        help="growing methods stop at the MACs of this uniform width, which is "
                             "the width multiplier they are compared with (0: no cap, compare "
                             "with the uniform width nearest the energy run's MACs)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--grow-every", type=int, default=3)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--train-examples", type=int, default=10_000)
    parser.add_argument("--val-examples", type=int, default=5_000)
    parser.add_argument("--eigen-examples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--report", action="store_true",
                        help="only print the tables (and plot) of an existing <tag>.json")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in <tag>.json (same settings) and add the rest")
    parser.add_argument("--baselines-from", default=None, metavar="JSON",
                        help="take the width and seed runs (trained from scratch, no growth) "
                             "from this results file instead of training them again; its "
                             "settings must match in everything but the growth ones")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown or "retrained" in methods and "energy" not in methods or (
            "width" in methods and "energy" not in methods and not args.target_width):
        parser.error(f"--methods: unknown {sorted(unknown)}, or retrained/width without energy")
    tag = args.tag or ("cifar10_growth" if args.eval == "test" else "cifar10_growth_validation")
    if args.report:
        report(tag)
        return
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    train_xy, val, test = load(args.data_dir, args.train_examples, args.val_examples)
    sets = {"val": (normalised(val[0]), val[1])}
    if args.eval == "test":
        sets["test"] = (normalised(test[0]), test[1])
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, tag + ".json")
    fixed = {k: v for k, v in vars(args).items()
             if k not in ("data_dir", "methods", "resume", "report")}
    runs = previous_runs(parser, args, path, fixed, methods)

    def save(final=False):
        result = {"command": command_line("cifar10_growth.py", argv),
                  "settings": {k: v for k, v in vars(args).items() if k != "data_dir"},
                  "machine": machine(),
                  "complete": final, "wall_seconds": time.perf_counter() - started,
                  "baselines_from": args.baselines_from,
                  "runs": [{k: v for k, v in r.items() if k != "found"} for r in runs]}
        if final:
            result["table"] = table(runs, methods, sets)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        return result

    run_all(args, methods, runs, train_xy, sets, save)
    show(save(final=True)["table"], sets, tag)
    print(f"total wall time {time.perf_counter() - started:.0f} s; wrote {path}")


def report(tag):
    """``--report``: the tables and plot of the existing ``<tag>.json``."""
    with open(os.path.join(RESULTS, tag + ".json")) as f:
        old = json.load(f)
    names = [m for m in METHODS if any(r["method"] == m for r in old["runs"])]
    keys = {"val": None, **({"test": None} if "test" in old["runs"][0] else {})}
    show(table(old["runs"], names, keys), keys, tag)


def show(rows, sets, tag):
    """Prints the table of ``rows`` (plain and Markdown) and plots it to ``<tag>.png``."""
    print_table(rows, sets)
    print(markdown(rows, sets))
    plot(rows, tag)


def previous_runs(parser, args, path, fixed, methods):
    """The runs kept from ``path`` (``--resume``) and taken from ``--baselines-from``."""
    runs = []
    if args.resume and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        same = {k: v for k, v in old["settings"].items() if k in fixed}
        if same != fixed:
            parser.error(f"--resume: {path} has other settings: {same} vs {fixed}")
        runs = [r for r in old["runs"] if r["method"] in methods]
        print(f"resuming with {len(runs)} runs from {path}", flush=True)
    if args.baselines_from:
        taken = baselines_from(args.baselines_from, fixed, methods)
        runs += [r for r in taken if not any(
            (o["method"], o["seed"]) == (r["method"], r["seed"]) for o in runs)]
        print(f"{len(taken)} width/seed runs taken from {args.baselines_from}", flush=True)
    return runs


def baseline_width(args, runs):
    """The width of the ``width`` runs: ``--target-width``, or (0) the uniform width whose
    MACs are nearest the first energy run's."""
    if args.target_width:
        return args.target_width
    target = next(r for r in runs if r["method"] == "energy")["macs"]
    return min(range(4, 65), key=lambda w: abs(ks.count_flops(
        models.mobilenet_v1_cifar(blocks=6, width=w)) - target))


def run_all(args, methods, runs, train_xy, sets, save):
    """Runs every (seed, method) that ``runs`` lacks, adding each to ``runs`` and saving."""
    width = None
    for seed in range(args.seeds):
        done = {r["method"]: r for r in runs if r["seed"] == seed}
        for method in methods:
            if method in done:
                continue
            if method == "retrained" and "found" not in done["energy"]:
                raise SystemExit(f"--resume: seed {seed} has energy but no retrained run; "
                                 "rerun that seed's energy (remove it from the JSON)")
            if method == "width" and width is None:
                width = baseline_width(args, runs)
            r = run(method, args, seed, train_xy, sets,
                    found=done.get("energy", {}).get("found"),
                    width=8 if method == "seed" else width)
            done[method] = r
            runs.append(r)
            runs.sort(key=lambda r: (r["seed"], methods.index(r["method"])))
            print(f"seed {seed} {method:<12} {r['macs']:>10,} MACs  " + "  ".join(
                f"{k} {r[k]:.4f}" for k in sets) + f"  twins {r['twin_fraction']:.3f}"
                f"  {r['seconds']:.0f} s", flush=True)
            save()


# scratch, deterministic per seed) do not depend on them.
GROWTH_SETTINGS = ("grow_every", "stages", "eigen_examples", "methods", "tag",
                   "resume", "report", "baselines_from")


def baselines_from(path, fixed, methods):
    """The ``width`` and ``seed`` runs of ``path`` whose settings match ``fixed`` in
    everything that is not a growth setting (``GROWTH_SETTINGS``)."""
    with open(path) as f:
        old = json.load(f)
    mine = {k: v for k, v in fixed.items() if k not in GROWTH_SETTINGS}
    theirs = {k: v for k, v in old["settings"].items() if k in mine}
    if theirs != mine:
        raise SystemExit(f"--baselines-from: {path} has other settings: {theirs} vs {mine}")
    return [dict(r, taken_from=path) for r in old["runs"]
            if r["method"] in ("width", "seed") and r["method"] in methods
            and r["seed"] < fixed["seeds"]]


def table(runs, methods, sets):
    rows = []
    for method in methods:
        rs = [r for r in runs if r["method"] == method]
        row = {"method": method, "seeds": len(rs),
               "macs": float(np.mean([r["macs"] for r in rs])),
               "params": float(np.mean([r["params"] for r in rs])),
               "mac_epochs": float(np.mean([r["mac_epochs"] for r in rs])),
               "twin_fraction": float(np.mean([r["twin_fraction"] for r in rs])),
               "distinct": float(np.mean([r["distinct"] for r in rs])),
               "units": float(np.mean([r["units"] for r in rs]))}
        for k in sets:
            row[k + "_mean"] = float(np.mean([r[k] for r in rs]))
            row[k + "_std"] = float(np.std([r[k] for r in rs]))
        for key in ("overhead_epochs", "overhead_epochs_with_retrace"):
            values = [s[key] for r in rs for s in r["stages"] if key in s]
            row["max_stage_" + key] = float(max(values)) if values else None
            row["mean_stage_" + key] = float(np.mean(values)) if values else None
        row["guard"] = sorted({s["guard"] for r in rs for s in r["stages"]})
        rows.append(row)
    width = next((r for r in rows if r["method"] == "width"), None)
    for row in rows:
        row["mac_epochs_vs_width"] = row["mac_epochs"] / width["mac_epochs"] if width else None
    return rows


def print_table(rows, sets):
    head = (f"{'method':<13}{'MACs':>11}{'params':>8}" + "".join(f"{k + ' acc':>17}" for k in sets)
            + f"{'twins':>7}{'distinct':>9}{'MAC-ep/width':>13}{'stage ep':>11}")
    print(head)
    for r in rows:
        accs = "".join(f"{r[k + '_mean']:>10.4f}±{r[k + '_std']:.4f}" for k in sets)
        ratio = "-" if r["mac_epochs_vs_width"] is None else f"{r['mac_epochs_vs_width']:.2f}"
        over = "-" if r["max_stage_overhead_epochs"] is None else \
            f"{r['max_stage_overhead_epochs']:.2f}"
        if r.get("max_stage_overhead_epochs_with_retrace") is not None:
            over += f"/{r['max_stage_overhead_epochs_with_retrace']:.2f}"
        print(f"{r['method']:<13}{r['macs']:>11,.0f}{r['params']:>8,.0f}{accs}"
              f"{r['twin_fraction']:>7.3f}{r['distinct']:>9.0f}{ratio:>13}{over:>11}")


LABELS = {"energy": "energy-aware, in place (grow()'s default split rule)",
          "energy-antisym": "energy-aware, in place, antisymmetric split",
          "energy-copy": "energy-aware, in place, papers' split (copy)",
          "energy-fresh": "energy-aware, in place, fresh second child",
          "energy-anti0": "energy-aware, in place, antisymmetric without eigen step",
          "vanilla": "vanilla (lambda only), in place", "random": "random units, in place",
          "retrained": "found architecture, retrained", "width": "width multiplier, from scratch",
          "seed": "seed width 8, from scratch"}


def markdown(rows, sets):
    """The table as Markdown, for the README."""
    head = ("| method | MACs | params | " + " | ".join(f"{k} accuracy" for k in sets)
            + " | twins | MAC-epochs / width | growth stage, epochs of training (max) |")
    lines = [head, "|---" + "|---:" * (head.count("|") - 2) + "|"]
    for r in rows:
        accs = " | ".join(f"{r[k + '_mean']:.4f} ± {r[k + '_std']:.4f}" for k in sets)
        ratio = "-" if r["mac_epochs_vs_width"] is None else f"{r['mac_epochs_vs_width']:.2f}"
        over = "-"
        if r["max_stage_overhead_epochs"] is not None:
            over = f"{r['max_stage_overhead_epochs']:.2f}"
            if r.get("max_stage_overhead_epochs_with_retrace") is not None:
                over += f" ({r['max_stage_overhead_epochs_with_retrace']:.2f} with retrace)"
        lines.append(f"| {LABELS[r['method']]} | {r['macs']:,.0f} | {r['params']:,.0f} | {accs} "
                     f"| {r['twin_fraction']:.1%} | {ratio} | {over} |")
    return "\n".join(lines)


def plot(rows, tag):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "test" if "test_mean" in rows[0] else "val"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in rows:
        ax.errorbar(r["macs"] / 1e6, r[key + "_mean"], yerr=r[key + "_std"], fmt="o", capsize=3)
        ax.annotate(r["method"], (r["macs"] / 1e6, r[key + "_mean"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel(f"CIFAR-10 {key} accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, tag + ".png"), dpi=120)


if __name__ == "__main__":
    main()
