"""Optimizers by name, and the learning-rate schedule as a pure function of the optimizer step."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from fractions import Fraction

import torch

from fashionmlp.config import OptimConfig


def param_groups(cfg: OptimConfig, params: Iterable[torch.nn.Parameter]) -> list[dict]:
    """One group; or, with decay_params 'weights', a second one without weight decay for the 1-D tensors
    (biases and BatchNorm's scale and shift: decaying them only pulls the layers' offsets and gains to 0)."""
    params = list(params)
    if cfg.decay_params == "all":
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


FUSED_SINCE = (2, 4)  # torch releases before it have no fused CPU kernels (and 2.3's fused SGD fails at step())


def fused_available() -> bool:
    """Whether this torch has fused optimizer kernels on the CPU as well (2.4 on)."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= FUSED_SINCE


def build_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer by name; the fused (one kernel for all parameters) implementation where torch has it,
    which is faster per step on CPU (scripts/bench.py). adamw decays the weights apart from the gradient step."""
    params = list(params)
    if cfg.name in ("sgd", "nesterov"):
        make = lambda **extra: torch.optim.SGD(param_groups(cfg, params), lr=cfg.lr,  # noqa: E731
                                               momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                               nesterov=cfg.name == "nesterov", **extra)
    elif cfg.name in ("adam", "adamw"):
        kind = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        make = lambda **extra: kind(param_groups(cfg, params), lr=cfg.lr,  # noqa: E731
                                    betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **extra)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}")  # config validation makes this unreachable
    if not fused_available():
        return make()
    try:
        return make(fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device without fused kernels
        # fresh param groups (param_groups makes new dicts): a refusing constructor may already have written
        # 'fused': True into the dicts it was given, and a fallback built on those would still call the kernel
        return make()


@functools.lru_cache(maxsize=64)  # asked at every step of every member
def warmup_length(warmup: float, total_steps: int) -> int:
    """floor(warmup x steps) of the fraction as written: int(0.29 * 100) is 28 (0.29 is 0.28999... in binary)."""
    return math.floor(Fraction(repr(float(warmup))) * total_steps)  # float(): a NumPy scalar's repr


def lr_at(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Learning rate of 0-based optimizer `step` out of `total_steps`.

    The first `warmup` fraction of the steps (w of them) ramps linearly up towards lr: step i < w gets
    lr * (i + 1) / (w + 1), never 0;
    the rest (n of them) follow the schedule, t = k/n at the k-th (from 0), so the last lr is small, not 0:
      constant  lr
      cosine    lr * (1 + cos(pi t)) / 2   (with warm-up: the one-cycle schedule with a cosine anneal)
      onecycle  lr * (1 - t)                (linear anneal towards 0: warm-up + this is the triangular one cycle)
    """
    warmup_steps = warmup_length(cfg.warmup, total_steps)
    if step < warmup_steps:
        return cfg.lr * (step + 1) / (warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    return cfg.lr * (1 - t)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
