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

from fashionmlp.distill import soft_targets

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
        # (member, [its parameter of each name]): looked up once, not at every step
        self.member_params = [[model.get_parameter(name) for name in self.params] for model in models]
        self.counters = [b for name, b in self.buffers.items() if name.endswith("num_batches_tracked")]
        self.stepper: Stepper | None = None  # the members' optimizers, set by loop.restack once they are moved here

    def __len__(self) -> int:
        return len(self.models)

    def zero_grad(self) -> None:
        for stacked in self.params.values():
            stacked.grad = None

    def hand_out_grads(self) -> None:
        """Each member parameter's gradient: a view of its slice of the stacked gradient (no copy)."""
        # unbind: every member's view of a stacked gradient in one call (indexing them one by one cost 0.17 ms a
        # step for 12 members of the MLP, 2% of the step)
        slices = [[None] * len(self) if stacked.grad is None else stacked.grad.unbind(0)
                  for stacked in self.params.values()]
        for params, grads in zip(self.member_params, zip(*slices)):
            for param, grad in zip(params, grads):
                param.grad = grad

    def count_batch(self) -> None:
        """BatchNorm counts its training batches (num_batches_tracked), as a single model's forward does."""
        for counter in self.counters:
            counter.add_(1)


class _RoutedState(dict):
    """A shared optimizer's state: each parameter's entry is the one its member's own optimizer holds (the same
    dict), so the member's checkpoint, and `train --resume` of it alone, see every step."""

    def __init__(self, owners: dict[Tensor, torch.optim.Optimizer]):
        super().__init__()
        self.owners = owners

    def __getitem__(self, param: Tensor) -> dict:
        return self.owners[param].state[param]

    def __setitem__(self, param: Tensor, value: dict) -> None:
        self.owners[param].state[param] = value

    def started(self, param: Tensor) -> bool:
        """Whether the parameter's optimizer has state for it yet (it has taken a step)."""
        return bool(self.owners[param].state.get(param))


class Stepper:
    """The members' optimizer steps as few calls as their settings allow: per optimizer class, one torch optimizer
    whose param groups are the members' groups merged where every setting is the same (e.g. the three seeds of
    one study variant: one group of their parameters), made again at each step from the members' own group
    dicts (so set_lr on a member's optimizer is seen), and whose state is theirs. torch's fused (and foreach)
    kernels update each parameter on its own, so the numbers are those of each member's own step(); what goes
    is the per-call overhead of N step() calls and of one kernel call per group."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        by_class: dict[type, list[torch.optim.Optimizer]] = {}
        for optimizer in optimizers:
            by_class.setdefault(type(optimizer), []).append(optimizer)
        self.shared = [(self._shared(kind, members), [g for o in members for g in o.param_groups])
                       for kind, members in by_class.items()]

    @staticmethod
    def _shared(kind: type, members: list[torch.optim.Optimizer]) -> torch.optim.Optimizer:
        first = members[0]
        like = first.param_groups[0]["params"][0]
        dummy = torch.zeros(1, dtype=like.dtype, device=like.device, requires_grad=True)  # replaced below
        shared = kind([dummy], lr=first.defaults["lr"], fused=first.defaults.get("fused"))  # fused: as theirs
        shared.defaults = dict(first.defaults)
        shared.state = _RoutedState({p: optimizer for optimizer in members for group in optimizer.param_groups
                                     for p in group["params"]})
        return shared

    def step(self) -> None:
        for optimizer, groups in self.shared:
            optimizer.param_groups = _merged(groups, optimizer.state)
            optimizer.step()


def _merged(groups: list[dict], state: _RoutedState) -> list[dict]:
    """The groups with every setting equal (and equally started: state or none yet, which SGD's first step
    tells apart) as one group of all their parameters, in order."""
    merged: dict[tuple, dict] = {}
    for group in groups:
        key = (tuple((k, v if isinstance(v, (int, float, str, bool, tuple, type(None))) else id(v))
                     for k, v in group.items() if k != "params"), state.started(group["params"][0]))
        if key in merged:  # a copy of the first group's dict, with every such group's parameters
            merged[key] = {**merged[key], "params": merged[key]["params"] + group["params"]}
        else:
            merged[key] = group  # alone: the member's own dict
    return list(merged.values())


def snapshot(models: list[nn.Module]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Stacked copies of the members' parameters and buffers, for evaluation (e.g. of their EMA averages)."""
    template = models[0]
    params = {n: torch.stack([m.get_parameter(n).detach() for m in models]) for n, _ in template.named_parameters()}
    buffers = {n: torch.stack([m.get_buffer(n) for m in models]) for n, _ in template.named_buffers()}
    return params, buffers


