"""Activations, losses and their gradients, written as the formulas of an intro deep-learning course.

Conventions: a batch is (B, ...) and every loss is the MEAN over the batch (summed over any output units
of one example), returned as a NumPy scalar of the input's precision (so a float128 gradient check keeps its
extra digits). Losses take (input, target) like torch: `stable_logistic_loss(z, y)`. Each `*_grad` takes
the same arguments and returns dLoss/d(input), shaped like the input.
"""

from __future__ import annotations

import numpy as np

LOG_EPS = 1e-12  # clip for log(p) in the naive logistic loss


# ---------------------------------------------------------------- activations


def floats(z, where: str = "input") -> np.ndarray:
    """`z` (a scalar, list or array of real numbers) as a floating NumPy array; whole numbers become float64,
    float16/32/128 arrays keep their precision. Anything else is a TypeError naming `where`."""
    array = np.asarray(z)
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    if array.dtype.kind != "f":
        raise TypeError(f"{where}: expected real numbers (a scalar, a list or an array), got {array.dtype} "
                        f"({type(z).__name__})")
    return array


def _with_axis(z, where: str) -> np.ndarray:
    """floats(z), which must have at least one axis (softmax normalizes along one)."""
    array = floats(z, where)
    if array.ndim == 0:
        raise ValueError(f"{where}: a scalar has no axis to normalize over; pass a list or an array")
    return array


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^{-z}), computed from e^{-|z|} so it never overflows (z = ±1e10 is fine)."""
    z = floats(z, "sigmoid")
    one = z.dtype.type(1)  # not 1.0: NumPy 1.x makes float64 of a float32 scalar and a Python float
    e = np.exp(-np.abs(z))  # in (0, 1]: no overflow
    return np.where(z >= 0, one / (one + e), e / (one + e))


def sigmoid_grad(z: np.ndarray) -> np.ndarray:
    """σ'(z) = σ(z) (1 - σ(z))."""
    s = sigmoid(floats(z, "sigmoid_grad"))
    return s * (s.dtype.type(1) - s)


def relu(z: np.ndarray) -> np.ndarray:
    """max(0, z)."""
    z = floats(z, "relu")
    return np.maximum(z, z.dtype.type(0))


def relu_grad(z: np.ndarray) -> np.ndarray:
    """1 where z > 0, else 0 (the subgradient 0 at z = 0, as torch uses)."""
    z = floats(z, "relu_grad")
    return (z > 0).astype(z.dtype)


def tanh(z: np.ndarray) -> np.ndarray:
    return np.tanh(floats(z, "tanh"))


def tanh_grad(z: np.ndarray) -> np.ndarray:
    """tanh'(z) = 1 - tanh²(z)."""
    t = np.tanh(floats(z, "tanh_grad"))
    return t.dtype.type(1) - t * t


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z)_k = e^{z_k - m} / Σ_j e^{z_j - m} with m = max_j z_j, so no exponent is positive."""
    z = _with_axis(z, "softmax")
    shifted = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z)_k = (z_k - m) - log Σ_j e^{z_j - m}."""
    z = _with_axis(z, "log_softmax")
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax_backward(s: np.ndarray, g: np.ndarray, axis: int = -1) -> np.ndarray:
    """Given s = softmax(z) and g = dL/ds, dL/dz = s ⊙ (g - Σ_k g_k s_k)  (the Jacobian diag(s) - s sᵀ applied to g)."""
    s, g = _with_axis(s, "softmax_backward: s"), _same_shape(s, g, "softmax_backward", "s")
    return s * (g - np.sum(g * s, axis=axis, keepdims=True))


def log_softmax_backward(z: np.ndarray, g: np.ndarray, axis: int = -1) -> np.ndarray:
    """Given g = dL/d log_softmax(z), dL/dz = g - softmax(z) Σ_k g_k."""
    g = _same_shape(z, g, "log_softmax_backward", "z")
    return g - softmax(z, axis=axis) * np.sum(g, axis=axis, keepdims=True)


def _same_shape(x, g, where: str, name: str) -> np.ndarray:
    """floats(g), which must be shaped like `x` (an upstream gradient is never broadcast)."""
    g = floats(g, f"{where}: g")
    if g.shape != np.shape(x):
        raise ValueError(f"{where}: g of shape {g.shape} does not fit {name} of shape {np.shape(x)}; expected "
                         f"{np.shape(x)}")
    return g


ACTIVATIONS = {"sigmoid": (sigmoid, sigmoid_grad), "relu": (relu, relu_grad), "tanh": (tanh, tanh_grad)}


# ---------------------------------------------------------------- losses
#
# Every loss and its gradient take (input, target) in torch's order: the network's output first (logits z,
# probabilities ŷ or the raw score), the labels y second. Shapes are checked before any arithmetic, so a
# label array can never broadcast against the logits: for one output unit, y of shape (B,) or (B, 1) is
# reshaped to the logits' shape (B, 1) or (B,), which gives bit-identical results; any other mismatch is a
# ValueError naming both shapes and what was expected.

