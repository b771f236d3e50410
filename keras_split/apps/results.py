"""A run's per-stage results: measuring every stage, ``results.json``, the text table.

Shared by the digits demo, the growth recipe and the command line.
"""

import contextlib
import os

from keras_split.growing import distributed
from keras_split.growing.checkpoint import load_stage_model, write_json_atomic

# ``(row key, header, width, format)`` of the columns of :func:`format_table`.
RECIPE_COLUMNS = (("stage", "stage", 5, ""), ("macs", "MACs", 14, ","),
                  ("params", "params", 11, ","), ("top1", "top-1", 7, ".4f"),
                  ("top5", "top-5", 7, ".4f"))


def write_json(path, obj):
    """Writes ``obj`` to ``path`` as indented JSON, atomically (a run killed while
    writing it leaves the old file or none)."""
    write_json_atomic(path, obj, sort_keys=False)


def evaluate_stages(out_dir, stages, measure, scope=None):
    """Measures the checkpoint of every stage of a run and writes ``results.json``.

    Args:
        out_dir: the run directory (``stage_0`` ... ``stage_<stages>``).
        stages: the number of growth stages.
        measure: ``(stage, model) -> dict``, the row of one stage.
        scope: ``() -> context manager`` to load the models under (e.g. a
            ``tf.distribute`` strategy's ``scope``); default: none.

    Returns:
        The rows, one per stage; also written to ``out_dir/results.json`` (by the
        chief alone under a multi-worker strategy, whose workers all measure).

    Example:
        >>> evaluate_stages("runs/demo", 3, lambda k, m: {"stage": k})
    """
    rows = []
    chief = True
    for stage in range(stages + 1):
        with (scope or contextlib.nullcontext)():
            model = load_stage_model(os.path.join(out_dir, f"stage_{stage}", "model.keras"))
            chief = distributed.is_chief()
        rows.append(measure(stage, model))
    if chief:   # across workers, every one measures; the chief writes
        write_json(os.path.join(out_dir, "results.json"), rows)
    return rows


def metric_columns(rows):
    """The command line's columns for ``rows``: stage, MACs, params and the
    accuracies they hold (``test_accuracy``, ``test_accuracy_bn`` (BatchNorm
    statistics re-estimated on training images), ``top1``, ``top5``)."""
    keys = [k for k in ("test_accuracy", "test_accuracy_bn", "top1", "top5") if k in rows[0]]
    return (("stage", "stage", 5, ""), ("macs", "MACs", 12, ","),
            ("params", "params", 10, ",")) + tuple((k, k, 13, ".4f") for k in keys)


def format_table(rows, columns=RECIPE_COLUMNS):
    """The per-stage table as text: a header line, then one line per row.

    Args:
        rows: dicts of one stage each (see :func:`evaluate_stages`).
        columns: ``(row key, header, width, format)`` per column (default: stage,
            MACs, params, top-1 and top-5, the growth recipe's).

    Returns:
        The lines, joined by newlines.

    Example:
        >>> print(format_table(rows, metric_columns(rows)))
    """
    lines = [" ".join(f"{header:>{width}}" for _, header, width, _ in columns)]
    lines += [" ".join(f"{r[key]:>{width}{fmt}}" for key, _, width, fmt in columns)
              for r in rows]
    return "\n".join(lines)
