"""Growth against its trivial baselines on several network families, on real CIFAR-10.

For every family of ``families.py`` (MobileNetV1-CIFAR swish, a plain ReLU VGG with max
pooling, MobileNetV2-CIFAR ReLU6, a ReLU ResNet) and every seed, one protocol: SGD with
Nesterov momentum, ``--lr``, batch 128, ONE cosine schedule over ``--epochs`` epochs,
seeded stateless augmentation, deterministic per seed; ``--train-examples`` training
images and a validation split carved from the other training images (settings are
chosen on it; ``--eval test`` adds the 10 000 test images). Growing runs start from the
family's seed width and grow inside ``fit``, capped at the MACs of the family's target
width (the width multiplier they are compared with):

* ``energy``: ``GrowthCallback(data, max_macs=...)`` and nothing else (the shipped
  defaults; ``--rule`` and ``--grow`` replace settings, for choosing them);
* ``energy-network`` / ``energy-resolution``: the same with one budget for the network
  (``budget_groups=None``) / with one budget per output resolution and nothing shared
  (``group_share=1.0``), instead of the default half of each layer's budget kept
  apart, both with eigenvalues alone as values (``value="lambda"``, the ablations);
* ``energy-resolution-half`` / ``energy-lambda``: half of each output resolution's budget
  kept apart, with relative values / with eigenvalues alone (``value="lambda"``);
* ``uniform``: every layer widened in place by the same factor per stage, to the target
  width's layer widths, at the same epochs and with the same split rule (the control
  that isolates the in-place recipe from the selection);
* ``random``: random groups under the same MACs budget, same epochs and rule;
* ``retrained``, ``retrained-network``, ``retrained-resolution``,
  ``retrained-resolution-half``, ``retrained-lambda``: the architecture the matching
  ``energy*`` run found, freshly initialised, trained from scratch;
* ``scratch``: the target width from scratch; ``width-<w>``: other uniform widths from
  scratch (the width multiplier's curve, ``--curve``);
* ``scratch-rule``: the target width from scratch, with the growing runs' split rule
  applied at their stage epochs but no unit added: with ``old_scale < 1`` the kernels'
  shrink alone (the control that separates its effect from growth's).

Every finished run is written to ``benchmarks/results/<tag>.json`` as it ends and a rerun
with the same settings skips it (``--tag`` names a variant), so that the benchmark can
be stopped and resumed; a growing run stores the architecture it found, so that its
retrained run can come in a later process. The table reports, per family, the in-place penalty (uniform in place
minus scratch), the selection's gain in place (energy minus uniform) and as a found
architecture (retrained minus scratch), and MAC-epochs against scratch's; ``<tag>.png``
plots accuracy against MACs with the width multiplier as a curve.

    python benchmarks/growth_families.py --data-dir /tmp/cifar --eval test
"""

import argparse
import base64
import json
import os
import sys
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_split as ks  # noqa: E402
from keras_split.growing.stage_records import GuardRecord, StageSeconds  # noqa: E402

from cifar10_common import (RESULTS, command_line, cpu_model, evaluate,  # noqa: E402
                            family_protocol_arguments, load, machine, normalised, train)
from cifar10_growth import RandomGrowth  # noqa: E402
from families import FAMILIES, layer_widths, widening_plan  # noqa: E402

from growth_families_report import (GROWING, METHODS, RETRAINS, markdown,  # noqa: E402
                                   plot, print_table, screening, table, with_curve)


