"""The `keras-split` command line: demo, grow, retrain, export, report.

Exit codes: 0 success, 1 unexpected failure, 2 bad usage or input (a missing
data directory, a run directory from another configuration, an unwritable output).
"""

import argparse
import importlib
import logging
import os
import sys
import warnings

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v1_cifar", "mobilenet_v2_cifar")


def _print_rows(rows):
    """Prints the per-stage table of a run's rows."""
    from keras_split.apps.results import format_table, metric_columns

    print(format_table(rows, metric_columns(rows)))


def _demo(args):
    from keras_split.apps import cli_inputs
    from keras_split.apps.demo import run_demo

    cli_inputs.check_demo_options(args)   # before anything is printed, written or trained
    cap = f", up to the MACs of width {args.target_width}" if args.target_width else ""
    print(f"Growing the digits network ({args.stages} stages, "
          f"{args.epochs_per_stage or args.epochs} epochs"
          f"{' per stage' if args.epochs_per_stage else ' in all'}{cap}); then the matched "
          f"width and the found architecture are trained from scratch; {args.seeds} "
          f"seed{'s' if args.seeds > 1 else ''}.", flush=True)
    rows = run_demo(args.out, stages=args.stages, epochs=args.epochs,
                    epochs_per_stage=args.epochs_per_stage,
                    growth_ratio=args.growth_ratio, seed=args.seed, verbose=args.verbose,
                    baselines=not args.no_baselines, seeds=args.seeds,
                    grow_every=args.grow_every, target_width=args.target_width or None,
                    curve=args.curve)
    _print_rows(rows)
    for r in rows:
        print(f"stage {r['stage']} widths: {' '.join(str(w) for w in r['widths'].values())}")
    comparison = os.path.join(args.out, "comparison.json")
    if not args.no_baselines and os.path.exists(comparison):
        import json

        with open(comparison) as f:
            c = json.load(f)
        print(f"{'network':<32}{'MACs':>10}{'epochs':>8}{'test acc':>10}")
        for key in ("grown", "retrained", "width"):
            print(f"{c[key]['label']:<32}{c[key]['macs']:>10,}{c[key]['epochs']:>8}"
                  f"{c[key]['accuracy']:>10.4f}")
        print(c["verdict"])
        seeds = os.path.join(args.out, "seeds.json")
        if args.seeds > 1 and os.path.exists(seeds):
            with open(seeds) as f:
                over = json.load(f)
            print(f"{'seed':>4}{'grown':>9}{'width':>9}{'retrained':>11}  width multiplier")
            for r in over["runs"]:
                print(f"{r['seed']:>4}{r['grown']['accuracy']:>9.4f}{r['width']['accuracy']:>9.4f}"
                      f"{r['retrained']['accuracy']:>11.4f}  {r['width']['label']}")
            print(over["verdict"])
    print(f"Results: {os.path.join(args.out, 'results.json')}")
    print(f"Report: {os.path.join(args.out, 'report', 'report.md')}")
    return 0


