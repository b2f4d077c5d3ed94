"""Finite-difference gradient checking.

Numerical derivative by central differences, with the step scaled to the entry's size:
    n_i = [f(x + h e_i) - f(x - h e_i)] / (2h),   h = eps · max(1, |x_i|)
compared entrywise with the analytic gradient a by cs231n's relative error
    |a_i - n_i| / max(|a_i|, |n_i|, 1e-12).

The perturbed points are passed to f in extended precision (np.longdouble, 64-bit mantissa on x86-64),
so a NumPy f computes in it too: the rounding error of f(x ± h) then stays near 1e-19/h instead of
1e-16/h, which is what lets checks pass at 1e-7 even for gradient entries of size 1e-5. Where
np.longdouble is plain float64 (some platforms), the check still works, only less sharply.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

EXTENDED = np.longdouble
Fn = Callable[[np.ndarray], tuple[float, np.ndarray]]


def relative_error(a: np.ndarray, b: np.ndarray, scale: float = 0.0) -> float:
    """max_i |a_i - b_i| / max(|a_i|, |b_i|, 1e-12, scale · max_j max(|a_j|, |b_j|)), for a and b of the same
    shape (never broadcast); inf when either holds a NaN, or an infinity the other does not hold there (a NaN
    gradient passed: Python's max() of the checks' errors drops a NaN that does not come first). `scale` > 0
    judges entries far smaller than the largest against a share of it: a network's gradient entries of 1e-8
    beside ones of 0.1 hold the rounding of finite differences (~1e-13) and of float64 cancellation, which
    failed the check suite on correct code for some seeds."""
    # a NaN, or 10 (a factor-2 error read 0.05), is refused
    if isinstance(scale, bool) or not (isinstance(scale, numbers.Real) and 0.0 <= scale < 1.0):
        raise ValueError(f"relative_error: scale={scale!r}; expected a share of the largest entry, 0 <= scale < 1")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"relative_error: a of shape {a.shape} and b of shape {b.shape}; expected equal shapes")
    if a.size == 0:
        return 0.0
    same = a == b  # equal entries, equal infinities included, differ by nothing
    if np.isnan(a).any() or np.isnan(b).any() or not (np.isfinite(a) | same).all() or not (np.isfinite(b) | same).all():
        return math.inf
    sizes = np.maximum(np.abs(a), np.abs(b))
    finite = sizes[np.isfinite(sizes)]
    floor = max(1e-12, scale * float(finite.max())) if scale and finite.size else 1e-12
    with np.errstate(invalid="ignore"):
        error = np.where(same, 0.0, np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor))
    return float(np.max(error))


def numerical_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6,
                   entries: np.ndarray | None = None) -> np.ndarray:
    """Central differences of the scalar f at x for the flat `entries` (all by default; others are nan)."""
    point = np.array(x, dtype=EXTENDED, copy=True)
    flat = point.reshape(-1)
    grad = np.full(flat.shape, np.nan)
    for i in range(flat.size) if entries is None else entries:
        original = flat[i]
        h = EXTENDED(eps) * max(EXTENDED(1), abs(original))
        flat[i] = original + h
        plus = f(point)
        flat[i] = original - h
        minus = f(point)
        if np.ndim(plus) or np.ndim(minus):
            raise ValueError(f"numerical_grad: f returned a value of shape {np.shape(plus)}; expected a scalar")
        flat[i] = original
        grad[i] = float((EXTENDED(plus) - EXTENDED(minus)) / (2 * h))
    return grad.reshape(np.shape(x))


def gradcheck(f: Fn, x: np.ndarray, eps: float = 1e-6, max_entries: int | None = 2000, seed: int = 0,
              scale: float = 0.0) -> float:
    """Max relative error between f's analytic gradient at x and central differences (`scale`: relative_error's).

    f(x) returns (value, dvalue/dx): a scalar and an array shaped like x (anything else is a ValueError).
    Arrays larger than `max_entries` are checked on a seeded random sample.
    """
    if max_entries is not None and (isinstance(max_entries, bool) or not isinstance(max_entries, numbers.Integral)
                                    or max_entries < 1):  # 0 checked nothing and reported a perfect 0.0
        raise ValueError(f"gradcheck: max_entries={max_entries!r}; expected an int >= 1, or None for every entry")
    if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and 0.0 < eps < math.inf):
        raise ValueError(f"gradcheck: eps={eps!r}; expected a positive finite step")
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"gradcheck: x of shape {x.shape} has no entries to check")
    value, analytic = f(x)
    analytic = np.asarray(analytic, dtype=np.float64)
    if np.ndim(value):
        raise ValueError(f"gradcheck: f(x) returned a value of shape {np.shape(value)}; expected a scalar")
    if analytic.shape != x.shape:
        raise ValueError(f"gradcheck: f(x) returned a gradient of shape {analytic.shape} for x of shape {x.shape}; "
                         f"expected {x.shape}")
    entries = None
    if max_entries is not None and x.size > max_entries:
        entries = np.random.default_rng(seed).choice(x.size, size=max_entries, replace=False)
    numeric = numerical_grad(lambda v: f(v)[0], x, eps, entries)
    if entries is None:
        return relative_error(analytic, numeric, scale)
    return relative_error(analytic.reshape(-1)[entries], numeric.reshape(-1)[entries], scale)


def network_losses(net, X: np.ndarray, y: np.ndarray) -> dict[str, Callable[[np.ndarray], float]]:
    """{"W1": W ↦ loss, ..., "X": X ↦ loss}: the loss as a function of each parameter (the others fixed) and
    of the input, computed on an extended-precision copy of `net` for finite differences."""
    from fashionmlp.manual.mlp import MLP

    X, _ = net.check_batch(X, y, where="network_losses")
    twin = MLP.from_weights([w.astype(EXTENDED) for w in net.weights],
                            None if net.biases is None else [b.astype(EXTENDED) for b in net.biases],
                            net.hidden, net.output)

    def of_param(param: np.ndarray) -> Callable[[np.ndarray], float]:
        def loss(value: np.ndarray) -> float:
            saved = param.copy()
            param[...] = value
            try:
                return twin.loss(X, y)
            finally:
                param[...] = saved

        return loss

    losses = {name: of_param(param) for name, param in twin.params().items()}
    losses["X"] = lambda value: twin.loss(value, y)
    return losses


def check_network(net, X: np.ndarray, y: np.ndarray, eps: float = 1e-6, max_entries: int | None = 2000,
                  scale: float = 0.0) -> dict:
    """Max relative error vs finite differences of every parameter gradient and of dLoss/dX (`scale`:
    relative_error's)."""
    X, _ = net.check_batch(X, y, where="check_network")
    _, grads = net.loss_and_grads(X, y)
    grads["X"] = net.input_grad(X, y)
    points = {**net.params(), "X": X}
    return {name: gradcheck(lambda v, loss=loss, name=name: (loss(v), grads[name]), points[name], eps, max_entries,
                            scale=scale)
            for name, loss in network_losses(net, X, y).items()}