class UniformGrowth(ks.GrowthCallback):
    """Widens every layer by the same factor at each stage, to ``targets`` at the last.

    Stage ``k`` of ``S`` brings layer ``l`` to ``round(seed_l * (target_l / seed_l) **
    (k / S))`` units (split with the settings' rule, the coupled groups of a residual
    ``Add`` once for all their members), so that the last stage ends at the target
    width's architecture. Started at the target width, it adds no unit and applies only
    the rule's ``old_scale``.
    """

    def __init__(self, data, targets, n_stages, **kwargs):
        super().__init__(data, **kwargs)
        self.targets, self.n_stages, self.seeds = targets, n_stages, None

    def _grow(self):
        model = self.model
        widths = layer_widths(model)
        self.seeds = self.seeds or dict(widths)
        k = len(self.stages) + 1
        want = {n: int(round(self.seeds[n] * (self.targets[n] / self.seeds[n])
                             ** (k / self.n_stages))) for n in widths}
        plan = widening_plan(model, want)
        t0 = time.perf_counter()
        if plan or self._settings.rule.old_scale != 1.0:   # the shrink alone: no unit added
            model.split(plan, split_rule=self._settings.rule, seed=self._settings.seed + k)
        self.stages.append(argparse.Namespace(
            seconds=StageSeconds(split=time.perf_counter() - t0),
            guard=GuardRecord("split" if plan else "none"), twins=None, epsilon=0.0))
        return self.stages[-1]


class ValidationCurve(keras.callbacks.Callback):
    """The validation accuracy after every epoch (to see whether a schedule has flattened)."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.accuracies = x, y, []

    def on_epoch_end(self, epoch, logs=None):
        self.accuracies.append(float(self.model.evaluate(self.x, self.y, batch_size=500,
                                                         verbose=0)[1]))


def _stage_row(stage):
    """A stage's seconds, guard action, LOBPCG passes and stability (JSON)."""
    eigen, stability = getattr(stage, "eigen", None), getattr(stage, "stability", None)
    return {"seconds": float(stage.seconds.total()), "guard": stage.guard.action,
            "passes": eigen.passes if eigen is not None else None,
            "stability": stability.to_dict() if stability is not None else None}


# The selection ablations' settings, each complete (the default: half of each layer's
# budget kept apart, relative values).
ABLATIONS = {"energy-network": {"budget_groups": None, "group_share": 1.0, "value": "lambda"},
             "energy-resolution": {"budget_groups": "resolution", "group_share": 1.0,
                                   "value": "lambda"},
             "energy-resolution-half": {"budget_groups": "resolution", "group_share": 0.5,
                                        "value": "relative"},
             "energy-lambda": {"budget_groups": "resolution", "group_share": 0.5,
                               "value": "lambda"}}


