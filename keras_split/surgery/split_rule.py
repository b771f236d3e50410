"""`SplitRule`: how the two children of a split neuron are made.

Splitting steepest descent replaces a neuron ``theta`` (incoming weights) with
outgoing weights ``w`` by two children. The seed papers make them
``theta +/- epsilon * v`` with ``w / 2`` each: at ``epsilon = 0`` the network
computes the same function, and for small ``epsilon`` the loss drops by about
``epsilon**2 / 2 * lambda``. Such children stay near copies of each other
through training (on CIFAR-10, see docs/benchmarks.md): the same halved outgoing weights
receive the same gradients, and the ``epsilon * v`` difference grows far too
slowly. A rule decides the following, each function-preserving at ``epsilon = 0``:

* ``incoming``: ``"eigen"``, children ``theta +/- eps_i * v``, with ``eps_i =
  epsilon`` (``relative=False``) or ``epsilon * ||theta||`` (``relative=True``);
  ``"fresh"``, the first child keeps ``theta`` and the second gets freshly drawn
  incoming weights (normal, with the layer's kernel RMS) plus ``+/- eps_i * v``.
* ``outgoing``: how every consumer's two rows of a split channel share ``w``:
  ``"halves"`` (``w/2, w/2``, the papers), ``"antisymmetric"`` (``w/2 + z, w/2 -
  z`` with ``z`` normal of RMS ``noise`` times the consumer kernel's RMS: the
  children then get opposite gradients and diverge at once), or ``"parent"``
  (``w, 0``: the second child starts silent).
* the optimizer state of the children: slots are copied from the parent, and
  with ``reset_slots=True`` the second child's slots (its incoming weights and
  its rows in every consumer) start at zero.
* how fast the rest of the network learns: ``old_scale=s < 1`` multiplies, at every
  split, the kernel and bias of every producer that a BatchNormalization directly
  follows by ``s``, and that BatchNormalization's moving mean by ``s``, its moving
  variance and ``epsilon`` by ``s**2``: the network computes exactly the same function
  (the normalisation divides the scale out) and those kernels' effective learning rate
  grows by ``1 / s**2`` (the "shrink" of shrink-and-perturb warm starting).
* how fast the second children learn: ``catch_up=g > 1`` multiplies the gradient
  of every weight entry the split creates by ``g`` at first, decaying linearly to
  1 over as many steps as the network had trained before the split (see
  :mod:`keras_split.surgery.catch_up`); the function at the split is unchanged.

Example:
    >>> rule = SplitRule.get("antisymmetric")
    >>> rule.scaled(0.5).epsilon == rule.epsilon / 2
    True
"""

import dataclasses
import math

import numpy as np

