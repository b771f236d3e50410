"""Growth reports: Markdown and HTML with PNG plots, from a run directory.

Plots: accuracy against MACs per stage (with any width-multiplier baselines in
``RUN_DIR/baselines.json``: ``[{"label", "macs", "accuracy"}]``, and the found
architecture retrained, ``RUN_DIR/retrained.json``), the width of
every layer across stages, the eigenvalue spectra of every stage, and
tf-keras-vis GradCAM and saliency maps of the seed and the final model on a
few test images.
"""

import html
import json
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)


def _load_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _stage_dirs(run_dir):
    run = _load_json(os.path.join(run_dir, "run.json"))
    if run is None:
        raise ValueError(f"'{run_dir}' is not a keras_split run directory (no run.json).")
    return run, [os.path.join(run_dir, f"stage_{k}") for k in range(run["completed"] + 1)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def _plot_accuracy(rows, baselines, path, metric, retrained=None):
    fig, ax = _pyplot().subplots(figsize=(5.5, 4))
    ax.plot([r["macs"] / 1e6 for r in rows], [r[metric] for r in rows], "o-", label="grown")
    for r in rows:
        ax.annotate(f"stage {r['stage']}", (r["macs"] / 1e6, r[metric]), fontsize=7,
                    xytext=(3, -10), textcoords="offset points")
    if baselines:
        ax.plot([b["macs"] / 1e6 for b in baselines], [b["accuracy"] for b in baselines], "s--",
                label="width multiplier")
    if retrained:
        ax.plot([retrained["macs"] / 1e6], [retrained["accuracy"]], "D",
                label="found architecture, retrained")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel(metric.replace("test_", "test ").replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def _plot_widths(widths, path):
    names = list(widths[0])
    fig, ax = _pyplot().subplots(figsize=(max(5.5, 0.35 * len(names)), 4))
    for k, w in enumerate(widths):
        ax.plot(range(len(names)), [w.get(n, np.nan) for n in names], "o-", label=f"stage {k}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=75, fontsize=6)
    ax.set_ylabel("units")
    ax.set_title("layer widths across stages")
    ax.legend(fontsize=7)
    _save(fig, path)


def _plot_spectra(stages, path):
    fig, ax = _pyplot().subplots(figsize=(5.5, 4))
    for rec in stages:
        values = np.sort(np.concatenate([l.get("lambdas", []) for l in rec["layers"].values()]))
        ax.plot(np.arange(values.size) / max(values.size - 1, 1), values,
                label=f"stage {rec['stage'] + 1}: {rec['n_selected']} split")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("neurons (sorted, fraction)")
    ax.set_ylabel("min eigenvalue of the splitting matrix")
    ax.set_title("splitting spectra per growth stage")
    ax.legend(fontsize=7)
    _save(fig, path)


def _plot_attention(models_by_name, images, labels, path):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    n = len(images)
    rows = 1 + 2 * len(models_by_name)
    fig, axes = _pyplot().subplots(rows, n, figsize=(1.4 * n, 1.5 * rows), squeeze=False)
    shown = images.squeeze(-1) if images.shape[-1] == 1 else images
    for j in range(n):
        axes[0, j].imshow(shown[j], cmap="gray" if shown.ndim == 3 else None)
        axes[0, j].set_title(f"label {labels[j]}", fontsize=7)
    score = CategoricalScore([int(v) for v in labels])
    for i, (name, model) in enumerate(models_by_name.items()):
        cams = Gradcam(model, clone=True)(score, images, penultimate_layer=-1)
        sal = Saliency(model, clone=True)(score, images)
        for j in range(n):
            axes[1 + 2 * i, j].imshow(cams[j], cmap="jet")
            axes[2 + 2 * i, j].imshow(sal[j], cmap="gray")
        axes[1 + 2 * i, 0].set_ylabel(f"{name}\nGradCAM", fontsize=7)
        axes[2 + 2 * i, 0].set_ylabel(f"{name}\nsaliency", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def write_report(run_dir, images=None, labels=None, metric=None):
    """Writes ``RUN_DIR/report/report.md`` and ``report.html`` with their PNG plots.

    Args:
        run_dir: a run directory of :func:`keras_split.grow_schedule`.
        images, labels: a few test examples (arrays) for the GradCAM/saliency
            maps; without them the report says so and has no attention maps.
        metric: the accuracy key of ``results.json`` (default: ``test_accuracy``
            or ``top1``, whichever is present).

    Returns:
        The path of ``report.md``.

    Raises:
        ValueError: for a directory that is not a run directory.

    Example:
        >>> write_report("runs/demo", x_test[:6], y_test[:6])
    """
    from keras_split.growing.schedule import load_stage_model

    _, stage_dirs = _stage_dirs(run_dir)
    out = os.path.join(run_dir, "report")
    os.makedirs(out, exist_ok=True)
    history = _load_json(os.path.join(stage_dirs[-1], "history.json"), {"stages": []})
    rows = _load_json(os.path.join(run_dir, "results.json"), [])
    baselines = _load_json(os.path.join(run_dir, "baselines.json"), [])
    retrained = _load_json(os.path.join(run_dir, "retrained.json"))
    comparison = _load_json(os.path.join(run_dir, "comparison.json"))
    seeds = _load_json(os.path.join(run_dir, "seeds.json"))
    metric = metric or next((m for m in ("test_accuracy", "top1") if rows and m in rows[0]), None)
    models_by_stage = [load_stage_model(os.path.join(d, "model.keras")) for d in stage_dirs]
    pngs = []
    if rows and metric:
        _plot_accuracy(rows, baselines, os.path.join(out, "accuracy_vs_macs.png"), metric,
                       retrained)
        pngs.append(("Accuracy against MACs", "accuracy_vs_macs.png"))
    pngs += _model_plots(out, models_by_stage, history, images, labels)
    note = ("" if images is not None and len(images) else
            "No test images were given, so the report has no GradCAM/saliency maps.")
    lines = [f"# Growth report: {os.path.basename(os.path.abspath(run_dir))}", ""]
    lines += _stage_table(models_by_stage, rows, history, metric)
    lines += _limits_section(models_by_stage, history)
    lines += _comparison_section(comparison) + _seeds_section(seeds)
    for title, png in pngs:
        lines += [f"## {title}", "", f"![{title}]({png})", ""]
    if note:
        lines += [note, ""]
    return _write_documents(out, lines, pngs, note)


def _model_plots(out, models_by_stage, history, images, labels):
    """Plots the widths, the spectra and (given ``images``) the attention maps of a
    run's models into ``out``; returns their ``(title, png)``."""
    widths = [{n: m.channel_graph.units(n) for n in m.splittable_layers}
              for m in models_by_stage]
    _plot_widths(widths, os.path.join(out, "widths.png"))
    pngs = [("Layer widths across stages", "widths.png")]
    if history["stages"]:
        _plot_spectra(history["stages"], os.path.join(out, "spectra.png"))
        pngs.append(("Splitting spectra", "spectra.png"))
    if images is not None and len(images):
        _plot_attention({"seed": models_by_stage[0].strip(), "final": models_by_stage[-1].strip()},
                        np.asarray(images, dtype="float32"), np.asarray(labels),
                        os.path.join(out, "attention.png"))
        pngs.append(("GradCAM and saliency (tf-keras-vis), seed and final model", "attention.png"))
    return pngs


def _stage_table(models_by_stage, rows, history, metric):
    """The Markdown lines of the per-stage table (MACs, params, accuracy, groups split,
    the selection's stability, twins) and its note."""
    from keras_split.growing.twins import twin_statistics
    from keras_split.select.flops import count_flops

    lines = ["| stage | MACs | params | " + (f"{metric} |" if metric else "")
             + " groups split | stability | twins |",
             "|---:|---:|---:|" + ("---:|" if metric else "") + "---:|---:|---:|"]
    for k, model in enumerate(models_by_stage):
        row = rows[k] if k < len(rows) else {}
        stage = history["stages"][k - 1] if 0 < k <= len(history["stages"]) else {}
        jaccard = (stage.get("stability") or {}).get("jaccard")
        acc = f" {row.get(metric, float('nan')):.4f} |" if metric else ""
        twins = twin_statistics(model)["twin_fraction"]
        lines.append(f"| {k} | {count_flops(model):,} | {model.count_params():,} |{acc} "
                     f"{stage.get('n_selected', '-')} | "
                     f"{'-' if jaccard is None else f'{jaccard:.2f}'} | {twins:.1%} |")
    return lines + ["", "stability: the Jaccard index between the groups chosen with the "
                    "held-out batches' eigenvalues and those chosen with the estimation "
                    "data's (same vectors, two samples; 1 is the same choice). twins: the "
                    "share of Dense/Conv2D units whose incoming kernel has a cosine above "
                    "0.99 with another unit of its layer (split children that stayed "
                    "copies).", ""]


def _limits_section(models_by_stage, history):
    """The Markdown lines of the further budgets of every stage: the cost model's totals
    before and after (its prediction) and, for a measured cost (latency), the stage's
    whole model measured now on this machine with the model's default settings."""
    from keras_split.select import cost_library

    lines = []
    for k, stage in enumerate(history["stages"], start=1):
        for record in stage.get("limits") or []:
            cost = (cost_library.get(record["cost"]) if record["cost"] in cost_library.BUILT_IN
                    else None)
            measured = (f"{cost.measure_model(models_by_stage[k].strip()):.4g}"
                        if hasattr(cost, "measure_model") and k < len(models_by_stage) else "-")
            lines.append(f"| {k} | {record['cost']} | {record['limit']:.4g} | "
                         f"{record['before']:.4g} | {record['after']:.4g} | {measured} |")
    if not lines:
        return []
    return (["## Budgets", "", "| stage | cost | limit | before | after (predicted) | "
             "after (measured) |", "|---:|---|---:|---:|---:|---:|"] + lines
            + ["", "after (measured): the stage's whole model timed on this machine "
               "(TFLite interpreter, the cost model's default settings).", ""])


def _comparison_section(comparison):
    """The Markdown lines comparing grown, retrained and width multiplier (none without
    ``comparison.json``)."""
    if not comparison:
        return []
    lines = ["## In place vs found architecture vs width multiplier", "",
             "| network | MACs | params | epochs | accuracy |", "|---|---:|---:|---:|---:|"]
    for key in ("grown", "retrained", "width"):
        r = comparison[key]
        lines.append(f"| {r['label']} | {r['macs']:,} | {r['params']:,} | {r['epochs']} "
                     f"| {r['accuracy']:.4f} |")
    return lines + ["", comparison["verdict"], "",
                    "Protocol: the width multiplier is the narrowest uniform width with at "
                    "least the grown network's MACs; it and the found architecture (the grown "
                    "widths, freshly initialised) are trained from scratch for as many epochs as the "
                    "grown network received in all, with the same optimizer and one cosine "
                    "learning-rate schedule.", ""]


def _seeds_section(seeds):
    """The Markdown lines of the table over seeds (none for a single seed)."""
    if not seeds or len(seeds["runs"]) <= 1:
        return []
    lines = [f"## Over {len(seeds['runs'])} seeds", "",
             "| seed | grown in place | width multiplier | found architecture, retrained |",
             "|---:|---:|---:|---:|"]
    for r in seeds["runs"]:
        lines.append(f"| {r['seed']} | {r['grown']['accuracy']:.4f} | "
                     f"{r['width']['accuracy']:.4f} ({r['width']['label']}) | "
                     f"{r['retrained']['accuracy']:.4f} |")
    return lines + ["", seeds["verdict"], ""]


def _write_documents(out, lines, pngs, note):
    """Writes ``report.md`` (``lines``) and ``report.html`` into ``out``; returns the
    path of ``report.md``."""
    md = os.path.join(out, "report.md")
    with open(md, "w") as f:
        f.write("\n".join(lines))
    body = "".join(
        f"<h2>{html.escape(t)}</h2><img src='{p}' style='max-width:100%'>" for t, p in pngs)
    table = "<pre>" + html.escape("\n".join(lines[2:])) + "</pre>"
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write(f"<html><body><h1>{html.escape(lines[0][2:])}</h1>{table}{body}"
                f"<p>{html.escape(note)}</p></body></html>")
    return md
