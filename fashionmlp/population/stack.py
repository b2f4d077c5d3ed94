"""N models of one architecture as one: each parameter and BatchNorm buffer stacked into an (N, ...) tensor, and
a forward pass over all members at once (batched matrix multiplies; grouped convolutions; BatchNorm statistics
per member; each member's dropout masks from its own generator).

Each member keeps its ordinary module, whose parameters and buffers are views of its slice of the stack: the
member's own torch optimizer steps its parameters (so it updates the stack in place, with exactly the code a
single run uses), its checkpoint is its module's state_dict, and `train --resume` continues it alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, attr = name.rpartition(".")
    return module.get_submodule(parent), attr


class Stack:
    """The members' parameters and buffers, stacked; each member module's tensors alias its slice."""

    def __init__(self, models: list[nn.Module]):
        self.models = models
        self.template = models[0]
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        for name, _ in self.template.named_parameters():
            stacked = torch.stack([m.get_parameter(name).detach() for m in models]).requires_grad_(True)
            self.params[name] = stacked
            for i, model in enumerate(models):
                module, attr = _owner(model, name)
                setattr(module, attr, nn.Parameter(stacked.detach()[i]))
        for name, _ in self.template.named_buffers():
            stacked = torch.stack([m.get_buffer(name) for m in models])
            self.buffers[name] = stacked
            for i, model in enumerate(models):
                module, attr = _owner(model, name)
                setattr(module, attr, stacked[i])

    def __len__(self) -> int:
        return len(self.models)

    def zero_grad(self) -> None:
        for stacked in self.params.values():
            stacked.grad = None

    def hand_out_grads(self) -> None:
        """Each member parameter's gradient: a view of its slice of the stacked gradient (no copy)."""
        for name, stacked in self.params.items():
            grad = stacked.grad
            for i, model in enumerate(self.models):
                model.get_parameter(name).grad = None if grad is None else grad[i]

    def count_batch(self) -> None:
        """BatchNorm counts its training batches (num_batches_tracked), as a single model's forward does."""
        for name, stacked in self.buffers.items():
            if name.endswith("num_batches_tracked"):
                stacked.add_(1)


def snapshot(models: list[nn.Module]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Stacked copies of the members' parameters and buffers, for evaluation (e.g. of their EMA averages)."""
    template = models[0]
    params = {n: torch.stack([m.get_parameter(n).detach() for m in models]) for n, _ in template.named_parameters()}
    buffers = {n: torch.stack([m.get_buffer(n) for m in models]) for n, _ in template.named_buffers()}
    return params, buffers


def forward(template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, training: bool,
            dropout_rngs: list[torch.Generator] | None = None) -> Tensor:
    """(N, B, 1, 28, 28) images, one batch per member -> (N, B, 10) logits of the N stacked members of
    `template`'s architecture (an MLP or a SmallCNN, as models.build_model makes them)."""
    n, b = x.shape[:2]
    h, conv_layout = x, False  # h is (N, B, ...) per member, or (B, N*C, H, W) in the conv blocks
    for index, layer in enumerate(template):
        key = str(index)
        if isinstance(layer, nn.Conv2d):
            if not conv_layout:  # the images: member i's batch becomes input channel i
                h = h.squeeze(2).transpose(0, 1).contiguous()
                conv_layout = True
            weight = params[f"{key}.weight"]
            bias = params.get(f"{key}.bias")
            h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                         padding=layer.padding, groups=n)
        elif isinstance(layer, nn.Flatten):
            h = h.reshape(b, n, -1).transpose(0, 1) if conv_layout else h.flatten(2)  # (N, B, features)
            conv_layout = False
        elif isinstance(layer, nn.Linear):
            weight, bias = params[f"{key}.weight"], params.get(f"{key}.bias")
            h = torch.bmm(h, weight.transpose(1, 2)) if bias is None else torch.baddbmm(
                bias.unsqueeze(1), h, weight.transpose(1, 2))
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            h = _batch_norm(layer, key, params, buffers, h, training, conv_layout)
        elif isinstance(layer, nn.Dropout):
            if training and layer.p > 0:
                h = _dropout(h, layer.p, dropout_rngs)
        else:  # activations, max-pooling: the same on any layout
            h = layer(h)
    return h


def _batch_norm(layer: nn.Module, key: str, params: dict[str, Tensor], buffers: dict[str, Tensor], h: Tensor,
                training: bool, conv_layout: bool) -> Tensor:
    """Per-member statistics: the members' channels side by side, normalized as N*C channels."""
    args = (buffers[f"{key}.running_mean"].view(-1), buffers[f"{key}.running_var"].view(-1),
            params[f"{key}.weight"].reshape(-1), params[f"{key}.bias"].reshape(-1))
    if conv_layout:  # (B, N*C, H, W)
        return F.batch_norm(h, *args, training=training, momentum=layer.momentum, eps=layer.eps)
    n, b, width = h.shape  # (N, B, H) -> (B, N*H) and back
    flat = F.batch_norm(h.transpose(0, 1).reshape(b, n * width), *args, training=training, momentum=layer.momentum,
                        eps=layer.eps)
    return flat.view(b, n, width).transpose(0, 1)


def _dropout(h: Tensor, p: float, rngs: list[torch.Generator] | None) -> Tensor:
    """Dropout with each member's mask drawn from its own generator, exactly as F.dropout draws it from torch's
    global one in a single run (a Bernoulli(1 - p) mask of the member's activations' shape; kept / (1 - p))."""
    if rngs is None:
        raise ValueError("dropout in a population needs each member's generator")
    masks = torch.stack([torch.empty(h.shape[1:], dtype=h.dtype).bernoulli_(1 - p, generator=rng) for rng in rngs])
    return h.mul(masks.to(h.device)).mul_(1 / (1 - p))


def member_losses(logits: Tensor, y: Tensor, smoothing: Tensor | None) -> Tensor:
    """(N, B, 10) logits and (N, B) labels -> (N,) mean losses, as F.cross_entropy computes each member's:
    with label smoothing ε_i, (1 - ε_i) nll + ε_i mean_c(-log p_c)."""
    log_p = F.log_softmax(logits, dim=2)
    nll = -log_p.gather(2, y.unsqueeze(2)).squeeze(2).mean(1)
    if smoothing is None:
        return nll
    smooth = -log_p.mean(2).mean(1)
    return torch.where(smoothing > 0, (1 - smoothing) * nll + smoothing * smooth, nll)
