import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

from tests import zoo  # noqa: E402


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


@pytest.fixture(scope="module")
def trained_weights():
    """``zoo.compiled_cnn``'s weights after 3 epochs on ``zoo.cnn_data``."""
    keras.utils.set_random_seed(7)
    m = zoo.compiled_cnn()
    x, y = zoo.cnn_data()
    m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    return m.get_weights()