def _grow(args):
    from keras_split.apps import cli_inputs

    # The whole configuration is checked before any file is written or step trained.
    cli_inputs.check_grow_options(args)
    if not os.path.exists(args.data):
        raise ValueError(f"Data directory '{args.data}' does not exist.")
    from keras_split import data, models
    from keras_split.apps import recipes
    from keras_split.growing.schedule import epoch_schedule

    if args.width is None:
        args.width = 8 if args.model.endswith("_cifar") else 0.3
    if args.model.endswith("_cifar") and (args.width < 1 or args.width != int(args.width)):
        raise ValueError(f"--width of {args.model} is its channel count, a positive integer. "
                         f"Received: --width {args.width}")
    dataset = args.dataset if args.dataset != "auto" else data.detect_dataset(args.data)
    train_fn, test, n_train, size, classes = cli_inputs.run_datasets(args, dataset)
    epochs = epoch_schedule(args.epochs, args.stages, args.epochs_per_stage or None,
                            args.grow_every)
    builder = getattr(models, args.model)
    shape = (size, size, 3)
    if args.model.endswith("_cifar"):
        network = lambda: builder(width=int(args.width), input_shape=shape,  # noqa: E731
                                  num_classes=classes)
    else:
        network = lambda: builder(args.width, input_shape=shape, num_classes=classes)  # noqa: E731
    rows = recipes.run_growth(
        network, train_fn, test, args.out, stages=args.stages,
        epochs_per_stage=epochs,
        steps_per_epoch=max(n_train // args.batch_size, 1), learning_rate=args.learning_rate,
        growth_ratio=args.growth_ratio, eigen_batches=args.eigen_batches, seed=args.seed,
        cost=args.cost, budgets=args.budgets,
        label_smoothing=0.1 if dataset == "imagenet" else 0.0,
        verbose=args.verbose, deterministic=args.deterministic,
        config={"model": args.model, "width": args.width, "dataset": dataset,
                "data": os.path.abspath(args.data), "batch_size": args.batch_size,
                "image_size": args.image_size},
    )
    cli_inputs.save_test_calibration(args.out, test)
    _print_rows(rows)
    print(f"Results: {os.path.join(args.out, 'results.json')}")
    return 0


def _retrain(args):
    import json

    from keras_split.apps import cli_inputs, recipes
    from keras_split.apps.results import write_json
    from keras_split.growing.schedule import epoch_schedule, load_stage_model, read_run

    if args.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    run = read_run(args.run_dir)
    if run is None:
        raise ValueError(f"'{args.run_dir}' is not a keras-split run directory.")
    user = run["config"]["user"]
    if "demo" in user:
        from keras_split.apps.demo import retrain

        record = retrain(args.run_dir)
        print(f"found architecture, retrained: {record['macs']:,} MACs, {record['epochs']} "
              f"epochs, test accuracy {record['accuracy']:.4f}")
        comparison = os.path.join(args.run_dir, "comparison.json")
        if os.path.exists(comparison):
            with open(comparison) as f:
                print(json.load(f)["verdict"])
        return 0
    if "data" not in user:
        raise ValueError(f"'{args.run_dir}' was not made by `keras-split grow` or `demo`.")
    if not os.path.exists(user["data"]):
        raise ValueError(f"The run's data directory '{user['data']}' does not exist.")
    config = argparse.Namespace(data=user["data"], batch_size=user["batch_size"],
                                seed=run["config"]["seed"], image_size=user.get("image_size"),
                                deterministic=args.deterministic)
    train_fn, test, n_train, _, _ = cli_inputs.run_datasets(config, user["dataset"])
    epochs = sum(epoch_schedule(None, run["config"]["stages"], run["config"]["epochs_per_stage"]))
    model = load_stage_model(os.path.join(args.run_dir, f"stage_{run['completed']}",
                                          "model.keras"))
    steps = max(n_train // user["batch_size"], 1)
    fresh, record = recipes.retrain_found(
        model, train_fn(0).repeat(), test, epochs, steps, user["learning_rate"],
        label_smoothing=user["label_smoothing"], seed=run["config"]["seed"],
        verbose=args.verbose)
    os.makedirs(os.path.join(args.run_dir, "retrained"), exist_ok=True)
    fresh.save(os.path.join(args.run_dir, "retrained", "model.keras"))
    record["accuracy"] = record["top1"]
    write_json(os.path.join(args.run_dir, "retrained.json"), record)
    print(f"found architecture, retrained: {record['macs']:,} MACs, {epochs} epochs, "
          f"top-1 {record['top1']:.4f}, top-5 {record['top5']:.4f}")
    return 0


def _export(args):
    from keras_split.apps import cli_inputs, export
    from keras_split.growing.schedule import load_stage_model

    model_path = os.path.join(args.stage_dir, "model.keras")
    if not os.path.exists(model_path):
        raise ValueError(f"'{args.stage_dir}' holds no model.keras (expected RUN_DIR/stage_K).")
    model = load_stage_model(model_path)
    out = args.out or os.path.join(
        args.stage_dir, "export", "saved_model" if args.format == "savedmodel"
        else f"model{'_' + args.quantization if args.quantization else ''}.tflite")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise ValueError(f"Cannot write to '{parent}'.")
    sample, source = cli_inputs.export_inputs(args, model)
    if args.format == "savedmodel":
        result = export.saved_model(model, out, sample_data=sample)
    else:
        if args.quantization == "int8" and sample is None:
            raise ValueError("--quantization int8 needs calibration inputs: --data (a data "
                             "folder, or an .npz of model inputs), or RUN_DIR/calibration.npz "
                             "(written by `grow` and `demo` runs).")
        result = export.tflite(model, out, quantization=args.quantization,
                               representative_data=sample, sample_data=sample)
    if source:
        print(f"parity inputs and calibration: {source}")
    print(f"wrote {result.path} ({result.size_bytes:,} bytes); max |diff| to Keras "
          f"{result.max_abs_diff:.2e} (relative {result.relative_max_diff:.2e}), "
          f"top-1 agreement {result.top1_agreement:.4f} on {result.parity_inputs}")
    if result.weight_dtypes is not None:
        print(f"weights: {result.quantized_fraction:.0%} stored below float32 "
              f"({', '.join(f'{k} {v:,}' for k, v in sorted(result.weight_dtypes.items()))})")
    return 0


def _report(args):
    from keras_split.apps.report import write_report

    images = labels = None
    if args.data:
        from keras_split import data

        import numpy as np

        x, y = next(iter(data.cifar_dataset(args.data, "test", batch_size=1000, validate=False)))
        x, y = x.numpy(), y.numpy()
        pick = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)][:10]   # one per class
        images, labels = x[pick], y[pick]
    print(f"Report: {write_report(args.run_dir, images, labels)}")
    return 0


