"""The digits demo's protocol, apart from TensorFlow so that the CLI's parser can read it.

Chosen on the digits' validation split (``benchmarks/digits_protocols.py``, docs/benchmarks.md):
growth after epochs 2, 4 and 6 of 60 (``GROW_EVERY``), up to the MACs of the
uniform width 18 (``TARGET_WIDTH``), which is also the width multiplier it is
compared with.
"""

GROW_EVERY = 2
TARGET_WIDTH = 18
# The first seed also trains these widths (offsets from the matched width) from scratch:
# the width multiplier as a curve in the report's accuracy-against-MACs plot.
CURVE = (-6, 6)
