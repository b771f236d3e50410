"""Input pipelines, on tiny TFRecord shards and folders made from real JPEG bytes."""

import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from keras_split import data
from keras_split.data import preprocessing

COLORS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)


def _jpeg(label, size=(40, 48), seed=0):
    """A JPEG whose colour tells its class (robust to JPEG noise)."""
    rng = np.random.default_rng(seed)
    image = np.clip(COLORS[label][None, None, :] + rng.integers(-10, 10, size + (3,)), 0, 255)
    return tf.io.encode_jpeg(image.astype(np.uint8)).numpy()


def _class_of(images, mean, std):
    pixels = images * np.array(std) + np.array(mean)  # undo the normalisation
    return np.argmax(pixels.mean(axis=(1, 2)), axis=-1)


def _example(encoded, label):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def _write_shards(root, split, n_shards, per_shard, label_offset=1):
    for s in range(n_shards):
        path = os.path.join(root, f"{split}-{s:05d}-of-{n_shards:05d}")
        with tf.io.TFRecordWriter(path) as w:
            for i in range(per_shard):
                label = (s * per_shard + i) % 3
                w.write(_example(_jpeg(label, seed=i), label + label_offset))


def _write_folder(root, split, per_class=3, ext=".JPEG"):
    for label, wnid in enumerate(["n01", "n02", "n03"]):
        folder = os.path.join(root, split, wnid)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            with open(os.path.join(folder, f"{i}{ext}"), "wb") as f:
                f.write(_jpeg(label, seed=i))


def test_imagenet_tfrecord_shards(tmp_path):
    _write_shards(tmp_path, "train", 2, 6)
    _write_shards(tmp_path, "validation", 1, 6)
    train = data.imagenet_dataset(str(tmp_path), "train", batch_size=4, image_size=32, seed=1)
    x, y = next(iter(train))
    assert x.shape == (4, 32, 32, 3) and x.dtype == tf.float32 and y.dtype == tf.int64
    assert set(np.asarray(y)) <= {0, 1, 2}
    np.testing.assert_array_equal(
        _class_of(x.numpy(), preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD), y)
    val = data.imagenet_dataset(str(tmp_path), "validation", batch_size=4, image_size=32)
    labels = np.concatenate([b[1].numpy() for b in val])
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]  # every example, in order, 0-based
    images = np.concatenate([b[0].numpy() for b in val])
    np.testing.assert_array_equal(
        _class_of(images, preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD), labels)


def test_imagenet_zero_based_shards_fail_loudly(tmp_path):
    _write_shards(tmp_path, "validation", 1, 3, label_offset=0)
    val = data.imagenet_dataset(str(tmp_path), "validation", batch_size=3, image_size=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="1-based"):
        list(val)


