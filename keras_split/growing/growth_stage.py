"""`GrowthStage`: the JSON-serialisable record of one growth stage."""

import dataclasses
import json
import typing

from keras_split.growing.stage_records import (EigenSummary, GuardRecord, LayerRecord,
                                               LimitRecord, Record, StabilityRecord,
                                               StageSeconds, TwinRecord)


@dataclasses.dataclass
class GrowthStage(Record):
    """What one call of :meth:`keras_split.GrowingModel.grow` did (or would do).

    Attributes:
        stage: index of the stage in the model's growth history.
        method, cost, solver: how eigenpairs, costs and the selection were made.
        growth_ratio, epsilon, budget: the budget is ``growth_ratio`` times the
            network's cost (MACs for ``"flops"``); ``epsilon`` is the step the
            guard kept (0: rolled back).
        macs_before, macs_after, params_before, params_after: network totals.
        n_candidates, n_selected: coupled groups with ``lambda < threshold``, and chosen.
        selected_value: ``sum(lambda)`` of the chosen groups.
        predicted_loss_change: ``epsilon**2 / 2 * selected_value``.
        loss_before, loss_after, measured_loss_change: the compiled loss on the
            evaluation batches around the split (None for a dry run).
        layers: per producer, a :class:`~keras_split.growing.stage_records.LayerRecord`
            (``units_before``, ``units_after``, ``split_indices``, ``lambdas`` and
            statistics of the eigenvalues and residuals).
        seconds: a :class:`~keras_split.growing.stage_records.StageSeconds`, the
            wall time of ``eigen``, ``select`` and ``split``.
        dry_run: True when the model was not changed.
        split_rule: the :class:`keras_split.SplitRule` config used.
        guard: a :class:`~keras_split.growing.stage_records.GuardRecord`, the loss
            guard's ``action`` (``"split"``, ``"shrunk"``, ``"rolled_back"`` or
            ``"none"``) and its ``tries`` (step, held-out loss).
        children: ``{layer: [[first, second], ...]}``, every split unit's children.
        twins: a :class:`~keras_split.growing.stage_records.TwinRecord`,
            :func:`keras_split.twin_statistics` totals right after the stage.
        n_noise: negative eigenvalues ignored as noise (too small to change the loss).
        eigen: an :class:`~keras_split.growing.stage_records.EigenSummary`: the
            estimate's passes and residual ratios, and its unconverged neurons.
        limits: a :class:`~keras_split.growing.stage_records.LimitRecord` per further
            budget (``budgets``), with the totals before and after the stage.
        stability: a :class:`~keras_split.growing.stage_records.StabilityRecord`
            (the Jaccard index of the groups chosen with the held-out and with the
            estimation eigenvalues), or None (exact eigenpairs).

    The dict view of :class:`~keras_split.growing.stage_records.Record` (``stage["macs_after"]``)
    reads the same fields.

    Example:
        >>> stage = model.grow(train, growth_ratio=0.5)
        >>> GrowthStage.from_json(stage.to_json()) == stage
        True
    """

    stage: int
    method: str
    cost: str
    solver: str
    growth_ratio: float
    epsilon: float
    budget: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    n_candidates: int
    n_selected: int
    selected_value: float
    predicted_loss_change: float
    loss_before: float = None
    loss_after: float = None
    measured_loss_change: float = None
    layers: typing.Dict[str, LayerRecord] = dataclasses.field(default_factory=dict)
    seconds: StageSeconds = dataclasses.field(default_factory=StageSeconds)
    dry_run: bool = False
    split_rule: dict = dataclasses.field(default_factory=dict)
    guard: GuardRecord = dataclasses.field(default_factory=GuardRecord)
    children: typing.Dict[str, typing.List[typing.List[int]]] = dataclasses.field(
        default_factory=dict)
    twins: typing.Optional[TwinRecord] = None
    n_noise: int = 0
    eigen: EigenSummary = dataclasses.field(default_factory=EigenSummary)
    stability: typing.Optional[StabilityRecord] = None
    limits: typing.List[LimitRecord] = dataclasses.field(default_factory=list)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def summary(self):
        """One line: the stage, its MACs change, how many groups split, the loss change."""
        grown = ", ".join(
            f"{n} {l.units_before}->{l.units_after}"
            for n, l in self.layers.items() if l.units_after != l.units_before
        )
        measured = (
            "n/a" if self.measured_loss_change is None else f"{self.measured_loss_change:+.3e}"
        )
        return (
            f"stage {self.stage}{' (dry run)' if self.dry_run else ''}: "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} "
            f"({self.macs_after / max(self.macs_before, 1):.2f}x), split "
            f"{self.n_selected}/{self.n_candidates} groups, loss change predicted "
            f"{self.predicted_loss_change:+.3e} measured {measured}"
            + (f", step shrunk to {self.epsilon:g}" if self.guard.action == "shrunk"
               else ", rolled back (every step raised the held-out loss)"
               if self.guard.action == "rolled_back" else "")
            + (f", twins {self.twins.twin_fraction:.1%}" if self.twins is not None else "")
            + (f", stability (Jaccard) {self.stability.jaccard:.2f}"
               if self.stability is not None and self.stability.jaccard is not None else "")
            + "".join(f", {r.cost} {r.before:.4g} -> {r.after:.4g} (limit {r.limit:.4g})"
                      for r in self.limits)
            + (f" [{grown}]" if grown else "")
        )