def forward(template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
            sizes: list[int], training: bool, dropout_rngs: list[torch.Generator] | None = None) -> Tensor:
    """(S, B, 1, 28, 28) images, one batch per group of members that share it (sizes[s] members each, in member
    order) -> (N, 10, B) logits of the N stacked members of `template`'s architecture (an MLP or a SmallCNN, as
    models.build_model makes them).

    Layouts: dense activations are (N, features, B), so each layer is W @ h and its weight gradient comes out in
    W's own layout (no copy to accumulate it); conv activations are (B, N*C, H, W), the members' channels side
    by side for grouped convolutions. Members sharing a batch take it once: their first layer is one matrix
    (groups of equal size) instead of a copy of the images per member.
    """
    n, b = sum(sizes), x.shape[1]
    even = len(set(sizes)) == 1
    h, layout, first = x, "groups", True  # layout: groups (S, B, ...), dense (N, F, B), conv (B, N*C, H, W)
    for index, layer in enumerate(template):
        key = str(index)
        if isinstance(layer, nn.Flatten):
            if layout == "conv":
                h, layout = h.reshape(b, n, -1).permute(1, 2, 0), "dense"
            continue  # the images stay (S, B, 1, 28, 28) until the first layer takes them
        weight, bias = params.get(f"{key}.weight"), params.get(f"{key}.bias")
        if isinstance(layer, (nn.Linear, nn.Conv2d)) and first:
            h, layout = _first_layer(layer, weight, bias, h, sizes, even), (
                "conv" if isinstance(layer, nn.Conv2d) else "dense")
            first = False
        elif isinstance(layer, nn.Conv2d):
            h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                         padding=layer.padding, groups=n)
        elif isinstance(layer, nn.Linear):
            h = torch.bmm(weight, h) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, h)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            h = _batch_norm(layer, key, params, buffers, h, training)
        elif isinstance(layer, nn.Dropout):
            if training and layer.p > 0:
                h = _dropout(h, layer.p, dropout_rngs)
        else:  # activations, max-pooling: the same on any layout
            h = layer(h)
    return h


