"""`GrowthSettings`: how a growth stage estimates, selects and splits, in one object."""

import dataclasses
import functools
import math

import numpy as np

from keras_split.select import budget as budget_lib
from keras_split.select import cost_library, knapsack, limits
from keras_split.surgery.split_rule import SplitRule

# Eigenpair estimators: LOBPCG on full-data products (default), the paper's
# stochastic RMSprop, and the exact matrices.
METHODS = ("lobpcg", "fast", "exact")
MAX_GROWTH_RATIO = 100.0
# The split rule grow() uses unless told otherwise (chosen on a CIFAR-10 validation
# split, see docs/benchmarks.md).
DEFAULT_SPLIT_RULE = "fresh"
# LOBPCG stops once every candidate neuron's residual ||S v - lambda v|| is at most this
# fraction of its |lambda| (the neurons that may reach below 10 % of their layer's most
# negative eigenvalue, lobpcg.RELATIVE_FLOOR, above the selection's noise level, and in a
# stage within reach of its knapsack, select.reach.within_reach):
# the eigenvalue is then within about tol**2 |lambda| of the matrix's, far inside the
# 5 % that the tests ask of every such candidate against the exact matrices.
EIGEN_TOL = 0.1
# Half of each layer's budget kept apart, the rest shared by the network: chosen on
# validation across four CIFAR-10 families (three seeds each) against half of each output
# resolution's budget kept apart, one budget for the network and one budget per
# resolution, by a criterion written down before the runs (docs/benchmarks.md, "Budgets").
DEFAULT_BUDGET_GROUPS = "layer"
DEFAULT_GROUP_SHARE = 0.5
# What a group is worth to the knapsack (budget.VALUES): chosen on validation across four
# CIFAR-10 families against eigenvalues alone (docs/benchmarks.md, "Budgets").
DEFAULT_VALUE = "relative"
# The most LOBPCG passes of a stage (each with a block of two vectors per neuron).
EIGEN_EPOCHS = 10
# Batch sizes of array data by default. Full-data products (lobpcg, exact) give the same
# result at any batch size and cost less per example in larger batches; the
# fast method takes one RMSprop step per batch and keeps its smaller batches.
PRODUCTS_BATCH_SIZE = 128
FAST_BATCH_SIZE = 32


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def validate_eigen_args(method, eigen_epochs, eigen_tol, seed=0):
    """Raises ValueError, naming the argument, for a bad estimator setting."""
    validate_seed(seed)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method != "exact" and (not isinstance(eigen_epochs, (int, np.integer))
                              or isinstance(eigen_epochs, bool) or eigen_epochs < 1):
        raise ValueError("eigen_epochs must be a positive integer. "
                         f"Received: eigen_epochs={eigen_epochs!r}")
    if eigen_tol is not None and not (_is_number(eigen_tol) and 0 <= eigen_tol < np.inf):
        raise ValueError("eigen_tol must be None or a number >= 0. "
                         f"Received: eigen_tol={eigen_tol!r}")


