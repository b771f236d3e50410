"""The package's layout rules that a test can check: Keras internals only in compat."""

import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_split"

# Private Keras structures the package reads (each wrapped in keras_split/compat.py).
KERAS_PRIVATE = re.compile(
    r"keras\.src\b|\._nodes_by_depth\b|\._functional\b|\._tracker\b|\._compile_loss\b"
    r"|\.arguments\.(fill_in|args|kwargs)\b|_momentum\"")


def test_keras_internals_are_used_only_in_the_compat_module():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if KERAS_PRIVATE.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    compat = (PACKAGE / "compat.py").read_text()
    for name in ("_nodes_by_depth", "_functional", "_tracker", "_compile_loss", "arguments"):
        assert name in compat
