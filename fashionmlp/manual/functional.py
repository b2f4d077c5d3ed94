"""Activations, losses and their gradients, written as the formulas of an intro deep-learning course.

Conventions: a batch is (B, ...) and every loss is the MEAN over the batch (summed over any output units
of one example), returned as a NumPy scalar of the input's precision (so a float128 gradient check keeps its
extra digits). Each `*_grad` returns dLoss/d(logits).
"""

from __future__ import annotations

import numpy as np

LOG_EPS = 1e-12  # clip for log(p) in the naive logistic loss


# ---------------------------------------------------------------- activations


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^{-z}), computed from e^{-|z|} so it never overflows (z = ±1e10 is fine)."""
    z = np.asarray(z, dtype=np.float64) if not isinstance(z, np.ndarray) else z
    e = np.exp(-np.abs(z))  # in (0, 1]: no overflow
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad(z: np.ndarray) -> np.ndarray:
    """σ'(z) = σ(z) (1 - σ(z))."""
    s = sigmoid(z)
    return s * (1.0 - s)


def relu(z: np.ndarray) -> np.ndarray:
    """max(0, z)."""
    return np.maximum(z, 0.0)


def relu_grad(z: np.ndarray) -> np.ndarray:
    """1 where z > 0, else 0 (the subgradient 0 at z = 0, as torch uses)."""
    return (z > 0).astype(z.dtype if isinstance(z, np.ndarray) else np.float64)


def tanh(z: np.ndarray) -> np.ndarray:
    return np.tanh(z)


def tanh_grad(z: np.ndarray) -> np.ndarray:
    """tanh'(z) = 1 - tanh²(z)."""
    return 1.0 - np.tanh(z) ** 2


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z)_k = e^{z_k - m} / Σ_j e^{z_j - m} with m = max_j z_j, so no exponent is positive."""
    shifted = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z)_k = (z_k - m) - log Σ_j e^{z_j - m}."""
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax_backward(s: np.ndarray, g: np.ndarray, axis: int = -1) -> np.ndarray:
    """Given s = softmax(z) and g = dL/ds, dL/dz = s ⊙ (g - Σ_k g_k s_k)  (the Jacobian diag(s) - s sᵀ applied to g)."""
    return s * (g - np.sum(g * s, axis=axis, keepdims=True))


def log_softmax_backward(z: np.ndarray, g: np.ndarray, axis: int = -1) -> np.ndarray:
    """Given g = dL/d log_softmax(z), dL/dz = g - softmax(z) Σ_k g_k."""
    return g - softmax(z, axis=axis) * np.sum(g, axis=axis, keepdims=True)


ACTIVATIONS = {"sigmoid": (sigmoid, sigmoid_grad), "relu": (relu, relu_grad), "tanh": (tanh, tanh_grad)}


# ---------------------------------------------------------------- losses


def _batch(z: np.ndarray) -> int:
    return z.shape[0] if np.ndim(z) else 1


def logistic_loss(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Naive binary cross-entropy from probabilities: -(1/B) Σ [y log ŷ + (1-y) log(1-ŷ)], ŷ clipped.

    Correct in the middle, but log(1-ŷ) loses everything once σ(z) rounds to 1: use stable_logistic_loss.
    """
    p = np.clip(y_hat, LOG_EPS, 1.0 - LOG_EPS)
    return -np.sum(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)) / _batch(y_hat)


def logistic_loss_grad(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """d/dz of logistic_loss(y, σ(z)) = (ŷ - y) / B (the σ' cancels the 1/(ŷ(1-ŷ)))."""
    return (y_hat - y) / _batch(y_hat)


def stable_logistic_loss(y: np.ndarray, z: np.ndarray) -> float:
    """Binary cross-entropy from logits, y in {0, 1}: (1/B) Σ [log(1 + e^z) - y z], via logaddexp(0, z)."""
    return np.sum(np.logaddexp(0.0, z) - y * z) / _batch(z)


def stable_logistic_loss_grad(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(σ(z) - y) / B."""
    return (sigmoid(z) - y) / _batch(z)


def margin_logistic_loss(y: np.ndarray, z: np.ndarray) -> float:
    """Logistic loss with labels y in {-1, +1}: (1/B) Σ log(1 + e^{-y z})."""
    return np.sum(np.logaddexp(0.0, -y * z)) / _batch(z)


def margin_logistic_loss_grad(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """-y σ(-y z) / B."""
    return -y * sigmoid(-y * z) / _batch(z)


def one_hot(y: np.ndarray, k: int) -> np.ndarray:
    """Integer labels (B,) -> one-hot (B, k); a (B, k) array is returned as float unchanged."""
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(np.float64)
    out = np.zeros((len(y), k))  # float64: promotes to the logits' precision
    out[np.arange(len(y)), y.astype(np.int64)] = 1.0
    return out


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """-(1/B) Σ_i Σ_k Y_ik log softmax(z_i)_k, with y as int labels (B,) or one-hot (B, K)."""
    return -np.sum(one_hot(y, logits.shape[1]) * log_softmax(logits, axis=1)) / logits.shape[0]


def cross_entropy_grad(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(softmax(z) - Y) / B."""
    return (softmax(logits, axis=1) - one_hot(y, logits.shape[1])) / logits.shape[0]


def squared_error(y: np.ndarray, z: np.ndarray) -> float:
    """(1/B) Σ ½ (z - y)²: the loss of an identity output."""
    return 0.5 * np.sum((z - y) ** 2) / _batch(z)


def squared_error_grad(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(z - y) / B."""
    return (z - y) / _batch(z)