def _schedule_arguments(parser, epochs, grow_every=None):
    """The growth-schedule options ``demo`` and ``grow`` share."""
    parser.add_argument("--stages", type=int, default=3, help="growth stages (default: 3)")
    parser.add_argument("--epochs", type=int, default=epochs,
                        help="training epochs in all, one cosine schedule; growth happens in "
                             f"the first half (default: {epochs})")
    parser.add_argument("--grow-every", type=int, default=grow_every,
                        help="with --epochs: epochs of every growth stage, the final width "
                             "trains for the rest (default: "
                             + (f"{grow_every})" if grow_every else "epochs / (2 x stages))"))
    parser.add_argument("--epochs-per-stage", type=int, default=None,
                        help="instead of --epochs: this many epochs for every stage")
    parser.add_argument("--growth-ratio", type=float, default=0.5,
                        help="MACs budget of each stage as a fraction (default: 0.5)")


def _determinism(parser):
    """The ``--no-deterministic`` option of ``grow`` and ``retrain``."""
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                        help="faster, not reproducible: no TensorFlow op determinism and an "
                             "unordered input pipeline (default: bit-identical reruns and "
                             "resumes for the same --seed on the same machine)")


def _verbosity(parser, default, help_text):
    """The ``--verbose`` option (Keras verbosity) of ``demo``, ``grow`` and ``retrain``."""
    parser.add_argument("--verbose", type=int, default=default, choices=(0, 1, 2),
                        help=help_text)


def _demo_options(demo):
    """Adds the options of ``demo``."""
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    from keras_split.apps.demo_protocol import CURVE, GROW_EVERY, TARGET_WIDTH

    _schedule_arguments(demo, epochs=60, grow_every=GROW_EVERY)
    demo.add_argument("--target-width", type=int, default=TARGET_WIDTH,
                      help="grow up to the MACs of this uniform width, 0: no cap (default: "
                           f"{TARGET_WIDTH})")
    demo.add_argument("--seed", type=int, default=0, help="first random seed (default: 0)")
    demo.add_argument("--seeds", type=int, default=3,
                      help="seeds to run, each a whole run; the verdict compares their means "
                           "(default: 3)")
    demo.add_argument("--no-baselines", action="store_true",
                      help="skip the width-multiplier baselines")
    demo.add_argument("--curve", default=",".join(str(d) for d in CURVE),
                      help="widths (offsets from the matched one, comma-separated, e.g. "
                           "--curve=-6,6) the first seed also trains from scratch for the "
                           "report's width-multiplier curve; --curve= for none (default: "
                           f"{','.join(f'{d:+d}' for d in CURVE)})")
    _verbosity(demo, 0, "Keras verbosity of fit and grow (default: 0)")


