"""The same computation in torch float64 with autograd: the trusted twin of the NumPy code."""

from __future__ import annotations

import math

import numpy as np

from fashionmlp.manual.gradcheck import relative_error


def torch_loss(output: str, z, y):
    """The loss of each output head, written with torch's own functions (mean over the batch).

    z is (B, K); y is int (B,) or one-hot (B, K) for softmax, else (B, K) exactly: no broadcasting here either.
    """
    import torch
    import torch.nn.functional as F

    batch = z.shape[0]
    if output != "softmax" and tuple(y.shape) != tuple(z.shape):
        raise ValueError(f"torch_loss: y of shape {tuple(y.shape)} does not fit z of shape {tuple(z.shape)}; "
                         f"expected {tuple(z.shape)}")
    if output == "softmax":
        target = y if y.ndim == 2 else F.one_hot(y.long(), z.shape[1]).double()
        return -(target * F.log_softmax(z, dim=1)).sum() / batch
    if output == "sigmoid":
        return F.binary_cross_entropy_with_logits(z, y, reduction="sum") / batch
    if output == "margin":
        return torch.logaddexp(torch.zeros_like(z), -y * z).sum() / batch  # softplus is x past 20
    if output == "identity":
        return 0.5 * ((z - y) ** 2).sum() / batch
    raise ValueError(output)


def torch_forward(net, X, params: dict):
    """Z_L of the torch twin, for parameters given as a dict of tensors named like net.params()."""
    import torch

    act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[net.hidden]
    a = X
    n = len(net.weights)
    for l in range(1, n + 1):
        a_next = a @ params[f"W{l}"]
        if f"b{l}" in params:
            a_next = a_next + params[f"b{l}"]
        a = act(a_next) if l < n else a_next
    return a


def crosscheck(net, X: np.ndarray, y: np.ndarray, scale: float = 0.0) -> dict[str, dict[str, float]]:
    """Max abs and relative difference between NumPy and torch.autograd (float64) for the loss,
    every parameter gradient and the input gradient: {"loss": {"abs":, "rel":}, "W1": ..., "X": ...}
    (`scale`: relative_error's).

    X is (B, fan_in) and y what `net.loss` accepts; one-output labels (B,) are given to torch as (B, 1)."""
    import torch

    net.check_batch(X, y, where="crosscheck")  # the shape errors of net.loss, before any torch work
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in net.params().items()}
    Xt = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    if net.output == "softmax":
        yt = torch.tensor(y, dtype=torch.float64 if np.ndim(y) == 2 else torch.int64)
    else:
        yt = torch.tensor(y, dtype=torch.float64).reshape(len(X), net.sizes[-1])
    loss_t = torch_loss(net.output, torch_forward(net, Xt, params), yt)
    loss_t.backward()
    loss, grads = net.loss_and_grads(X, y)
    dx = net.input_grad(X, y)
    pairs = {"loss": (np.array(loss), loss_t.detach().numpy())}
    pairs.update({k: (grads[k], params[k].grad.numpy()) for k in params})
    pairs["X"] = (dx, Xt.grad.numpy())
    return {k: {"abs": largest(np.abs(a - b)), "rel": relative_error(a, b, scale)} for k, (a, b) in pairs.items()}


def largest(values: np.ndarray) -> float:
    """The largest value, inf when any is NaN (np.max would say nan, which every comparison passes over)."""
    if not np.size(values):
        return 0.0
    return math.inf if np.isnan(values).any() else float(np.max(values))
