"""The `keras-split` command line."""

import argparse
import logging
import os
import sys
import warnings


def _demo(args):
    from keras_split.demo import run_demo

    rows = run_demo(args.out, stages=args.stages, epochs_per_stage=args.epochs_per_stage,
                    growth_ratio=args.growth_ratio, seed=args.seed, verbose=args.verbose)
    print(f"{'stage':>5} {'MACs':>10} {'params':>8} {'test acc':>9}  widths")
    for r in rows:
        widths = " ".join(str(w) for w in r["widths"].values())
        print(f"{r['stage']:>5} {r['macs']:>10,} {r['params']:>8,} {r['test_accuracy']:>9.4f}  {widths}")
    print(f"Results: {os.path.join(args.out, 'results.json')}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-split",
        description="Grow Keras models by energy-aware splitting steepest descent.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="grow a small MobileNet on scikit-learn's bundled digits (offline)",
        description="Grows a MobileNet-style network (8 channels everywhere) on the "
                    "real UCI digits bundled with scikit-learn: no download. Rerunning "
                    "the same command resumes an interrupted run.",
    )
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--stages", type=int, default=3, help="growth stages (default: 3)")
    demo.add_argument("--epochs-per-stage", type=int, default=15,
                      help="training epochs per stage (default: 15)")
    demo.add_argument("--growth-ratio", type=float, default=0.5,
                      help="MACs budget of each stage as a fraction (default: 0.5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                      help="Keras verbosity of fit and grow (default: 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    """Entry point. Exit codes: 0 success, 1 failure, 2 bad usage or input."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
    args = build_parser().parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        return args.func(args)
    except ValueError as err:
        print(f"keras-split: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-split: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
