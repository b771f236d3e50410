"""The typed parts of a :class:`~keras_split.GrowthStage`, and what they share.

Every part is a dataclass with typed fields that round-trips through JSON
(``to_dict`` / ``from_dict``, nested parts included) and keeps a read-only dict
view (``record["field"]``, ``record.get("field")``) for code written against the
JSON form.

Example:
    >>> guard = GuardRecord("split", [GuardTry(0.0, 1.25)])
    >>> GuardRecord.from_dict(guard.to_dict()) == guard
    True
    >>> guard["tries"][0]["loss"]
    1.25
"""

import dataclasses
import typing


class Record:
    """Mixin of the stage's records: JSON dicts in and out, and a dict view."""

    def to_dict(self):
        """The record as plain JSON-serialisable dicts and lists."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The record of a :meth:`to_dict` result (nested records rebuilt).

        Raises:
            ValueError: for a key that is not a field, naming it.
        """
        if isinstance(d, cls):
            return d
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} fields: {sorted(unknown)}.")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _typed(hints[k], v) for k, v in d.items()})

    def __getitem__(self, key):
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key, default=None):
        """``record[key]`` for a field, else ``default`` (as ``dict.get``)."""
        try:
            return self[key]
        except KeyError:
            return default


def _typed(hint, value):
    """``value`` as ``hint`` says: a Record, an optional one, or a list or dict of them."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        # An optional record: older JSON wrote an empty dict for "none".
        hint = next(a for a in args if a is not type(None))
        return None if value == {} else _typed(hint, value)
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value)
    if origin is list and args:
        return [_typed(args[0], v) for v in value]
    if origin is dict and len(args) == 2:
        return {k: _typed(args[1], v) for k, v in value.items()}
    return value


@dataclasses.dataclass
class LayerRecord(Record):
    """One producer in one stage: widths, the units split and its eigenvalues.

    Attributes:
        units_before, units_after: the layer's units around the stage.
        split_indices: the units split (indices before the stage).
        lambda_min, lambda_mean, n_negative: statistics of its eigenvalues.
        residual_max, residual_mean: of the estimate's residuals ``||S v - lambda v||``.
        lambdas: every unit's eigenvalue.
    """

    units_before: int
    units_after: int
    split_indices: typing.List[int]
    lambda_min: float
    lambda_mean: float
    n_negative: int
    residual_max: float
    residual_mean: float
    lambdas: typing.List[float]


@dataclasses.dataclass
class GuardTry(Record):
    """One candidate the loss guard measured: its step and its held-out loss."""

    epsilon: float
    loss: float


@dataclasses.dataclass
class GuardRecord(Record):
    """What the loss guard did.

    Attributes:
        action: ``"split"``, ``"shrunk"``, ``"rolled_back"`` or ``"none"``.
        tries: the candidates measured, in order.
    """

    action: str = "none"
    tries: typing.List[GuardTry] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StageSeconds(Record):
    """Wall time of the stage's parts: eigenpairs, selection, split."""

    eigen: float = 0.0
    select: float = 0.0
    split: float = 0.0

    def total(self):
        """The three parts' sum."""
        return self.eigen + self.select + self.split


@dataclasses.dataclass
class TwinRecord(Record):
    """:func:`keras_split.twin_statistics` totals right after a stage."""

    units: int
    twins: int
    twin_fraction: float
    distinct: int


@dataclasses.dataclass
class EigenSummary(Record):
    """How far the estimate went and how well it converged.

    Attributes:
        passes: the estimator's passes over the estimation data (0 for exact).
        fit_residual_ratio: ``sum(residual) / sum(|lambda|)`` on the estimation
            data (None without passes).
        residual_ratio: the same on the held-out batches.
        unconverged: per layer, how many neurons' residual exceeds 25 % of ``|lambda|``.
    """

    passes: int = 0
    fit_residual_ratio: typing.Optional[float] = None
    residual_ratio: typing.Optional[float] = None
    unconverged: typing.Dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LimitRecord(Record):
    """A further budget of the stage (``budgets``) and the network's totals under it.

    Attributes:
        cost: the cost model's name (``"latency_ms"``, ``"param_bytes_int8"``...).
        limit: the largest total the budget allows.
        before, after: the network's total before and after the stage (for a
            measured cost, as its model predicts it).
    """

    cost: str
    limit: float
    before: float
    after: float


@dataclasses.dataclass
class StabilityRecord(Record):
    """How much the choice moves with the sample.

    Attributes:
        jaccard: the Jaccard index of the groups chosen with the held-out and with
            the estimation data's eigenvalues (None when neither chose any).
        n_held_out, n_estimation: the sizes of the two selections.
    """

    jaccard: typing.Optional[float]
    n_held_out: int
    n_estimation: int