def run(family, method, args, seed, train_xy, sets, found=None, width=None):
    """One run; returns its JSON record."""
    fam = FAMILIES[family]
    keras.utils.set_random_seed(seed)
    x, y = train_xy
    t0 = time.perf_counter()
    # Runs are bit-identical on one CPU model only: each run records its own.
    out = {"family": family, "method": method, "seed": seed, "cpu": cpu_model()}
    if method in GROWING:
        start = fam.target_width if method == "scratch-rule" else fam.seed_width
        model = ks.GrowingModel(fam.build(start), **json.loads(args.model or "{}"))
        cap = ks.count_flops(fam.build(fam.target_width))
        eig_data = (normalised(x[:args.eigen_examples]), y[:args.eigen_examples])
        kwargs = dict(max_macs=cap, seed=seed)
        if args.rule:
            kwargs["split_rule"] = json.loads(args.rule)
        if args.grow:
            kwargs.update(json.loads(args.grow))
        if method == "energy":
            grower = ks.GrowthCallback(eig_data, **kwargs)
        elif method in ABLATIONS:
            grower = ks.GrowthCallback(eig_data, **{**kwargs, **ABLATIONS[method]})
        elif method in ("uniform", "scratch-rule"):
            grower = UniformGrowth(eig_data, layer_widths(fam.build(fam.target_width)),
                                   n_stages=3, **kwargs)
        else:
            grower = RandomGrowth(eig_data, **kwargs)
        timer = train(model, args, seed, x, y, [grower])
        out["stage_epochs"] = list(getattr(grower, "stage_epochs", []))
        out["stages"] = [_stage_row(st) for st in grower.stages]
        out["widths"] = layer_widths(model)
        out["found"] = model.found_architecture(seed=seed)
        if method in RETRAINS.values():
            out["found_config"] = pack_architecture(out["found"])
    else:
        model = found if method in RETRAINS else fam.build(width)
        curve = ValidationCurve(*sets["val"]) if args.val_curve else None
        timer = train(model, args, seed, x, y, [curve] if curve else [])
        out["widths"] = layer_widths(model)
        if curve:
            out["val_curve"] = curve.accuracies
    out.update(macs=ks.count_flops(model), params=int(model.count_params()),
               mac_epochs=float(sum(timer.macs)), epoch_seconds=timer.epochs,
               seconds=time.perf_counter() - t0,
               **evaluate(model, sets))
    return out


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder layout")
    parser.add_argument("--eval", choices=("val", "test"), default="val")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--curve", default="-3",
                        help="offsets from the target width of the width multiplier's curve")
    family_protocol_arguments(parser)
    parser.add_argument("--rule", default=None, help="split rule config (JSON) of the growing "
                        "runs instead of grow()'s default")
    parser.add_argument("--grow", default=None, help="growth settings (JSON) of the growing "
                        "runs, e.g. {\"budget_groups\": \"resolution\"}")
    parser.add_argument("--model", default=None, help="GrowingModel arguments (JSON) of the "
                        "growing runs, e.g. '{\"surrogate_beta\": 1.0}'")
    parser.add_argument("--val-curve", action="store_true", help="record the validation "
                        "accuracy after every epoch of the runs from scratch")
    parser.add_argument("--reuse", default=None, metavar="TAG", help="a retrained run whose "
                        "architecture, seed and protocol equal a run of <TAG>.json is copied "
                        "from it (runs are bit-identical on one host), marked reused_from")
    parser.add_argument("--tag", default="growth_families")
    parser.add_argument("--report", action="store_true", help="only print and plot <tag>.json")
    parser.add_argument("--curve-from", default=None, metavar="TAG",
                        help="plot the width-<w> runs of <TAG>.json too, where this file has "
                             "none (the same protocol: the width multiplier's curve)")
    parser.add_argument("--screen", default=None, metavar="PREFIX",
                        help="only print, as Markdown, every run of the results files whose "
                             "tag starts with PREFIX (the one-seed screening of settings)")
    return parser


# The settings every run of one results file shares (a rerun with others is refused).
SHARED = ("eval", "epochs", "train_examples", "val_examples", "eigen_examples",
          "batch_size", "lr", "rule", "grow", "model", "weight_decay")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.screen:
        print(screening(args.screen))
        return
    path = os.path.join(RESULTS, args.tag + ".json")
    settings = {k: getattr(args, k) for k in SHARED}
    if args.rule is None:
        # What "the default rule" meant for these runs: a file made with another one is
        # not resumed with this one (files without the key predate old_scale's default).
        settings["default_rule"] = ks.GrowthSettings().rule.get_config()
    old = json.load(open(path)) if os.path.exists(path) else None
    if args.report and old is not None:
        settings = old["settings"]
    elif old is not None and any(old["settings"].get(k) != v for k, v in settings.items()):
        raise SystemExit(f"{path} has other settings: {old['settings']} vs {settings}; "
                         "use another --tag")
    runs = old["runs"] if old else []
    if not args.report:
        tf.config.experimental.enable_op_determinism()
        train_xy, val, test = load(args.data_dir, args.train_examples, args.val_examples)
        sets = {"val": (normalised(val[0]), val[1])}
        if args.eval == "test":
            sets["test"] = (normalised(test[0]), test[1])
        run_all(args, runs, train_xy, sets, lambda: save(path, args, argv, settings, runs))
    rows = table(runs, args.train_examples)
    print_table(rows)
    print(markdown(rows))
    if args.curve_from:   # the plot's curve only: the table and JSON keep this file's runs
        with open(os.path.join(RESULTS, args.curve_from + ".json")) as f:
            both = with_curve(runs, json.load(f)["runs"])
        plot(both, table(both, args.train_examples), args.tag)
    else:
        plot(runs, rows, args.tag)
    save(path, args, argv, settings, runs, rows)