BINARY, MARGIN, REAL, CLASSES = "labels in [0, 1]", "labels ±1", "real targets", "classes"


def _batch_shape(where: str, name: str, shape: tuple[int, ...]) -> None:
    if len(shape) not in (1, 2) or 0 in shape:
        raise ValueError(f"{where}: {name} of shape {shape}; expected (B,) or (B, K) with B, K >= 1")


def check_labels(kind: str, where: str, name: str, shape: tuple[int, ...], y, dtype=None) -> np.ndarray:
    """y checked against an input of `shape` (called `name` in messages), returned ready for the loss, in
    `dtype` (the input's: float64 labels made a float32 MLP's gradients, then its weights, float64) if given.

    kind BINARY, MARGIN or REAL: y reshaped to `shape` (one output unit: (B,) and (B, 1) are both fine).
    kind CLASSES: `shape` is (B, K) logits and y int labels (B,) or one-hot (B, K); returned one-hot.
    """
    y = np.asarray(y)
    if kind == CLASSES:
        if len(shape) != 2 or 0 in shape:
            raise ValueError(f"{where}: {name} of shape {shape}; expected (B, K) with B, K >= 1")
        b, k = shape
        if y.shape not in ((b,), (b, k)):
            raise ValueError(f"{where}: y of shape {y.shape} does not fit {name} of shape {shape}; expected int "
                             f"labels of shape ({b},) or one-hot labels of shape ({b}, {k})")
        Y = one_hot(y, k, where=where)
        return Y if dtype is None else Y.astype(dtype, copy=False)
    _batch_shape(where, name, shape)
    single = shape[1:] in ((), (1,))
    if y.shape != shape and not (single and y.shape in ((shape[0],), (shape[0], 1))):
        expected = f"({shape[0]},) or ({shape[0]}, 1)" if single else str(shape)
        raise ValueError(f"{where}: y of shape {y.shape} does not fit {name} of shape {shape}; "
                         f"expected y of shape {expected}")
    if kind == BINARY and not np.all((y >= 0) & (y <= 1)):
        raise ValueError(f"{where}: labels y must lie in [0, 1], got {_some(y[~((y >= 0) & (y <= 1))])} "
                         "(labels ±1 belong to margin_logistic_loss)")
    if kind == MARGIN and not np.all(np.abs(y) == 1):
        raise ValueError(f"{where}: labels y must be -1 or +1, got {_some(y[np.abs(y) != 1])} "
                         "(labels 0/1 belong to stable_logistic_loss)")
    y = y.reshape(shape)
    return y if dtype is None else y.astype(dtype, copy=False)


def _some(bad: np.ndarray) -> str:
    """The first few distinct offending values, for an error message."""
    values = np.unique(bad)
    return ", ".join(f"{v:g}" for v in values[:3]) + (", ..." if len(values) > 3 else "")


def _input(where: str, name: str, z) -> np.ndarray:
    z = floats(z, f"{where}: {name}")
    _batch_shape(where, name, z.shape)
    return z


def _batch_mean(total, like: np.ndarray):
    """A loss's sum over the batch divided by B, in `like`'s precision: NumPy 1.x made a float32 scalar over a
    Python int (or times a Python float) float64."""
    return total / like.dtype.type(like.shape[0])


def logistic_loss(y_hat: np.ndarray, y: np.ndarray) -> float:
    """Naive binary cross-entropy from probabilities: -(1/B) Σ [y log ŷ + (1-y) log(1-ŷ)], ŷ clipped to
    [ε, 1-ε], ε = LOG_EPS or ŷ's machine epsilon where that is larger (in float32 1 - 1e-12 is 1: log(0), inf).

    Correct in the middle, but log(1-ŷ) loses everything once σ(z) rounds to 1: use stable_logistic_loss.
    """
    y_hat = _input("logistic_loss", "y_hat", y_hat)
    y = check_labels(BINARY, "logistic_loss", "y_hat", y_hat.shape, y, y_hat.dtype)
    eps = max(LOG_EPS, float(np.finfo(y_hat.dtype).eps))
    p = np.clip(y_hat, eps, 1.0 - eps)
    return _batch_mean(-np.sum(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)), y_hat)