INCOMING = ("eigen", "fresh")
# The scale of a fresh child's incoming weights: the RMS of the layer's trained kernel,
# or the RMS of the layer's own kernel initializer at the widened shape (what a network
# of the new width trained from scratch starts with).
FRESH_INIT = ("kernel", "initializer")
OUTGOING = ("halves", "antisymmetric", "parent")


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """How the children of a split neuron are made (see the module docstring).

    Args:
        epsilon: step along each neuron's splitting eigenvector (>= 0).
        relative: the step is ``epsilon * ||theta_i||`` for neuron ``i``.
        incoming: ``"eigen"`` or ``"fresh"``.
        outgoing: ``"halves"``, ``"antisymmetric"`` or ``"parent"``.
        noise: ``"antisymmetric"``: RMS of ``z`` relative to the consumer kernel's RMS.
        reset_slots: zero the optimizer slots of every second child.
        fresh_init: ``"fresh"`` children: ``"kernel"`` (normal with the RMS of the
            layer's kernel) or ``"initializer"`` (normal with the RMS of the
            layer's ``kernel_initializer`` at the widened kernel's shape).
        fresh_scale: ``"fresh"`` children: multiplies that RMS (> 0). Before a
            BatchNormalization a unit's output does not depend on the scale of
            its incoming weights, and its effective learning rate goes as
            ``1 / scale**2``: a small scale lets new units catch up.
        catch_up: the gradient multiplier (>= 1) of the entries the split
            creates, at the split; it decays to 1 over as many steps as the
            network trained before (1: off; see :mod:`keras_split.surgery.catch_up`).
        old_scale: in (0, 1]: the factor every kernel ahead of a BatchNormalization
            is multiplied by at a split, its normalisation compensating exactly
            (1: off; see the module docstring).

    Raises:
        ValueError: for a bad argument, naming it.
    """

    epsilon: float = 1e-2
    relative: bool = False
    incoming: str = "eigen"
    outgoing: str = "halves"
    noise: float = 0.0
    reset_slots: bool = False
    fresh_init: str = "kernel"
    fresh_scale: float = 1.0
    catch_up: float = 1.0
    old_scale: float = 1.0

    def __post_init__(self):
        for name in ("epsilon", "noise", "fresh_scale", "catch_up", "old_scale"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ValueError(
                    f"{name} must be a finite non-negative number. Received: {name}={value!r}")
        if self.incoming not in INCOMING:
            raise ValueError(f"incoming must be one of {INCOMING}. "
                             f"Received: incoming={self.incoming!r}")
        if self.fresh_init not in FRESH_INIT:
            raise ValueError(f"fresh_init must be one of {FRESH_INIT}. "
                             f"Received: fresh_init={self.fresh_init!r}")
        if self.fresh_scale <= 0:
            raise ValueError("fresh_scale must be a positive number. "
                             f"Received: fresh_scale={self.fresh_scale!r}")
        if not 0 < self.old_scale <= 1:
            raise ValueError("old_scale must be a number in (0, 1]. "
                             f"Received: old_scale={self.old_scale!r}")
        if self.catch_up < 1:
            raise ValueError("catch_up must be a number >= 1. "
                             f"Received: catch_up={self.catch_up!r}")
        if self.outgoing not in OUTGOING:
            raise ValueError(f"outgoing must be one of {OUTGOING}. "
                             f"Received: outgoing={self.outgoing!r}")

    @classmethod
    def get(cls, identifier, epsilon=None):
        """A rule from a name in :data:`RULES`, a ``SplitRule``, or a config dict.

        Args:
            identifier: the rule.
            epsilon: when not None, replaces the rule's ``epsilon``.

        Raises:
            ValueError: for an unknown name, a bad type or a bad ``epsilon``.
        """
        if isinstance(identifier, cls):
            rule = identifier
        elif isinstance(identifier, dict):
            rule = cls(**identifier)
        elif isinstance(identifier, str) and identifier in RULES:
            rule = RULES[identifier]
        else:
            raise ValueError(
                f"split_rule must be one of {sorted(RULES)}, a SplitRule or its config dict. "
                f"Received: split_rule={identifier!r}")
        if epsilon is None:
            return rule
        if isinstance(epsilon, np.floating):
            epsilon = float(epsilon)
        return dataclasses.replace(rule, epsilon=epsilon)

    @property
    def preserves_function(self):
        """True when a split with this rule computes exactly the same function."""
        return self.epsilon == 0

    def scaled(self, factor):
        """The same rule with ``epsilon`` multiplied by ``factor`` (for step shrinking)."""
        return dataclasses.replace(self, epsilon=self.epsilon * factor)

    def get_config(self):
        return dataclasses.asdict(self)


# The scale of the default rule's fresh children, relative to the layer's kernel RMS: chosen
# on CIFAR-10 validation splits across network families (benchmarks/growth_families.py).
FRESH_SCALE = 0.5
# The default rule's shrink of the kernels ahead of a BatchNormalization at every split
# (``old_scale``), chosen the same way.
OLD_SCALE = 0.7

# Named rules. "copy" is the seed papers' split; docs/benchmarks.md compares them.
RULES = {
    "copy": SplitRule(epsilon=1e-2),
    "antisymmetric": SplitRule(epsilon=0.1, relative=True, outgoing="antisymmetric",
                               noise=1.0, reset_slots=True),
    "fresh": SplitRule(epsilon=0.0, incoming="fresh", outgoing="parent", reset_slots=True,
                       fresh_scale=FRESH_SCALE, old_scale=OLD_SCALE),
}
