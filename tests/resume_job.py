"""A tiny resumable growth run, started as a subprocess by the resume tests.

    python -m tests.resume_job OUT_DIR STAGES     grow_schedule, then OUT_DIR/results.json
    python -m tests.resume_job cli ARGS...        the ``keras-split`` command line

With ``RESUME_JOB_KILL=POINT:STAGE`` in the environment the job SIGKILLs itself
(after printing ``KILL POINT:STAGE``) when the run reaches that point of that
stage (counted from the job's start, so for a new run):

    fit:S     stage S's training, after the first step of its 2nd epoch
    eigen:S   stage S's eigen estimation, at its second pass over the data
    stage:S   writing stage S's checkpoint: model.keras written, history.json half
    run:S     stage S's checkpoint in place, run.json not yet updated
    results   writing results.json (half of it)
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_split as ks  # noqa: E402

L = keras.layers

# The job's growth settings: catch_up > 1, so that the checkpoints carry training state
# beyond the .keras file.
GROW_KWARGS = {"eigen_epochs": 2, "split_rule": {
    "incoming": "fresh", "outgoing": "parent", "epsilon": 0.0, "reset_slots": True,
    "fresh_scale": 0.5, "catch_up": 3.0}}


def build():
    """The job's seed, compiled (every layer named: its config is the same in any process)."""
    x = keras.Input((8, 8, 2), name="x")
    h = L.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation("swish", name="a1")(h)
    h = L.Conv2D(4, 3, padding="same", activation="swish", name="c2")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    model = ks.GrowingModel(keras.Model(x, L.Dense(3, name="logits")(h), name="job"))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(stage):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 2)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype("int64") + (x[..., 1].mean(axis=(1, 2)) > 0)
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96, seed=stage).batch(16)


def run(out_dir, stages):
    """The schedule run, then ``results.json`` (MACs, parameters and loss per stage)."""
    from keras_split.apps.results import evaluate_stages

    ks.grow_schedule(build, data, out_dir, stages=stages, epochs_per_stage=3,
                     growth_ratio=0.5, seed=3, grow_kwargs=GROW_KWARGS)
    evaluate_stages(out_dir, stages, lambda stage, model: {
        "stage": stage, "macs": ks.count_flops(model), "params": int(model.count_params()),
        "loss": float(model.evaluate(data(0), verbose=0))})


def _kill(point):
    print(f"KILL {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _half_then_kill(path, point):
    """Leaves half a file aside (as a killed writer does), then kills the job."""
    with open(f"{path}.tmp", "w") as f:
        f.write('{"half": ')
    _kill(point)


class _KillInTraining(keras.callbacks.Callback):
    def __init__(self, point):
        super().__init__()
        self.point, self.epoch = point, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 0:
            _kill(self.point)


def install_kill_hook(spec):
    """Makes the job kill itself at ``spec`` (``POINT:STAGE`` or ``results``)."""
    from keras_split.apps import results
    from keras_split.estimate import products
    from keras_split.growing import checkpoint, schedule

    point, _, stage = spec.partition(":")
    stage = int(stage or -1)
    calls = {"fit": 0, "grow": 0, "products": 0}
    GrowingModel = ks.GrowingModel
    fit, grow, sv_products = GrowingModel.fit, GrowingModel.grow, products.SvProducts.products
    write_json, write_run = checkpoint.write_json_atomic, schedule.write_run

    def hooked_fit(self, *args, **kwargs):
        calls["fit"] += 1
        if point == "fit" and calls["fit"] == stage + 1:
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [_KillInTraining(spec)]
        return fit(self, *args, **kwargs)

    def hooked_grow(self, *args, **kwargs):
        calls["grow"], calls["products"] = calls["grow"] + 1, 0
        return grow(self, *args, **kwargs)

    def hooked_products(self, *args, **kwargs):
        calls["products"] += 1
        if point == "eigen" and calls["grow"] == stage and calls["products"] == 2:
            _kill(spec)
        return sv_products(self, *args, **kwargs)

    def hooked_write_json(path, *args, **kwargs):
        folder, name = os.path.split(path)
        if (point == "stage" and name == "history.json"
                and os.path.basename(folder) == f"stage_{stage}.tmp") or (
                point == "results" and name == "results.json"):
            _half_then_kill(path, spec)
        return write_json(path, *args, **kwargs)

    def hooked_write_run(out_dir, run_config, completed, *args, **kwargs):
        if point == "run" and completed == stage:
            _kill(spec)
        return write_run(out_dir, run_config, completed, *args, **kwargs)

    GrowingModel.fit, GrowingModel.grow = hooked_fit, hooked_grow
    products.SvProducts.products = hooked_products
    checkpoint.write_json_atomic = results.write_json_atomic = hooked_write_json
    schedule.write_run = hooked_write_run


if __name__ == "__main__":
    if os.environ.get("RESUME_JOB_KILL"):
        install_kill_hook(os.environ["RESUME_JOB_KILL"])
    if sys.argv[1] == "cli":
        from keras_split.apps import cli

        sys.exit(cli.main(sys.argv[2:]))
    run(sys.argv[1], int(sys.argv[2]))
