"""The family benchmark resumes a retrained run in a later process (benchmarks/)."""

import numpy as np

from benchmarks.growth_families import pack_architecture, unpack_architecture
from benchmarks.families import layer_widths
from tests.zoo import cnn_data, compiled_cnn


def test_a_packed_found_architecture_is_the_same_network_with_the_same_fresh_weights():
    model = compiled_cnn()
    x, y = cnn_data()
    model.grow((x, y), growth_ratio=0.5, method="exact")
    found = model.found_architecture(seed=7)
    again = unpack_architecture(pack_architecture(found), seed=7)
    assert layer_widths(again) == layer_widths(found) != layer_widths(compiled_cnn().network)
    assert [w.shape for w in again.get_weights()] == [w.shape for w in found.get_weights()]
    for a, b in zip(again.get_weights(), found.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = unpack_architecture(pack_architecture(found), seed=8)
    assert not np.array_equal(other.get_weights()[0], found.get_weights()[0])
