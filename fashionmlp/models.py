"""The two networks of the study: a fully connected MLP and a small CNN."""

from __future__ import annotations

import torch
from torch import nn

from fashionmlp.config import ModelConfig

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
N_CLASSES = 10


def _classifier(fan_in: int, hidden: tuple[int, ...], activation: str, dropout: float) -> list[nn.Module]:
    """Linear layers fan_in -> hidden... -> 10, each hidden one followed by the activation (and dropout)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(fan_in, width), _ACTIVATIONS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, N_CLASSES))
    return layers


class MLP(nn.Sequential):
    """(B, 1, 28, 28) -> (B, 784) -> hidden layers -> (B, 10) logits."""

    def __init__(self, hidden: tuple[int, ...] = (100, 100), activation: str = "relu", dropout: float = 0.0):
        super().__init__(nn.Flatten(), *_classifier(28 * 28, hidden, activation, dropout))


class SmallCNN(nn.Sequential):
    """Two conv blocks (3x3 conv, activation, 2x2 max-pool) and a classifier.

    (B, 1, 28, 28) -> (B, c1, 14, 14) -> (B, c2, 7, 7) -> (B, c2*49) -> hidden -> (B, 10) logits.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32), hidden: tuple[int, ...] = (128,),
                 activation: str = "relu", dropout: float = 0.0):
        c1, c2 = channels
        act = _ACTIVATIONS[activation]
        super().__init__(
            nn.Conv2d(1, c1, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Flatten(), *_classifier(c2 * 7 * 7, hidden, activation, dropout))


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name == "mlp":
        return MLP(cfg.hidden, cfg.activation, cfg.dropout)
    if cfg.name == "cnn":
        return SmallCNN(cfg.channels, cfg.hidden, cfg.activation, cfg.dropout)
    raise ValueError(f"unknown model {cfg.name!r}")  # config validation makes this unreachable


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_flops_per_sample(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """Multiply-add FLOPs of one sample's forward + backward (backward = 2x forward) in Linear and Conv2d layers."""
    forward = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal forward
        if isinstance(module, nn.Linear):
            forward += 2 * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            forward += 2 * output.shape[1] * output.shape[2] * output.shape[3] * module.in_channels * kh * kw \
                // module.groups

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return 3 * forward
