"""The two networks of the study: a fully connected MLP and a small CNN."""

from __future__ import annotations

import torch
from torch import nn

from fashionmlp.config import ModelConfig

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
N_CLASSES = 10


def _classifier(fan_in: int, hidden: tuple[int, ...], activation: str, dropout: float,
                batchnorm: bool = False) -> list[nn.Module]:
    """Linear layers fan_in -> hidden... -> 10, each hidden one followed by the activation (and dropout);
    with `batchnorm`, BatchNorm1d comes between a hidden layer and its activation, and takes the layer's bias."""
    layers: list[nn.Module] = []
    for width in hidden:
        norm = [nn.BatchNorm1d(width)] if batchnorm else []
        layers += [nn.Linear(fan_in, width, bias=not batchnorm), *norm, _ACTIVATIONS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, N_CLASSES))
    return layers


class MLP(nn.Sequential):
    """(B, 1, 28, 28) -> (B, 784) -> hidden layers -> (B, 10) logits."""

    def __init__(self, hidden: tuple[int, ...] = (100, 100), activation: str = "relu", dropout: float = 0.0,
                 batchnorm: bool = False):
        super().__init__(nn.Flatten(), *_classifier(28 * 28, hidden, activation, dropout, batchnorm))


class SmallCNN(nn.Sequential):
    """Two conv blocks (3x3 conv, activation, 2x2 max-pool) and a classifier.

    (B, 1, 28, 28) -> (B, c1, 14, 14) -> (B, c2, 7, 7) -> (B, c2*49) -> hidden -> (B, 10) logits.

    With ReLU each block pools first and then applies the ReLU: max and ReLU commute (ReLU is monotone, and
    where they could pick different elements the gradient is 0 either way), so outputs and gradients are
    bit-identical to conv -> ReLU -> pool, while the ReLU and its backward touch 4x fewer values (faster;
    scripts/bench.py measures the CNN). Other activations keep the textbook order.

    With `batchnorm` every block is conv (no bias) -> max-pool -> BatchNorm2d -> activation: normalizing the
    pooled map touches 4x fewer values than normalizing before the pool, and a tuned CNN epoch then costs
    about 1.2x a plain one instead of 1.5x (docs/recipe.md).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32), hidden: tuple[int, ...] = (128,),
                 activation: str = "relu", dropout: float = 0.0, batchnorm: bool = False):
        c1, c2 = channels
        act = _ACTIVATIONS[activation]

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            conv, pool = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm), nn.MaxPool2d(2)
            if batchnorm:
                return [conv, pool, nn.BatchNorm2d(c_out), act()]
            return [conv, pool, act()] if activation == "relu" else [conv, act(), pool]

        first, second = block(1, c1), block(c1, c2)
        super().__init__(*first, *second, nn.Flatten(), *_classifier(c2 * 7 * 7, hidden, activation, dropout,
                                                                       batchnorm))
        self.block_size = len(first)  # layers per conv block

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) -> the outputs of the two conv blocks, (B, c1, 14, 14) and (B, c2, 7, 7)."""
        layers = list(self)
        first = x
        for layer in layers[:self.block_size]:
            first = layer(first)
        second = first
        for layer in layers[self.block_size:2 * self.block_size]:
            second = layer(second)
        return first, second


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name == "mlp":
        return MLP(cfg.hidden, cfg.activation, cfg.dropout, cfg.batchnorm)
    if cfg.name == "cnn":
        return SmallCNN(cfg.channels, cfg.hidden, cfg.activation, cfg.dropout, cfg.batchnorm)
    raise ValueError(f"unknown model {cfg.name!r}")  # config validation makes this unreachable


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_flops_per_sample(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """Multiply-add FLOPs of one sample's forward + backward in the Linear and Conv2d layers.

    Backward is 2x forward (gradients of the weights and of the layer's input), except for a layer whose input
    needs no gradient (the first one, fed the images): there it is 1x, as autograd skips that product.
    """
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            forward = 2 * module.in_features * module.out_features
        else:
            kh, kw = module.kernel_size
            forward = 2 * output.shape[1] * output.shape[2] * output.shape[3] * module.in_channels * kh * kw \
                // module.groups
        total += forward * (3 if inputs[0].requires_grad else 2)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.enable_grad():
            model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return total
