"""Runs you can trust: a run killed (SIGKILL) at any point and rerun ends bit-identical
to the uninterrupted run, and GrowthCallback fits with the same seed are identical (the
command line's and the demo's reruns: tests/test_demo.py)."""

import random
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from tests import resume_job, zoo

# Where the fast test kills a 2-stage run: writing a stage, training, estimating, and
# between a stage's checkpoint and run.json.
# Mid-fit and mid-estimate in the default suite; at a stage's start and after the run, slow.
KILL_POINTS = (pytest.param("stage:0", marks=pytest.mark.slow), "fit:1", "eigen:2",
               pytest.param("run:2", marks=pytest.mark.slow))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The job's uninterrupted 2-stage run (in this process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    resume_job.run(str(out), 2)
    return out


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_resumes_bit_identical(reference, tmp_path, point):
    out = tmp_path / "run"
    killed = zoo.job(["tests.resume_job", out, 2], kill=point)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert f"KILL {point}" in killed.stdout
    assert zoo.completed_stage(out) < 2
    resume_job.run(str(out), 2)     # the same call again resumes
    zoo.assert_same_runs(reference, out, stages=2)


def _fit_growing(seed):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = resume_job.build()
    callback = ks.GrowthCallback(resume_job.data(0), every_n_epochs=1, max_stages=2,
                                 eigen_epochs=2)
    model.fit(resume_job.data(1), epochs=3, verbose=0, callbacks=[callback])
    return model


def test_growth_callback_fits_with_the_same_seed_are_identical():
    a, b = _fit_growing(4), _fit_growing(4)
    assert len(a.growth_history) == 2
    assert [w.shape for w in a.get_weights()] == [w.shape for w in b.get_weights()]
    for x, y in zip(a.get_weights() + [v.numpy() for v in a.optimizer.variables],
                    b.get_weights() + [v.numpy() for v in b.optimizer.variables]):
        np.testing.assert_array_equal(x, y)


def _cli_grow(data, out):
    """A 2-stage ``keras-split grow`` on a tiny folder, as ``tests.resume_job cli`` args."""
    return ["tests.resume_job", "cli", "grow", "--model", "mobilenet_v1_cifar", "--width", "8",
            "--data", str(data), "--stages", "2", "--epochs-per-stage", "2", "--batch-size",
            "16", "--eigen-batches", "2", "--seed", "5", "--verbose", "0", "--out", str(out)]


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory):
    """``(data, uninterrupted run)`` of a 2-stage ``keras-split grow`` on a tiny folder."""
    base = tmp_path_factory.mktemp("cli")
    zoo.write_tiny_cifar(base / "cifar")
    full = zoo.job(_cli_grow(base / "cifar", base / "full"))
    assert full.returncode == 0, full.stdout[-3000:]
    return base / "cifar", base / "full"


@pytest.mark.slow
@pytest.mark.parametrize("point", ("fit:0", "stage:1", "eigen:2", "fit:2", "results"))
def test_killed_cli_run_resumes_bit_identical(cli_reference, tmp_path, point):
    data, full = cli_reference
    args = _cli_grow(data, tmp_path / "run")
    killed = zoo.job(args, kill=point)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert f"KILL {point}" in killed.stdout
    rerun = zoo.job(args)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    zoo.assert_same_runs(full, tmp_path / "run", stages=2)


@pytest.mark.slow
def test_run_killed_at_random_moments_resumes_bit_identical(reference, tmp_path):
    """SIGKILLs from outside at random moments (imports, training, estimation, saving),
    each followed by a rerun, then a last rerun to the end (the later reruns live longer,
    so that the run gets on however slow the machine)."""
    out, rng, kills = tmp_path / "run", random.Random(0), 0
    for attempt in range(40):
        job = subprocess.Popen([sys.executable, "-m", "tests.resume_job", str(out), "2"],
                               cwd=zoo.ROOT, env=zoo.job_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            assert job.wait(timeout=rng.uniform(1.5, 4.0 + attempt)) == 0
            break
        except subprocess.TimeoutExpired:
            job.send_signal(signal.SIGKILL)
            job.wait()
            kills += 1
    last = zoo.job(["tests.resume_job", out, 2])
    assert last.returncode == 0, last.stdout[-3000:]
    assert kills >= 3
    zoo.assert_same_runs(reference, out, stages=2)