def validate_seed(seed):
    """Raises ValueError for a ``seed`` that is not a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")


def capped_growth_ratio(macs, growth_ratio, max_macs):
    """The growth ratio of a stage under a MACs cap.

    Args:
        macs: the model's MACs now.
        growth_ratio: the stage's ratio without a cap.
        max_macs: the cap (None: no cap).

    Returns:
        ``growth_ratio``, cut so that ``macs * (1 + ratio) <= max_macs``; None
        once ``macs >= max_macs`` (no stage).

    Example:
        >>> capped_growth_ratio(100, 0.5, 120)
        0.2
    """
    if max_macs is None:
        return growth_ratio
    if macs >= max_macs:
        return None
    return min(growth_ratio, max_macs / macs - 1.0)


def validate_max_macs(max_macs):
    """Raises ValueError for a ``max_macs`` that is neither None nor a positive number."""
    if max_macs is not None and not (_is_number(max_macs) and max_macs > 0):
        raise ValueError("max_macs must be None or a positive number. "
                         f"Received: max_macs={max_macs!r}")


def validate_growth_args(growth_ratio, epsilon, solver, method, threshold):
    """Raises ValueError, naming the argument, for a bad selection or split setting."""
    if not (_is_number(growth_ratio) and math.isfinite(growth_ratio)
            and 0 < growth_ratio <= MAX_GROWTH_RATIO):
        raise ValueError(f"growth_ratio must be a finite number in (0, {MAX_GROWTH_RATIO}]. "
                         f"Received: growth_ratio={growth_ratio!r}")
    if not (_is_number(epsilon) and math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a finite non-negative number, got {epsilon!r}.")
    if solver not in knapsack.SOLVERS:
        raise ValueError(f"solver must be one of {knapsack.SOLVERS}, got {solver!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold > 0:
        raise ValueError(f"threshold must be a finite number <= 0, got {threshold!r}.")


@dataclasses.dataclass(frozen=True)
class GrowthSettings:
    """Every setting of a growth stage; ``grow``, GrowthCallback and grow_schedule take them.

    Attributes:
        growth_ratio: budget as a fraction of the current cost, in (0, 100]. In
            every cost mode the MACs after the stage are at most ``(1 +
            growth_ratio)`` times the MACs before.
        epsilon: overrides the split rule's step along each unit eigenvector.
        method: ``"lobpcg"`` (auxiliary-activation products ``S v`` averaged
            over the estimation data, LOBPCG iterations), ``"fast"`` (the same
            products per mini-batch, RMSprop, as the paper's code) or ``"exact"``
            (build each matrix, ``eigh``; small networks).
        eigen_epochs: lobpcg and fast: passes over the estimation batches (for
            lobpcg the most it makes).
        eigen_tol: lobpcg stops before ``eigen_epochs`` once every candidate
            neuron's residual ``||S v - lambda v||`` is at most this fraction of
            its ``|lambda|`` (the neurons that may reach below 10 % of their
            layer's most negative eigenvalue, above the noise level, and that the
            stage's knapsack could pick; None: never).
        cost: the main cost, whose total may grow by ``growth_ratio``:
            ``"flops"`` (energy-aware, the paper), ``"params"``, ``"uniform"``
            (vanilla splitting: by lambda alone under the MACs budget),
            ``"sqrt_flops"``, a :class:`~keras_split.select.cost_models.CostModel`
            or a callable ``layer -> cost of one of its neurons``.
        budgets: None, or further limits on the network's totals after every
            stage, ``{cost model or its name: limit}`` (say ``{ParamBytes("int8"):
            250_000}``); the knapsack keeps all of them next to the main cost.
        solver: ``"milp"`` (exact knapsack), ``"lp"`` (the paper's relaxation
            and rounding) or ``"greedy_value"``.
        threshold: only groups with ``lambda < threshold`` (<= 0) are candidates.
        max_units: cap on new units per layer (int, or ``{layer: int}``).
        max_widths: ``{layer: int}``, the widest a layer may become.
        round_to: ``milp``: grown layers end at a multiple of this width.
        budget_groups: ``"layer"`` (the default: one budget per splittable
            layer, each ``growth_ratio`` times its own cost; a coupled group counts
            in the budget of its first member), ``"resolution"`` (one budget per
            output resolution, as the seed papers' code), None (one budget for the
            network) or ``{layer: label}``.
        group_share: with several budget groups, the fraction (0 to 1) of its
            own budget that each group keeps; the rest of the network's budget
            goes to the best remaining candidates of any group (1: separate
            budgets only, as the seed papers' code; 0: as one budget; the
            default 0.5 keeps half of each).
        fill_budgets: with several budget groups, a group whose candidates
            (negative values) leave part of the budget it keeps spends the rest
            on its other units, least valuable first, as a width multiplier
            would widen it (False: that part goes to the shared budget).
        value: what a coupled group is worth to the knapsack: ``"relative"``
            (the default, chosen on a CIFAR-10 validation split: each eigenvalue
            times the squared norm of the unit's incoming weights, a split step
            measured relative to the unit's weights, which a BatchNormalization
            after the unit makes the scale that matters) or ``"lambda"`` (the sum
            of its units' eigenvalues, the papers').
        max_growth: None, or the largest factor by which a layer's width may
            grow in one stage (2.0: at most doubling).
        batch_size: examples per batch of array data; None (the default):
            128 for ``lobpcg`` and ``exact``, whose products average the whole
            estimation data (larger batches cost less per example), and 32 for
            ``fast``, which takes one RMSprop step per batch.
        learning_rate: fast method: RMSprop step size.
        seed: seed of the estimators' initial vectors and of the rule's draws.
        split_rule: how the children are made: ``"fresh"`` (the default, chosen
            on a CIFAR-10 validation split: the parent is kept, the second child
            gets fresh incoming weights and zero outgoing weights and slots),
            ``"antisymmetric"``, ``"copy"`` (the papers'), a
            :class:`keras_split.SplitRule` or its config dict.

    Raises:
        ValueError: for a bad value, naming the setting.

    Example:
        >>> settings = GrowthSettings(growth_ratio=0.3, cost="params")
        >>> stage = model.grow(train_ds, settings, seed=1)  # keywords override it
    """

    growth_ratio: float = 0.5
    epsilon: float = None
    method: str = "lobpcg"
    eigen_epochs: int = EIGEN_EPOCHS
    eigen_tol: float = EIGEN_TOL
    cost: object = "flops"
    budgets: dict = None
    solver: str = "milp"
    threshold: float = 0.0
    max_units: object = None
    max_widths: dict = None
    round_to: int = None
    budget_groups: object = DEFAULT_BUDGET_GROUPS
    group_share: float = DEFAULT_GROUP_SHARE
    fill_budgets: bool = False
    value: str = DEFAULT_VALUE
    max_growth: float = None
    batch_size: int = None
    learning_rate: float = 0.01
    seed: int = 0
    split_rule: object = DEFAULT_SPLIT_RULE

    def __post_init__(self):
        validate_growth_args(self.growth_ratio, self.rule.epsilon, self.solver, self.method,
                             self.threshold)
        self.cost_model   # raises ValueError for anything that is not a cost
        validate_eigen_args(self.method, self.eigen_epochs, self.eigen_tol, self.seed)
        budget_lib.check_budget_groups(self.budget_groups)
        if not (_is_number(self.group_share) and 0.0 <= self.group_share <= 1.0):
            raise ValueError("group_share must be a number from 0 to 1. "
                             f"Received: group_share={self.group_share!r}")
        if not isinstance(self.fill_budgets, (bool, np.bool_)):
            raise ValueError("fill_budgets must be True or False. "
                             f"Received: fill_budgets={self.fill_budgets!r}")
        self.budget_models   # raises ValueError for a bad key or limit
        if self.value not in budget_lib.VALUES:
            raise ValueError(f"value must be one of {budget_lib.VALUES}. "
                             f"Received: value={self.value!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(
                self.batch_size, (int, np.integer)) or self.batch_size < 1):
            raise ValueError("batch_size must be None or a positive integer. "
                             f"Received: batch_size={self.batch_size!r}")
        if self.max_growth is not None and not (_is_number(self.max_growth)
                                                and 1.0 < self.max_growth < np.inf):
            raise ValueError("max_growth must be None or a number > 1. "
                             f"Received: max_growth={self.max_growth!r}")

    @classmethod
    def papers(cls, **overrides):
        """The seed papers' code's selection and split, for reproducing them.

        Their MobileNet code (fast-energy-aware-splitting) gives each resolution
        group of layers its own budget (``budget_groups="resolution"``), costs a
        neuron the square root of the MACs it adds (``cost="sqrt_flops"``), lets
        a layer at most double per stage (``max_growth=2.0``), solves the LP
        relaxation (``solver="lp"``) and splits into copies ``theta +/- 0.01 v``
        with halved outgoing weights (``split_rule="copy"``).

        Args:
            **overrides: settings by name that replace these.

        Returns:
            A :class:`GrowthSettings`.

        Example:
            >>> model.grow(data, GrowthSettings.papers(growth_ratio=0.3))
        """
        base = dict(cost="sqrt_flops", budget_groups="resolution", group_share=1.0,
                    value="lambda", max_growth=2.0, solver="lp", split_rule="copy")
        return cls.from_arguments(None, **{**base, **overrides})

    @property
    def estimation_batch_size(self):
        """The batch size of array data: ``batch_size``, or the method's default."""
        if self.batch_size is not None:
            return int(self.batch_size)
        return FAST_BATCH_SIZE if self.method == "fast" else PRODUCTS_BATCH_SIZE

    @functools.cached_property
    def cost_model(self):
        """The :class:`~keras_split.select.cost_models.CostModel` of ``cost`` (built once)."""
        return cost_library.get(self.cost)

    @functools.cached_property
    def budget_models(self):
        """``[(CostModel, limit)]`` of ``budgets`` (built once; empty for None)."""
        return limits.resolve_budgets(self.budgets)

    @functools.cached_property
    def rule(self):
        """The :class:`~keras_split.SplitRule` with ``epsilon`` applied (built once)."""
        return SplitRule.get(self.split_rule, self.epsilon)

    @classmethod
    def from_arguments(cls, settings=None, **overrides):
        """``settings`` (default: the defaults) with ``overrides`` replaced.

        Raises:
            ValueError: for a name that is not a setting, or a bad value.
        """
        if settings is not None and not isinstance(settings, cls):
            raise ValueError(f"settings must be a GrowthSettings or None. "
                             f"Received: settings={settings!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"Unknown growth settings {unknown}. Allowed: {names}")
        return dataclasses.replace(settings or cls(), **overrides)
