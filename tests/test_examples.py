"""The ImageNet growth example, end to end, on tiny generated shards with 2 CPU replicas."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_split.growing.distributed import local_cluster
from tests.zoo import write_tiny_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_imagenet_shards(root, n_classes=10):
    rng = np.random.default_rng(0)
    for split, n_shards, per_shard in (("train", 2, 32), ("validation", 1, 20)):
        for s in range(n_shards):
            path = os.path.join(root, f"{split}-{s:05d}-of-{n_shards:05d}")
            with tf.io.TFRecordWriter(path) as w:
                for i in range(per_shard):
                    label = int(rng.integers(0, n_classes))
                    image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                    image[..., label % 3] = 40 + 20 * label
                    ex = tf.train.Example(features=tf.train.Features(feature={
                        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
                            value=[tf.io.encode_jpeg(image).numpy()])),
                        "image/class/label": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[label + 1])),
                    }))
                    w.write(ex.SerializeToString())


@pytest.mark.slow
def test_imagenet_mbv2_smoke_with_mirrored_strategy(tmp_path):
    data_dir, out = tmp_path / "imagenet", tmp_path / "run"
    data_dir.mkdir()
    _write_imagenet_shards(str(data_dir))
    cmd = [sys.executable, os.path.join(ROOT, "examples", "imagenet_mbv2.py"),
           "--data-dir", str(data_dir), "--out", str(out), "--stages", "1",
           "--epochs-per-stage", "1", "--batch-size", "16", "--image-size", "32",
           "--num-classes", "10", "--width", "0.35", "--eigen-batches", "2",
           "--train-examples", "64", "--cpu-devices", "2", "--verbose", "0"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "replicas: 2" in proc.stdout
    rows = json.loads((out / "results.json").read_text())
    assert [r["stage"] for r in rows] == [0, 1]
    history = json.loads((out / "stage_1" / "history.json").read_text())
    stage = history["stages"][0]
    assert stage["n_selected"] > 0
    assert rows[0]["macs"] < rows[1]["macs"] <= 1.5 * rows[0]["macs"], (
        stage["guard"], stage["loss_before"], stage["loss_after"], proc.stderr[-2000:])
    # Fractions of the 20 validation images; the top-5 of 10 classes holds more of them.
    for r in rows:
        assert {round(20 * r[k], 4) for k in ("top1", "top5")} <= set(range(21)), r
        assert r["top1"] < r["top5"], r


def test_eigenpairs_split_across_replicas_match_exact():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "tests.distributed_job"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # The products are summed over the replicas: the same eigenpairs as on one device.
    assert result["rel"] <= 1e-4 and result["cos"] >= 0.9999, result
    assert result["n_selected"] > 0
    assert "Mirrored" in result["mirrored"] or "Distributed" in result["mirrored"], result


@pytest.mark.slow
def test_imagenet_mbv2_with_two_workers(tmp_path):
    """``--strategy multi_worker``: two local workers grow one run (the chief writes it)."""
    data_dir, out = tmp_path / "imagenet", tmp_path / "run"
    data_dir.mkdir()
    _write_imagenet_shards(str(data_dir))
    procs = []
    for config in local_cluster(2):
        env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="-1", TF_CONFIG=config)
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", "imagenet_mbv2.py"),
             "--strategy", "multi_worker", "--collective-timeout", "120",
             "--data-dir", str(data_dir), "--out", str(out), "--stages", "1",
             "--epochs-per-stage", "1", "--batch-size", "16", "--image-size", "32",
             "--num-classes", "10", "--width", "0.35", "--eigen-batches", "2",
             "--train-examples", "64", "--verbose", "0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-4000:]
        assert "replicas: 2" in text
    rows = json.loads((out / "results.json").read_text())
    assert [r["stage"] for r in rows] == [0, 1]
    assert rows[0]["macs"] < rows[1]["macs"]


def test_cifar10_example_on_a_tiny_folder(tmp_path):
    write_tiny_cifar(tmp_path / "cifar", train_per_class=6)
    cmd = [sys.executable, os.path.join(ROOT, "examples", "cifar10_mobilenet.py"),
           "--data-dir", str(tmp_path / "cifar"), "--out", str(tmp_path / "run"),
           "--stages", "1", "--epochs-per-stage", "1", "--batch-size", "16",
           "--blocks", "3", "--eigen-batches", "2", "--verbose", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(rows) == 2 and rows[0]["macs"] < rows[1]["macs"] <= 1.5 * rows[0]["macs"]