def _grow_options(grow):
    """Adds the options of ``grow``."""
    grow.add_argument("--model", choices=MODELS, default="mobilenet_v1",
                      help="seed architecture (default: mobilenet_v1)")
    grow.add_argument("--width", type=float, default=None,
                      help="width multiplier of the seed (default 0.3), or its channel count "
                           "for *_cifar models (default 8)")
    grow.add_argument("--data", required=True,
                      help="ImageNet shards/folders or a CIFAR folder layout/archive")
    grow.add_argument("--dataset", choices=("auto", "imagenet", "cifar10"), default="auto",
                      help="what --data holds (default: detect)")
    _schedule_arguments(grow, epochs=20)
    grow.add_argument("--out", required=True, help="run directory")
    grow.add_argument("--cost", choices=("flops", "params", "uniform", "sqrt_flops"),
                      default="flops",
                      help="selection cost: flops (energy-aware), params, uniform (vanilla)")
    grow.add_argument("--budget", action="append", metavar="NAME=LIMIT",
                      help="a further limit on the network's total after every stage, "
                           "e.g. param_bytes_int8=250000 or peak_activation_bytes=65536 (repeatable)")
    grow.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    grow.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    grow.add_argument("--learning-rate", type=float, default=0.1,
                      help="peak learning rate of the cosine schedule (default: 0.1)")
    grow.add_argument("--eigen-batches", type=int, default=50,
                      help="training batches for eigen estimation per stage (default: 50)")
    grow.add_argument("--image-size", type=int, default=None,
                      help="ImageNet input size (default: 224)")
    _determinism(grow)
    _verbosity(grow, 1, "Keras verbosity (default: 1, progress bars)")


def _retrain_options(ret):
    """Adds the options of ``retrain``."""
    ret.add_argument("run_dir", help="a run directory of `grow` or `demo`")
    _determinism(ret)
    _verbosity(ret, 1, "Keras verbosity (default: 1)")


def _export_options(exp):
    """Adds the options of ``export``."""
    exp.add_argument("stage_dir", help="a stage directory, e.g. runs/demo/stage_3")
    exp.add_argument("--format", choices=("savedmodel", "tflite"), default="savedmodel",
                     help="export format (default: savedmodel)")
    exp.add_argument("--quantization", choices=("float16", "dynamic", "int8"), default=None,
                     help="TFLite quantization (default: none, float32)")
    exp.add_argument("--data", default=None,
                     help="inputs for the parity check and int8 calibration: a CIFAR or "
                          "ImageNet data folder, or an .npz of model inputs (array 'x'); "
                          "default: RUN_DIR/calibration.npz when the run wrote one")
    exp.add_argument("--out", default=None,
                     help="output path (default: STAGE_DIR/export/...)")


def _report_options(rep):
    """Adds the options of ``report``."""
    rep.add_argument("run_dir", help="a run directory")
    rep.add_argument("--data", default=None,
                     help="CIFAR-style data for the GradCAM/saliency maps")


# The sub-commands, in order: (run, add its options, help, description).
COMMANDS = {
    "demo": (_demo, _demo_options,
             "grow a small MobileNet on scikit-learn's bundled digits (offline)",
             "Grows a MobileNet-style network (8 channels everywhere) on the real UCI "
             "digits bundled with scikit-learn (no download), trains width-multiplier "
             "baselines, and writes a report. Rerunning resumes an interrupted run."),
    "grow": (_grow, _grow_options, "the resumable stage driver on ImageNet or CIFAR data",
             "Runs train -> grow -> train ... and checkpoints RUN_DIR/stage_K after "
             "every stage; rerunning the same command resumes."),
    "retrain": (_retrain, _retrain_options,
                "train the architecture a run found, freshly initialised",
                "Trains the final stage's widths from scratch with the run's recipe and "
                "epochs; writes RUN_DIR/retrained.json (and comparison.json for the demo)."),
    "export": (_export, _export_options, "export a stage to SavedModel or TFLite",
               "Exports RUN_DIR/stage_K/model.keras and reports its parity with Keras."),
    "report": (_report, _report_options, "Markdown/HTML report with plots of a run",
               "Writes RUN_DIR/report/report.md and report.html."),
}


def build_parser():
    """The ``keras-split`` argument parser, with its sub-commands.

    Returns:
        An ``argparse.ArgumentParser``; the parsed arguments' ``func`` runs the
        command and returns the exit code.
    """
    parser = argparse.ArgumentParser(
        prog="keras-split",
        description="Grow Keras models by energy-aware splitting steepest descent. "
                    "Exit codes: 0 success, 1 failure, 2 bad usage or input.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (run, add_options, help_text, description) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=description)
        add_options(command)
        command.set_defaults(func=run)
    return parser


def main(argv=None):
    """Entry point; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*structure of `inputs`.*", category=UserWarning)
    args = build_parser().parse_args(argv)
    from keras_split.compat import native_output_held

    with native_output_held(2):   # TensorFlow's native import logs
        importlib.import_module("keras")
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        return args.func(args)
    except (ValueError, PermissionError, FileNotFoundError, NotADirectoryError) as err:
        print(f"keras-split: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-split: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
