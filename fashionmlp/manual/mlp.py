"""A multi-layer perceptron in NumPy with a hand-written backward pass.

Row-vector convention: X is (B, fan_in); layer l computes Z_l = A_{l-1} W_l + b_l with W_l of shape
(fan_in, fan_out), A_0 = X, A_l = g(Z_l) for hidden layers and the output head h(Z_L) for the last.

Backpropagation, with δ_l = dLoss/dZ_l:
    δ_L = dLoss/dZ_L                       (from the loss: e.g. (softmax(Z_L) - Y) / B)
    dW_l = A_{l-1}ᵀ δ_l,   db_l = Σ_rows δ_l
    δ_{l-1} = (δ_l W_lᵀ) ⊙ g'(Z_{l-1})
    dLoss/dX = δ_1 W_1ᵀ
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fashionmlp.manual import functional as F


class Head(NamedTuple):
    value: Callable[[np.ndarray], np.ndarray]  # the head's output from the logits Z_L
    loss: Callable[[np.ndarray, np.ndarray], float]  # loss(Z_L, y)
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray]  # dLoss/dZ_L, shaped like Z_L
    labels: str  # what y may hold (functional.BINARY, MARGIN, REAL or CLASSES)


HEADS = {
    "softmax": Head(lambda z: F.softmax(z, axis=1), F.cross_entropy, F.cross_entropy_grad, F.CLASSES),
    "sigmoid": Head(F.sigmoid, F.stable_logistic_loss, F.stable_logistic_loss_grad, F.BINARY),
    "margin": Head(lambda z: z, F.margin_logistic_loss, F.margin_logistic_loss_grad, F.MARGIN),
    "identity": Head(lambda z: z, F.squared_error, F.squared_error_grad, F.REAL),
}


class MLP:
    """MLP(sizes=[784, 100, 100, 10], hidden="relu", output="softmax", bias=True, seed=0, dtype=np.float64).

    hidden: sigmoid | relu | tanh. output: softmax (cross-entropy, int labels (B,) or one-hot (B, K)), sigmoid
    (logistic loss, labels in [0, 1]), margin (margin logistic loss on the raw score, labels ±1) or identity
    (squared error). Labels of a K-output head are (B, K); with one output unit (B,) works too, with the
    same result as (B, 1). X is (B, fan_in). Any other shape is a ValueError naming both shapes.
    Weights start as N(0, gain/fan_in) with gain 2 for ReLU (He) and 1 otherwise.
    """

    def __init__(self, sizes: list[int] = (784, 100, 100, 10), hidden: str = "relu", output: str = "softmax",
                 bias: bool = True, seed: int = 0, dtype: type = np.float64):
        if len(sizes) < 2:
            raise ValueError("sizes needs at least an input and an output width")
        rng = np.random.default_rng(seed)
        gain = 2.0 if hidden == "relu" else 1.0
        weights = [rng.normal(0.0, np.sqrt(gain / m), (m, n)).astype(dtype) for m, n in zip(sizes[:-1], sizes[1:])]
        biases = [np.zeros(n, dtype=dtype) for n in sizes[1:]] if bias else None
        self._set(weights, biases, hidden, output)

    @classmethod
    def from_weights(cls, weights: list[np.ndarray], biases: list[np.ndarray] | None = None,
                     hidden: str = "relu", output: str = "softmax") -> MLP:
        """An MLP with the given W_l (fan_in, fan_out) and b_l (fan_out,), copied."""
        net = cls.__new__(cls)
        net._set([np.array(w, copy=True) for w in weights],
                 None if biases is None else [np.array(b, copy=True) for b in biases], hidden, output)
        return net

    def _set(self, weights, biases, hidden, output) -> None:
        if hidden not in F.ACTIVATIONS:
            raise ValueError(f"hidden must be one of {sorted(F.ACTIVATIONS)}, got {hidden!r}")
        if output not in HEADS:
            raise ValueError(f"output must be one of {sorted(HEADS)}, got {output!r}")
        for a, b in zip(weights[:-1], weights[1:]):
            if a.shape[1] != b.shape[0]:
                raise ValueError(f"weight shapes do not chain: {a.shape} then {b.shape}")
        if biases is not None and [b.shape for b in biases] != [(w.shape[1],) for w in weights]:
            raise ValueError("each bias must have shape (fan_out,) of its layer")
        self.weights, self.biases, self.hidden, self.output = weights, biases, hidden, output

    # ------------------------------------------------------------ parameters

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[0]] + [w.shape[1] for w in self.weights]

    @property
    def n_params(self) -> int:
        return sum(w.size for w in self.weights) + (sum(b.size for b in self.biases) if self.biases else 0)

    def params(self) -> dict[str, np.ndarray]:
        """{"W1": W_1, "b1": b_1, "W2": ...}: the arrays themselves (not copies)."""
        out = {}
        for l, w in enumerate(self.weights, start=1):
            out[f"W{l}"] = w
            if self.biases is not None:
                out[f"b{l}"] = self.biases[l - 1]
        return out

    # ------------------------------------------------------------ forward and backward

    def check_batch(self, X, y=None, where: str = "MLP") -> tuple[np.ndarray, np.ndarray | None]:
        """X as a (B, fan_in) array and y as the head's loss wants it: a ValueError naming `where` otherwise."""
        X = np.asarray(X)
        fan_in = self.weights[0].shape[0]
        if X.ndim != 2 or X.shape[1] != fan_in or X.shape[0] == 0:
            raise ValueError(f"{where}: X of shape {X.shape} does not fit a network with fan-in {fan_in}; "
                             f"expected (B, {fan_in}) with B >= 1")
        if y is None:
            return X, None
        out = (X.shape[0], self.weights[-1].shape[1])  # the shape of Z_L
        return X, F.check_labels(HEADS[self.output].labels, f"{where} ({self.output} head)", "the network's output",
                                 out, y)

    def _forward(self, X: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Pre-activations Z_1..Z_L and activations A_0..A_{L-1} (A_0 = X)."""
        act = F.ACTIVATIONS[self.hidden][0]
        zs, acts = [], [X]
        for l, w in enumerate(self.weights):
            z = acts[-1] @ w  # (B, fan_in) @ (fan_in, fan_out) -> (B, fan_out)
            if self.biases is not None:
                z = z + self.biases[l]
            zs.append(z)
            if l < len(self.weights) - 1:
                acts.append(act(z))
        return zs, acts

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Z_L, (B, fan_out)."""
        X, _ = self.check_batch(X, where="MLP.logits")
        return self._forward(X)[0][-1]

    def forward(self, X: np.ndarray) -> np.ndarray:
        """The output head's values: probabilities for softmax/sigmoid, the raw score for margin/identity."""
        X, _ = self.check_batch(X, where="MLP.forward")
        return HEADS[self.output].value(self._forward(X)[0][-1])

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        X, y = self.check_batch(X, y, where="MLP.loss")
        return HEADS[self.output].loss(self._forward(X)[0][-1], y)

    def _backward(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
        zs, acts = self._forward(X)
        head = HEADS[self.output]
        grad_act = F.ACTIVATIONS[self.hidden][1]
        loss = head.loss(zs[-1], y)
        delta = head.grad(zs[-1], y)  # δ_L = dLoss/dZ_L, (B, fan_out)
        grads: dict[str, np.ndarray] = {}
        for l in range(len(self.weights) - 1, -1, -1):
            grads[f"W{l + 1}"] = acts[l].T @ delta  # (fan_in, B) @ (B, fan_out)
            if self.biases is not None:
                grads[f"b{l + 1}"] = delta.sum(axis=0)
            upstream = delta @ self.weights[l].T  # dLoss/dA_{l}, (B, fan_in)
            if l > 0:
                delta = upstream * grad_act(zs[l - 1])  # δ_{l} = dA ⊙ g'(Z)
        ordered = {k: grads[k] for k in self.params()}
        return loss, ordered, upstream

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, {"W1": dW_1, "b1": db_1, ...}) shaped like the parameters."""
        loss, grads, _ = self._backward(*self.check_batch(X, y, where="MLP.loss_and_grads"))
        return loss, grads

    def input_grad(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """dLoss/dX, shaped like X."""
        return self._backward(*self.check_batch(X, y, where="MLP.input_grad"))[2]

    def sgd_step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """θ ← θ - lr ∇θ for every layer at once (all gradients were computed before any update)."""
        params = self.params()
        if set(grads) != set(params) or any(np.shape(grads[k]) != p.shape for k, p in params.items()):
            raise ValueError(f"MLP.sgd_step: gradients { {k: np.shape(g) for k, g in grads.items()} } do not fit "
                             f"the parameters { {k: p.shape for k, p in params.items()} }")
        new = {k: p - lr * grads[k] for k, p in self.params().items()}
        self.weights = [new[f"W{l}"] for l in range(1, len(self.weights) + 1)]
        if self.biases is not None:
            self.biases = [new[f"b{l}"] for l in range(1, len(self.biases) + 1)]
