"""``python -m keras_split``: the ``keras-split`` command line."""

import sys

from keras_split.apps.cli import main

sys.exit(main())
