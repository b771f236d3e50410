import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def float64():
    """Builds the test's models in float64, and restores the default afterwards."""
    old, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(old)
    keras.config.set_dtype_policy(old_policy)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


SHARED_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                            "cifar10-jpeg.tar.gz")


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory):
    """The real CIFAR-10 (folder layout) from ../shared, extracted once per session."""
    import tarfile

    if not os.path.exists(SHARED_CIFAR):
        pytest.fail(f"the CIFAR-10 archive is missing at {SHARED_CIFAR}")
    target = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(SHARED_CIFAR) as tar:
        tar.extractall(target)
    return str(next(p for p in target.rglob("train") if p.is_dir()).parent)


def write_tiny_cifar(root, train_per_class=4, test_per_class=2, seed=0):
    """A CIFAR-10 folder layout of random 32x32 JPEGs under ``root``; returns its path."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                (folder / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return root
