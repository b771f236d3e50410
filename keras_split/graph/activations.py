"""Second derivatives of activation functions, and the ReLU-family surrogate.

The splitting matrix of a neuron ``a = sigma(c * (theta . p) + b)`` is
``S = E[dL/da * sigma''(z) * c**2 * p p^T]``. This module answers one question:
given the activation that closes a neuron, what is ``sigma''(z)``?

* Smooth element-wise activations (swish/silu, tanh, sigmoid, softplus, gelu,
  elu, selu, mish, ...) use their true second derivative: in closed form for
  Keras' silu, sigmoid, tanh and softplus (``CLOSED_FORMS``, cheaper to trace),
  otherwise by automatic differentiation of the activation itself (two nested
  ``tf.GradientTape``), so that any element-wise activation is supported.
* Piecewise-linear activations (relu, relu6, leaky_relu, hard_sigmoid, and the
  identity of a neuron with no activation) have ``sigma'' = 0`` almost
  everywhere, which would make every splitting matrix zero. Following the code of
  the splitting papers, ``surrogate="softplus"`` (the default of
  :class:`keras_split.GrowingModel`) replaces their ``sigma''`` by that of a
  smooth surrogate, ``softplus_beta(z) = log(1 + exp(beta * z)) / beta`` with
  ``beta = 3`` by default (``surrogate_beta``: larger is closer to the ReLU's kink,
  smaller spreads the weight over more pre-activations), whose second derivative is
  ``beta * s * (1 - s)`` with ``s = sigmoid(beta * z)``. ``surrogate=None`` keeps the
  true (zero) value.
"""

import math

import keras
import tensorflow as tf

SURROGATES = (None, "softplus")
SOFTPLUS_BETA = 3.0

# Activation names (as `keras.activations.serialize` reports them) whose second
# derivative is zero almost everywhere.
PIECEWISE_LINEAR = frozenset(
    {"relu", "relu6", "leaky_relu", "linear", "hard_sigmoid", "identity"}
)
# Activations that mix channels and so cannot close a neuron.
NON_ELEMENTWISE = frozenset({"softmax", "log_softmax"})


def activation_name(fn):
    """Returns the registered name of an activation function, or its `__name__`.

    Args:
        fn: an activation callable (e.g. ``keras.activations.swish``) or None.

    Returns:
        A lower-case string; ``"linear"`` for None.

    Example:
        >>> activation_name(keras.activations.get("swish"))
        'silu'
    """
    if fn is None:
        return "linear"
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        name = getattr(fn, "__name__", repr(fn))
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name", "custom"))
    return str(name).lower()


def validate_surrogate(surrogate):
    """Checks a ``surrogate`` argument.

    Args:
        surrogate: None or ``"softplus"``.

    Returns:
        The surrogate unchanged.

    Raises:
        ValueError: for any other value.
    """
    if surrogate not in SURROGATES:
        raise ValueError(
            f"surrogate must be one of {SURROGATES}, got {surrogate!r}."
        )
    return surrogate


def validate_surrogate_beta(beta):
    """Checks a ``surrogate_beta`` argument (the softplus surrogate's sharpness).

    Args:
        beta: a positive, finite number.

    Returns:
        ``beta`` as a float.

    Raises:
        ValueError: for anything else.

    Example:
        >>> validate_surrogate_beta(3)
        3.0
    """
    if (isinstance(beta, bool) or not isinstance(beta, (int, float))
            or not math.isfinite(beta) or beta <= 0):
        raise ValueError(
            f"surrogate_beta must be a positive finite number. Received: surrogate_beta={beta!r}"
        )
    return float(beta)


def softplus_surrogate_second_derivative(z, beta=SOFTPLUS_BETA):
    """``d^2/dz^2 [log(1 + exp(beta z)) / beta] = beta s (1 - s)``, ``s = sigmoid(beta z)``.

    Args:
        z: a tensor of pre-activations.
        beta: the softplus sharpness.

    Returns:
        A tensor like ``z``.
    """
    s = tf.sigmoid(beta * z)
    return beta * s * (1.0 - s)


def _silu_second_derivative(z):
    s = tf.sigmoid(z)
    return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))


def _sigmoid_second_derivative(z):
    s = tf.sigmoid(z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _tanh_second_derivative(z):
    t = tf.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _softplus_second_derivative(z):
    s = tf.sigmoid(z)
    return s * (1.0 - s)


# Closed forms of the commonest smooth activations, keyed by the Keras function itself
# (a custom function of the same name goes through autodiff): nested autodiff costs
# tracing per neuron layer, which a growth stage pays again after every
# split (tests/test_splitting.py checks each against autodiff).
CLOSED_FORMS = {
    keras.activations.silu: _silu_second_derivative,
    keras.activations.sigmoid: _sigmoid_second_derivative,
    keras.activations.tanh: _tanh_second_derivative,
    keras.activations.softplus: _softplus_second_derivative,
}


def autodiff_second_derivative(fn, z):
    """Element-wise ``fn''(z)`` of an element-wise function, by nested autodiff.

    Args:
        fn: an element-wise callable on tensors.
        z: the point, a float tensor.

    Returns:
        A tensor like ``z`` holding ``fn''(z)`` (no gradient flows through it).

    Example:
        >>> autodiff_second_derivative(tf.tanh, tf.constant([0.5]))  # -2 t (1 - t^2)
    """
    z = tf.stop_gradient(z)
    with tf.GradientTape() as outer:
        outer.watch(z)
        with tf.GradientTape() as inner:
            inner.watch(z)
            y = fn(z)
        dy = inner.gradient(y, z)
        if dy is None:
            return tf.zeros_like(z)
    d2y = outer.gradient(dy, z)
    if d2y is None:
        return tf.zeros_like(z)
    return tf.stop_gradient(d2y)


class NeuronActivation:
    """The activation that closes a neuron, with its second derivative.

    Args:
        fn: the element-wise activation callable (None for the identity).
        name: its name, used to recognise the piecewise-linear family.
        surrogate: None or ``"softplus"`` (see the module docstring).
        beta: the softplus surrogate's sharpness.

    Example:
        >>> act = NeuronActivation(keras.activations.relu, "relu", "softplus")
        >>> act.uses_surrogate
        True
    """

    def __init__(self, fn, name, surrogate, beta=SOFTPLUS_BETA):
        self.fn = fn
        self.name = name
        self.surrogate = validate_surrogate(surrogate)
        self.beta = validate_surrogate_beta(beta)
        self.piecewise_linear = name in PIECEWISE_LINEAR

    @property
    def uses_surrogate(self):
        return self.piecewise_linear and self.surrogate is not None

    @property
    def is_zero(self):
        """True when ``sigma''`` is identically zero (no splitting signal)."""
        return self.piecewise_linear and self.surrogate is None

    def second_derivative(self, z):
        """``sigma''(z)`` (or the surrogate's), a tensor like ``z``."""
        if self.uses_surrogate:
            return softplus_surrogate_second_derivative(z, self.beta)
        if self.is_zero:
            return tf.zeros_like(z)
        closed_form = CLOSED_FORMS.get(self.fn)
        if closed_form is not None:
            return tf.stop_gradient(closed_form(tf.stop_gradient(z)))
        return autodiff_second_derivative(self.fn, z)

    def __repr__(self):
        return (
            f"NeuronActivation({self.name!r}, surrogate="
            f"{self.surrogate if self.uses_surrogate else None!r})"
        )