def run_all(args, runs, train_xy, sets, save_now):
    """Every (seed, family, method) that ``runs`` lacks, each saved as it ends (seed by
    seed, so that an interrupted benchmark has the same seeds of every family)."""
    found = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for family in args.families.split(","):
            fam = FAMILIES[family]
            widths = {"scratch": fam.target_width}
            widths.update({f"width-{fam.target_width + int(d)}": fam.target_width + int(d)
                           for d in args.curve.split(",") if d})
            for method in args.methods.split(",") + [m for m in widths if m != "scratch"]:
                done = {r["method"]: r for r in runs
                        if (r["family"], r["seed"]) == (family, seed)}
                if method in done:
                    continue
                source = RETRAINS.get(method)
                reused = _reused(args, family, seed, method, found.get((family, seed, source)),
                                 done.get(source))
                if reused:
                    runs.append(reused)
                    print(f"{family:<12} seed {seed} {method:<17} reused from {args.reuse}",
                          flush=True)
                    save_now()
                    continue
                if (source and (family, seed, source) not in found
                        and "found_config" in done.get(source, {})):
                    found[(family, seed, source)] = unpack_architecture(
                        done[source]["found_config"], seed)
                if source and (family, seed, source) not in found:
                    if source in done:
                        print(f"{family} seed {seed}: {method} needs the {source} run's "
                              "network: rerun it (remove it from the JSON)", flush=True)
                    continue
                r = run(family, method, args, seed, train_xy, sets,
                        found=found.get((family, seed, source)), width=widths.get(method))
                if method in RETRAINS.values():
                    found[(family, seed, method)] = r["found"]
                r.pop("found", None)
                runs.append(r)
                print(f"{family:<12} seed {seed} {method:<17} {r['macs']:>10,} MACs  "
                      + "  ".join(f"{k} {r[k]:.4f}" for k in sets)
                      + f"  {r['seconds']:.0f} s", flush=True)
                save_now()


def pack_architecture(network):
    """``network``'s architecture (its JSON config, compressed) as a string: what a later
    process needs to train the found architecture when its growing run ended earlier."""
    return base64.b64encode(zlib.compress(network.to_json().encode(), 9)).decode()


def unpack_architecture(packed, seed):
    """The network ``pack_architecture`` packed, freshly initialised as
    ``GrowingModel.found_architecture(seed=seed)`` initialises it (the same weights)."""
    network = keras.models.model_from_json(zlib.decompress(base64.b64decode(packed)).decode())
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(network)


def _reused(args, family, seed, method, found, grown):
    """The run of ``--reuse``'s file that trains the same architecture from scratch with
    the same seed and protocol on the same CPU model (a run's own ``cpu``, else the file's)
    (None without one): a copy, marked ``reused_from``.
    ``found``: the architecture, or None; ``grown``: the record of the growing run that
    found it, or None."""
    if not (args.reuse and method in RETRAINS and (found is not None or grown)):
        return None
    other = json.load(open(os.path.join(RESULTS, args.reuse + ".json")))
    same = all(other["settings"].get(k) == getattr(args, k)
               for k in SHARED if k not in ("rule", "grow", "model"))
    widths = layer_widths(found) if found is not None else grown["widths"]
    here = cpu_model()  # a run is repeated bit for bit on the same CPU model only
    for r in other["runs"] if same else []:
        if ((r["family"], r["seed"], r["method"], r["widths"]) == (family, seed, method, widths)
                and r.get("cpu", other["machine"]["cpu"]) == here):
            return dict(r, reused_from=args.reuse)
    return None


def save(path, args, argv, settings, runs, rows=None):
    os.makedirs(RESULTS, exist_ok=True)
    result = {"command": command_line("growth_families.py", argv), "settings": settings,
              "machine": machine(), "runs": runs}
    if os.path.exists(path):   # what was said of the runs (relabels) stays with them
        with open(path) as f:
            old = json.load(f)
        if old.get("notes"):
            result["notes"] = old["notes"]
        if args.report:   # a report keeps the command and machine that made the runs
            result.update({k: old[k] for k in ("command", "machine") if k in old})
    if rows is not None:
        result["table"] = rows
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
