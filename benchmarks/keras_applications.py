"""keras.applications CNNs under keras_split: MACs, the seconds of each step, eps=0 output change.

Per model (weights=None, 32x32 inputs, 10 classes, logits): BatchNorm statistics are set
from real CIFAR-10 images (one training-mode pass with momentum 0, after the model's own
``preprocess_input``), then

* ``wrap``: ``GrowingModel(model)`` (the channel graph);
* ``eigenpairs``: ``splitting_eigenpairs`` (LOBPCG, 5 passes) on ``--images`` images;
* ``split_change``: the two most negative units of two layers split at eps=0 (the
  papers' copy rule): the largest change of the softmax outputs;
* ``grow``: ``grow(growth_ratio=0.2)`` on the same images (eigenpairs again, selection,
  the guarded split), with its held-out loss before and after;
* ``save``: ``.keras`` save and load, and the largest output change of the round trip.

    python benchmarks/keras_applications.py --data-dir /tmp/cifar

Prints a table and writes ``benchmarks/results/keras_applications.json``. Absolute
seconds are of this machine (2 CPU cores); compare them across models of one run.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_split as ks  # noqa: E402

from cifar10_common import RESULTS, command_line, load, machine  # noqa: E402

A = keras.applications
# Model -> the module whose preprocess_input it expects.
FAMILIES = {
    "MobileNet": A.mobilenet, "MobileNetV2": A.mobilenet_v2, "MobileNetV3Small": A.mobilenet_v3,
    "MobileNetV3Large": A.mobilenet_v3, "ResNet50": A.resnet50, "ResNet50V2": A.resnet_v2,
    "DenseNet121": A.densenet, "EfficientNetB0": A.efficientnet,
    "EfficientNetV2B0": A.efficientnet_v2, "ConvNeXtTiny": A.convnext,
}


def calibrate_batchnorm(model, x):
    """Sets every BatchNormalization's moving statistics from one training-mode pass on ``x``."""
    def layers(m):
        for layer in m.layers:
            yield from layers(layer) if isinstance(layer, keras.Model) else (layer,)

    norms = [layer for layer in layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum
    return len(norms)


def run(name, x, y):
    keras.utils.set_random_seed(0)
    row = {"model": name}
    base = getattr(A, name)(input_shape=(32, 32, 3), weights=None, classes=10,
                            classifier_activation=None)
    x = FAMILIES[name].preprocess_input(x.copy())
    row["batchnorms"] = calibrate_batchnorm(base, x[:len(x) // 2])
    t = time.perf_counter()
    model = ks.GrowingModel(base)
    row["wrap_s"] = time.perf_counter() - t
    row["macs"] = ks.count_flops(model)
    row["splittable_layers"] = len(model.splittable_layers)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t = time.perf_counter()
    eig = model.splitting_eigenpairs((x, y), batch_size=32)
    row["eigenpairs_s"] = time.perf_counter() - t
    before = tf.nn.softmax(model.predict(x, verbose=0)).numpy()
    layers = sorted(eig, key=lambda n: eig[n].values.min())[:2]
    plan = {n: [int(u) for u in np.argsort(eig[n].values)[:2]] for n in layers}
    probe = ks.GrowingModel.from_config(model.get_config())
    probe.set_weights(model.get_weights())
    probe.split(plan, epsilon=0.0, split_rule="copy")
    row["split_change"] = float(np.abs(tf.nn.softmax(probe.predict(x, verbose=0)).numpy()
                                       - before).max())
    t = time.perf_counter()
    stage = model.grow(x, y, growth_ratio=0.2, batch_size=32)
    row["grow_s"] = time.perf_counter() - t
    row.update(macs_after=stage.macs_after, loss_before=stage.loss_before,
               loss_after=stage.loss_after, guard=stage.guard["action"],
               n_selected=stage.n_selected, n_noise=stage.n_noise)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model.save(os.path.join(tmp, "m.keras"))
        loaded = keras.saving.load_model(os.path.join(tmp, "m.keras"))
        row["save_load_s"] = time.perf_counter() - t
        row["round_trip_change"] = float(np.abs(loaded.predict(x, verbose=0)
                                                - model.predict(x, verbose=0)).max())
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder layout")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--models", default=",".join(FAMILIES))
    args = parser.parse_args(argv)
    (x, y), _, _ = load(args.data_dir, 1000, 1000)
    x, y = x[:args.images].astype("float32"), y[:args.images]
    rows = []
    started = time.perf_counter()
    for name in args.models.split(","):
        rows.append(run(name, x, y))
        r = rows[-1]
        print(f"{name:<18}{r['macs']:>13,}{r['splittable_layers']:>5} wrap {r['wrap_s']:6.1f} s"
              f"  eigen {r['eigenpairs_s']:6.1f} s  grow {r['grow_s']:6.1f} s ({r['guard']}, "
              f"{r['macs_after'] / r['macs']:.2f}x)  save+load {r['save_load_s']:5.1f} s  "
              f"eps=0 change {r['split_change']:.1e}", flush=True)
        with open(os.path.join(RESULTS, "keras_applications.json"), "w") as f:
            json.dump({"command": command_line("keras_applications.py", argv),
                       "machine": machine(),
                       "images": args.images, "wall_seconds": time.perf_counter() - started,
                       "rows": rows}, f, indent=1)
    print("| model | MACs | splittable layers | wrap s | eigenpairs s | grow s (MACs after) | "
          "save+load s | eps=0 softmax change | held-out loss before -> after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['macs']:,} | {r['splittable_layers']} | {r['wrap_s']:.1f} | "
              f"{r['eigenpairs_s']:.1f} | {r['grow_s']:.1f} ({r['macs_after'] / r['macs']:.2f}x) | "
              f"{r['save_load_s']:.1f} | {r['split_change']:.1e} | "
              f"{r['loss_before']:.4f} -> {r['loss_after']:.4f} |")


if __name__ == "__main__":
    main()
