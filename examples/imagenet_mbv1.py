"""Grow MobileNetV1 from a narrow seed on ImageNet by energy-aware splitting.

    python examples/imagenet_mbv1.py --data-dir /data/imagenet --out runs/mbv1

Same flags as examples/imagenet_mbv2.py; the seed width defaults to 0.3.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imagenet_mbv2 import main  # noqa: E402

if __name__ == "__main__":
    main(model="mobilenet_v1", default_width=0.3)
