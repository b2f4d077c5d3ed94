"""Optimizers by name, and learning-rate schedules as pure functions of the epoch."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from fashionmlp.config import OptimConfig


def build_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer by name; the fused (one kernel for all parameters) implementation where torch has it,
    which is faster per step on CPU (scripts/bench.py)."""
    params = list(params)
    if cfg.name in ("sgd", "nesterov"):
        make = lambda **extra: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,  # noqa: E731
                                               weight_decay=cfg.weight_decay, nesterov=cfg.name == "nesterov",
                                               **extra)
    elif cfg.name == "adam":
        make = lambda **extra: torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas),  # noqa: E731
                                                weight_decay=cfg.weight_decay, **extra)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}")  # config validation makes this unreachable
    try:
        return make(fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without fused kernels
        return make()


def lr_at(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Learning rate for 1-based `epoch` of `epochs`: constant, or cosine decay from lr to 0."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
    return cfg.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
