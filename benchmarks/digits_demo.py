"""The README's main job, `keras-split demo`, as a benchmark result (3 seeds).

Runs the demo with its defaults (or reads a finished run directory, ``--from``) and
writes ``benchmarks/results/digits_demo.json``: every seed's grown, width-multiplier
and retrained accuracies, the verdict over seeds and the first seed's stages (test
accuracy with BatchNorm's moving statistics and re-estimated ones). The demo resumes a
run directory it finds, so an interrupted benchmark continues where it stopped.

    python benchmarks/digits_demo.py --out runs/digits_demo
"""

import argparse
import json
import os
import subprocess
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NOTE = ("the README's main job with its defaults: 3 seeds, growth after epochs 2, 4, 6 of "
        "60 up to the MACs of width 18, GrowthCallback/grow defaults (split rule 'fresh', "
        "half of each layer's budget kept apart and half shared, relative "
        "values, LOBPCG); "
        "test_accuracy_bn re-estimates BatchNorm statistics on the training images")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/digits_demo", help="the demo's run directory")
    parser.add_argument("--from", dest="existing", action="store_true",
                        help="read --out as it is: do not run the demo")
    args = parser.parse_args(argv)
    if not args.existing:
        subprocess.run([sys.executable, "-m", "keras_split", "demo", "--out", args.out],
                       check=True)
    with open(os.path.join(args.out, "seeds.json")) as f:
        seeds = json.load(f)
    with open(os.path.join(args.out, "results.json")) as f:
        stages = json.load(f)
    from keras_split.apps.demo import verdict_over_seeds

    seeds["verdict"] = verdict_over_seeds(seeds["runs"])   # the library's current wording
    result = {"command": "keras-split demo --out runs/demo  (python -m keras_split demo)",
              "note": NOTE, "first_seed_stages": stages, **seeds}
    path = os.path.join(RESULTS, "digits_demo.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    print(seeds["verdict"])


if __name__ == "__main__":
    main()