def _first_layer(layer: nn.Module, weight: Tensor, bias: Tensor | None, x: Tensor, sizes: list[int],
                 even: bool) -> Tensor:
    """The first layer of every member on its group's images: (S, B, 1, 28, 28) -> (N, out, B) for a Linear,
    (B, N*C, 28, 28) for a Conv2d. With groups of equal size one (grouped) product takes each group's images
    once; otherwise each member gets its own copy of its group's images."""
    s, b = x.shape[:2]
    n, out = weight.shape[:2]
    if not even:  # a copy of the images per member, as groups of one
        x = x.repeat_interleave(torch.tensor(sizes, device=x.device), dim=0)
        s = n
    if isinstance(layer, nn.Linear):
        images = x.reshape(s, b, -1).transpose(1, 2)  # (S, 784, B)
        grouped = weight.view(s, -1, weight.shape[-1])  # (S, G*out, 784): the members of a group, one matrix
        if bias is not None and _uneven_on_threads(images, s):
            return _GroupedLinear.apply(images, grouped, bias.view(s, -1, 1)).view(n, out, b)
        h = torch.bmm(grouped, images) if bias is None else torch.baddbmm(bias.view(s, -1, 1), grouped, images)
        return h.view(n, out, b)
    images = x.reshape(s, b, *x.shape[3:]).transpose(0, 1)  # (B, S, 28, 28): a group's images, one channel
    return F.conv2d(images, weight.reshape(-1, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                    padding=layer.padding, groups=s)


def _uneven_on_threads(images: Tensor, groups: int) -> bool:
    """Whether the first layer's batched product would leave CPU threads idle: torch's CPU bmm gives each thread
    whole products, so 3 groups on 2 threads run at 2/3 of the speed that 3 products, each on every thread, reach
    (measured: 146 vs 191 GFLOP/s for (400, 784) @ (784, 128) on 2 Zen 4 cores). Not on CUDA (one launch is
    what counts there), under autocast, or when the images need a gradient."""
    return (images.device.type == "cpu" and groups > 1 and groups % torch.get_num_threads() != 0
            and not images.requires_grad and not torch.is_autocast_enabled("cpu"))


class _GroupedLinear(torch.autograd.Function):
    """(S, in, B) images, (S, out, in) weights, (S, out, 1) biases -> (S, out, B): baddbmm's numbers, as S
    products in turn, each with every CPU thread (see _uneven_on_threads); the backward gives the weights' and
    biases' gradients (the images take none)."""

    @staticmethod
    def forward(ctx, images: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(images)
        out = images.new_empty(weight.shape[0], weight.shape[1], images.shape[2])
        for s in range(weight.shape[0]):
            torch.addmm(bias[s], weight[s], images[s], out=out[s])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor]:
        (images,) = ctx.saved_tensors
        weight_grad = grad.new_empty(grad.shape[0], grad.shape[1], images.shape[1])
        for s in range(grad.shape[0]):
            torch.mm(grad[s], images[s].t(), out=weight_grad[s])
        return None, weight_grad, grad.sum(2, keepdim=True)


def _batch_norm(layer: nn.Module, key: str, params: dict[str, Tensor], buffers: dict[str, Tensor], h: Tensor,
                training: bool) -> Tensor:
    """Per-member statistics: the members' channels side by side, normalized as N*C channels ((B, N*C, H, W)
    as it is; (N, H, B) as one sample of N*H channels over B positions: the same statistics over the batch)."""
    args = (buffers[f"{key}.running_mean"].view(-1), buffers[f"{key}.running_var"].view(-1),
            params[f"{key}.weight"].reshape(-1), params[f"{key}.bias"].reshape(-1))
    if h.dim() == 4:
        return F.batch_norm(h, *args, training=training, momentum=layer.momentum, eps=layer.eps)
    n, width, b = h.shape
    flat = F.batch_norm(h.reshape(1, n * width, b), *args, training=training, momentum=layer.momentum, eps=layer.eps)
    return flat.view(n, width, b)


def _dropout(h: Tensor, p: float, rngs: list[torch.Generator] | None) -> Tensor:
    """Dropout with each member's mask drawn from its own generator, exactly as F.dropout draws it from torch's
    global one in a single run (a Bernoulli(1 - p) mask of the member's (B, H) activations; kept / (1 - p))."""
    if rngs is None:
        raise ValueError("dropout in a population needs each member's generator")
    n, width, b = h.shape
    masks = torch.stack([torch.empty((b, width), dtype=h.dtype).bernoulli_(1 - p, generator=rng).t() for rng in rngs])
    return h.mul(masks.to(h.device)).mul_(1 / (1 - p))


def member_losses(logits: Tensor, y: Tensor, smoothing: Tensor | None,
                  distill: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """(N, 10, B) logits and (N, B) labels -> (N,) mean losses, as F.cross_entropy computes each member's:
    with label smoothing ε_i, (1 - ε_i) nll + ε_i mean_c(-log p_c). With `distill`, (T, alpha, teacher's logits):
    (N,), (N,) and (N, B, views, 10), each member's distill.distill_loss: alpha_i T_i^2 KL + (1 - alpha_i) that."""
    if logits.dtype in (torch.bfloat16, torch.float16):  # as F.cross_entropy under autocast: the loss in float32
        logits = logits.float()
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, y.unsqueeze(1)).squeeze(1).mean(1)
    ce = nll
    if smoothing is not None:
        smooth = -log_p.mean(1).mean(1)
        ce = torch.where(smoothing > 0, (1 - smoothing) * nll + smoothing * smooth, nll)
    if distill is None:
        return ce
    temperature, alpha, teacher = distill
    target = soft_targets(teacher, temperature.view(-1, 1, 1, 1)).transpose(1, 2)  # (N, 10, B) log-probabilities
    log_q = F.log_softmax(logits / temperature.view(-1, 1, 1), dim=1)
    kl = (target.exp() * (target - log_q)).sum(1).mean(1)
    return alpha * temperature**2 * kl + (1 - alpha) * ce