def test_imagenet_folder_layout_and_determinism(tmp_path):
    _write_folder(tmp_path, "train")
    _write_folder(tmp_path, "val")
    ds = lambda: data.imagenet_dataset(str(tmp_path), "train", batch_size=9, image_size=24,  # noqa: E731
                                       deterministic=True, seed=3)
    a, b = next(iter(ds())), next(iter(ds()))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    np.testing.assert_array_equal(
        _class_of(a[0].numpy(), preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD), a[1])
    val = data.imagenet_dataset(str(tmp_path), "validation", batch_size=9, image_size=24)
    x, y = next(iter(val))
    assert sorted(y.numpy().tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_bad_folders(tmp_path, caplog):
    with pytest.raises(ValueError, match="does not exist"):
        data.imagenet_dataset(str(tmp_path / "nope"))
    _write_folder(tmp_path, "train")
    with pytest.raises(ValueError, match="No ImageNet 'validation' data"):
        data.imagenet_dataset(str(tmp_path), "validation")
    os.makedirs(tmp_path / "train" / "n04")
    with pytest.raises(ValueError, match="n04' holds no images"):
        data.imagenet_dataset(str(tmp_path), "train")
    os.rmdir(tmp_path / "train" / "n04")
    _write_folder(tmp_path, "val")
    os.rename(tmp_path / "val" / "n03", tmp_path / "val" / "n09")
    with pytest.raises(ValueError, match="differ from the training split's"):
        data.imagenet_dataset(str(tmp_path), "validation")


def test_non_image_and_corrupt_files_are_counted_and_skipped(tmp_path):
    _write_folder(tmp_path, "train", ext=".jpg")
    _write_folder(tmp_path, "test", ext=".jpg")
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "n02" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    listing = data.ImageFolder(str(tmp_path / "train"))
    assert len(listing) == 10 and len(listing.skipped) == 1
    assert listing.find_corrupt() == [str(tmp_path / "train" / "n02" / "broken.jpg")]
    strict = data.imagenet_dataset(str(tmp_path), "train", batch_size=2, image_size=8,
                                   source="folder", skip_corrupt=False, shuffle_buffer=0)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(strict)
    lenient = data.imagenet_dataset(str(tmp_path), "train", batch_size=1, image_size=8,
                                    source="folder", drop_remainder=False)
    assert sum(int(b[1].shape[0]) for b in lenient) == 9


def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def _unnormalize(x):
    return np.rint(x * np.array(preprocessing.CIFAR_STD) + np.array(preprocessing.CIFAR_MEAN))


def test_cifar_python_and_binary_archives(tmp_path):
    images, labels = _cifar_arrays(12, 0)
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    chw = images.transpose(0, 3, 1, 2).reshape(12, -1)
    for i in range(1, 6):
        part = slice((i - 1) * 2, i * 2)
        with open(py / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": chw[part], b"labels": labels[part].tolist()}, f)
    with open(py / "test_batch", "wb") as f:
        pickle.dump({b"data": chw[10:], b"labels": labels[10:].tolist()}, f)
    test = data.cifar_dataset(str(py), "test", batch_size=8)
    x, y = next(iter(test))
    np.testing.assert_array_equal(y, labels[10:])
    np.testing.assert_array_equal(_unnormalize(x.numpy()), images[10:])
    x_train, y_train = data.load_cifar_arrays(str(py), 10, "train")
    np.testing.assert_array_equal(x_train, images[:10])
    b = tmp_path / "cifar-10-batches-bin"
    b.mkdir()
    records = np.concatenate([labels[:, None].astype(np.uint8), chw], axis=1)
    for i in range(1, 6):
        records[(i - 1) * 2:i * 2].tofile(b / f"data_batch_{i}.bin")
    records[10:].tofile(b / "test_batch.bin")
    x_bin, y_bin = data.load_cifar_arrays(str(b), 10, "train")
    np.testing.assert_array_equal(x_bin, images[:10])
    np.testing.assert_array_equal(y_bin, labels[:10])
    train = data.cifar_dataset(str(b), "train", batch_size=5, seed=0)
    x, y = next(iter(train))
    assert x.shape == (5, 32, 32, 3)
    (b / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load_cifar_arrays(str(b), 10, "test")


def test_cifar_folder_layout_checks_classes(tmp_path):
    for split in ("train", "test"):
        for label in range(3):
            folder = tmp_path / split / f"class{label}"
            folder.mkdir(parents=True)
            (folder / "0.jpg").write_bytes(_jpeg(label, size=(32, 32)))
    with pytest.raises(ValueError, match="has 3 classes, not 10"):
        data.cifar_dataset(str(tmp_path))


@pytest.mark.slow
def test_real_cifar10_archive(real_cifar10):
    root = real_cifar10
    train = data.cifar_dataset(str(root), "train", batch_size=1000, validate=False)
    test = data.cifar_dataset(str(root), "test", batch_size=1000, validate=False)
    assert train.class_names[:2] == ["airplane", "automobile"] and len(train.class_names) == 10
    n_test = 0
    counts = np.zeros(10, dtype=int)
    for x, y in test:
        n_test += int(x.shape[0])
        counts += np.bincount(y.numpy(), minlength=10)
    assert n_test == 10_000 and np.all(counts == 1000)
    assert sum(1 for _ in train) == 50  # 50 000 training images, full batches


def test_cifar_folder_drops_and_counts_corrupt_images(tmp_path, caplog):
    from tests.zoo import write_tiny_cifar

    root = write_tiny_cifar(tmp_path / "cifar", train_per_class=2, test_per_class=1)
    (root / "test" / "class3" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "test" / "class7" / "cut.jpg").write_bytes(
        (root / "test" / "class7" / "0.jpg").read_bytes()[:40])
    with caplog.at_level("WARNING", logger="keras_split.data.cifar"):
        test = data.cifar_dataset(str(root), "test", batch_size=100, validate=True)
    assert "Skipping 2 corrupt images" in caplog.text
    labels = np.concatenate([y.numpy() for _, y in test])
    assert sorted(labels.tolist()) == list(range(10))       # 12 files, 10 images kept
