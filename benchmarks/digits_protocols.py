"""The digits demo's protocol, and changes to it, on a validation split (3 seeds).

`keras-split demo` grows the digits network in place and compares it with the
narrowest uniform width with at least its MACs. Settings are chosen on
validation, never on the test images: every seed's training images (its own
split of scikit-learn's 1 797 digits) lose a quarter to a validation split
(``demo.load_digits(validation=True)``), and every protocol is measured there:

* ``demo``: the demo as shipped (growth after epochs 2, 4 and 6 of 60 up to the
  MACs of width 18, split rule ``"fresh"``), with the width multiplier and the
  found architecture retrained;
* ``every10``, ``every5``, ``every1``: growth after every 10 (the demo's protocol
  before this study, the one chosen on CIFAR-10), 5 or 1 epochs;
* ``antisymmetric``: the demo's schedule with the antisymmetric split rule;
* ``no_cap``: the demo without the MACs cap.

    python benchmarks/digits_protocols.py --protocols demo,every10

Prints a table (mean ± std over seeds) and writes
``benchmarks/results/digits_protocols.json`` (partial results after every run;
``--tag T`` writes ``digits_protocols_T.json``).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_split.apps import demo  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PROTOCOLS = {
    "demo": {"baselines": True},
    "every10": {"grow_every": 10},
    "every5": {"grow_every": 5},
    "every1": {"grow_every": 1},
    "antisymmetric": {"split_rule": "antisymmetric"},
    "no_cap": {"target_width": None},
}


def run(protocol, seed, work):
    settings = dict(PROTOCOLS[protocol])
    baselines = settings.pop("baselines", False)
    out = os.path.join(work, f"{protocol}_{seed}")
    t0 = time.perf_counter()
    rows = demo.run_seed(out, seed=seed, baselines=baselines, validation=True, **settings)
    record = {"protocol": protocol, "seed": seed, "grown": rows[-1]["test_accuracy"],
              "macs": rows[-1]["macs"], "widths": rows[-1]["widths"]}
    if baselines:
        with open(os.path.join(out, "comparison.json")) as f:
            comparison = json.load(f)
        record.update(width=comparison["width"]["accuracy"],
                      width_label=comparison["width"]["label"],
                      width_macs=comparison["width"]["macs"],
                      retrained=comparison["retrained"]["accuracy"])
    record["seconds"] = time.perf_counter() - t0
    return record


def table(runs):
    rows = []
    for protocol in PROTOCOLS:
        rs = [r for r in runs if r["protocol"] == protocol]
        if not rs:
            continue
        row = {"protocol": protocol, "seeds": len(rs),
               "macs": float(np.mean([r["macs"] for r in rs]))}
        for key in ("grown", "width", "retrained"):
            if all(key in r for r in rs):
                row[key + "_mean"] = float(np.mean([r[key] for r in rs]))
                row[key + "_std"] = float(np.std([r[key] for r in rs]))
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--protocols", default="demo,every10")
    parser.add_argument("--tag", default=None, help="writes digits_protocols_TAG.json")
    args = parser.parse_args(argv)
    protocols = args.protocols.split(",")
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        parser.error(f"--protocols: unknown {sorted(unknown)}")
    started = time.perf_counter()
    runs = []
    path = os.path.join(RESULTS, f"digits_protocols{'_' + args.tag if args.tag else ''}.json")
    os.makedirs(RESULTS, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for protocol in protocols:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                r = run(protocol, seed, work)
                runs.append(r)
                print(f"{protocol:<14} seed {seed}  grown {r['grown']:.4f}"
                      + (f"  {r['width_label']} {r['width']:.4f}  retrained {r['retrained']:.4f}"
                         if "width" in r else "") + f"  {r['seconds']:.0f} s", flush=True)
                with open(path, "w") as f:
                    json.dump({"command": "python benchmarks/digits_protocols.py " + " ".join(
                                   argv if argv is not None else sys.argv[1:]),
                               "settings": vars(args), "protocols": PROTOCOLS,
                               "machine": {"platform": platform.platform(),
                                           "cpus": os.cpu_count(),
                                           "tensorflow": tf.__version__,
                                           "keras": keras.__version__},
                               "wall_seconds": time.perf_counter() - started,
                               "runs": runs, "table": table(runs)}, f, indent=1)
    print(f"{'protocol':<14}{'MACs':>9}" + "".join(
        f"{k + ' (val)':>18}" for k in ("grown", "width", "retrained")))
    for row in table(runs):
        cells = "".join(f"{row[k + '_mean']:>11.4f}±{row[k + '_std']:.4f}" if k + "_mean" in row
                        else f"{'-':>18}" for k in ("grown", "width", "retrained"))
        print(f"{row['protocol']:<14}{row['macs']:>9,.0f}{cells}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