def logistic_loss_grad(y_hat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d/dz of logistic_loss(σ(z), y) = (ŷ - y) / B (the σ' cancels the 1/(ŷ(1-ŷ))); shaped like ŷ. Where
    logistic_loss clips ŷ (σ(z) within ε of 0 or 1: LOG_EPS, or float32's epsilon) its loss is flat and this is
    not its gradient: the gradient of the unclipped loss, which stable_logistic_loss computes in full."""
    y_hat = _input("logistic_loss_grad", "y_hat", y_hat)
    y = check_labels(BINARY, "logistic_loss_grad", "y_hat", y_hat.shape, y, y_hat.dtype)
    return (y_hat - y) / y_hat.shape[0]


def stable_logistic_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Binary cross-entropy from logits, y in [0, 1]: (1/B) Σ [log(1 + e^z) - y z], as torch computes it:
    max(z, 0) - y z + log(1 + e^-|z|). (log(1 + e^z) - y z, with logaddexp, cancelled to 0 for y = 1 and a large
    z: 0.0 for z = 40, where the loss is 4.2e-18.)"""
    z = _input("stable_logistic_loss", "z", z)
    y = check_labels(BINARY, "stable_logistic_loss", "z", z.shape, y, z.dtype)
    return _batch_mean(np.sum(np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))), z)


def stable_logistic_loss_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(σ(z) - y) / B, shaped like z."""
    z = _input("stable_logistic_loss_grad", "z", z)
    y = check_labels(BINARY, "stable_logistic_loss_grad", "z", z.shape, y, z.dtype)
    return (sigmoid(z) - y) / z.shape[0]


def margin_logistic_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Logistic loss with labels y in {-1, +1}: (1/B) Σ log(1 + e^{-y z})."""
    z = _input("margin_logistic_loss", "z", z)
    y = check_labels(MARGIN, "margin_logistic_loss", "z", z.shape, y, z.dtype)
    return _batch_mean(np.sum(np.logaddexp(0.0, -y * z)), z)


def margin_logistic_loss_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-y σ(-y z) / B, shaped like z."""
    z = _input("margin_logistic_loss_grad", "z", z)
    y = check_labels(MARGIN, "margin_logistic_loss_grad", "z", z.shape, y, z.dtype)
    return -y * sigmoid(-y * z) / z.shape[0]


def one_hot(y: np.ndarray, k: int, *, where: str = "one_hot") -> np.ndarray:
    """Integer labels (B,) in [0, k) -> one-hot (B, k) float64; a (B, k) array of one-hot or probability rows
    (non-negative, summing to 1 within 1e-5) is returned as float64, each row divided by its sum. Other rows
    ([2, 0, 0], [0, 0, 0], [0.5, 0.5, 0.5]) are refused: cross_entropy_grad's (softmax - Y) / B is the gradient
    only for rows that sum to 1, and it was silently wrong for them."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == k:
        rows = y.astype(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(rows).all(axis=1) & (rows >= 0).all(axis=1) & np.isclose(rows.sum(axis=1), 1.0))
        if np.any(bad):
            raise ValueError(f"{where}: (B, {k}) labels must be one-hot, or probabilities summing to 1 per row; row "
                             f"{int(np.argmax(bad))} is {np.asarray(y[bad][0]).tolist()}")
        # rows within isclose's 1e-5 of summing to 1, made to sum to it: (softmax - Y) / B is the gradient of the
        # loss for such rows only (a row summing to 1.000009 was off by 2.5e-5); a one-hot row is unchanged
        return rows / rows.sum(axis=1, keepdims=True)
    if y.ndim != 1:
        raise ValueError(f"{where}: y of shape {y.shape}; expected int labels (B,) or one-hot labels (B, {k})")
    bad = (np.mod(y, 1) != 0) | (y < 0) | (y >= k)
    if np.any(bad):
        raise ValueError(f"{where}: int labels must be whole numbers in [0, {k}), got {_some(y[bad])}")
    out = np.zeros((len(y), k))  # float64: promotes to the logits' precision
    out[np.arange(len(y)), y.astype(np.int64)] = 1.0
    return out


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """-(1/B) Σ_i Σ_k Y_ik log softmax(z_i)_k, with y as int labels (B,) or one-hot (B, K)."""
    logits = floats(logits, "cross_entropy: logits")
    Y = check_labels(CLASSES, "cross_entropy", "logits", logits.shape, y, logits.dtype)
    return _batch_mean(-np.sum(Y * log_softmax(logits, axis=1)), logits)


def cross_entropy_grad(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(softmax(z) - Y) / B, shaped like the logits."""
    logits = floats(logits, "cross_entropy_grad: logits")
    Y = check_labels(CLASSES, "cross_entropy_grad", "logits", logits.shape, y, logits.dtype)
    return (softmax(logits, axis=1) - Y) / logits.shape[0]


def squared_error(z: np.ndarray, y: np.ndarray) -> float:
    """(1/B) Σ ½ (z - y)²: the loss of an identity output."""
    z = _input("squared_error", "z", z)
    y = check_labels(REAL, "squared_error", "z", z.shape, y, z.dtype)
    return _batch_mean(np.sum((z - y) ** 2) * z.dtype.type(0.5), z)


def squared_error_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(z - y) / B, shaped like z."""
    z = _input("squared_error_grad", "z", z)
    y = check_labels(REAL, "squared_error_grad", "z", z.shape, y, z.dtype)
    return (z - y) / z.shape[0]
