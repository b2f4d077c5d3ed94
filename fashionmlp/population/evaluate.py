"""Evaluating every member of a population at once: the same numbers engine.evaluate gives for each model alone
(mean loss, accuracy, confusion matrix; with flip TTA the mean softmax of each image and its mirror)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fashionmlp.data import TensorSplit
from fashionmlp.population.stack import forward, snapshot


@torch.inference_mode()
def evaluate_members(models: list[nn.Module], split: TensorSplit, tta: list[bool], batch_size: int) -> list[dict]:
    """One dict per model, as engine.evaluate returns it; the models are evaluated together, `batch_size`
    images for all of them per forward pass (so the population needs no more memory than one model)."""
    n = len(models)
    template = models[0]
    params, buffers = snapshot(models)
    device = split.x.device
    loss_sum = torch.zeros(n, dtype=torch.float64, device=device)
    confusion = torch.zeros(n * 100, dtype=torch.int64)  # counted on the CPU, as metrics.confusion_counts
    chunk = max(1, batch_size // n)
    flip = torch.tensor(tta, device=device).view(n, 1, 1)  # broadcast over (N, 10, B)
    offsets = (torch.arange(n, device=device) * 100).view(n, 1)
    for start in range(0, len(split), chunk):
        x, y = split.x[start:start + chunk], split.y[start:start + chunk]
        inputs = x.unsqueeze(0)  # one group of n members: the same images for all
        logits = forward(template, params, buffers, inputs, [n], training=False)  # (N, 10, B)
        if any(tta):  # each image and its mirror: log of the mean softmax
            both = F.log_softmax(logits, dim=1), F.log_softmax(
                forward(template, params, buffers, inputs.flip(-1), [n], training=False), dim=1)
            mean = torch.logaddexp(*both) - math.log(2)
            scores = torch.where(flip, mean, logits)
            log_p = torch.where(flip, mean, F.log_softmax(logits, dim=1))
        else:
            scores, log_p = logits, F.log_softmax(logits, dim=1)
        labels = y.unsqueeze(0).expand(n, -1)
        loss_sum += -log_p.gather(1, labels.unsqueeze(1)).squeeze(1).double().sum(1)
        confusion += torch.bincount((offsets + labels * 10 + scores.argmax(1)).reshape(-1).cpu(), minlength=n * 100)
    confusion = confusion.view(n, 10, 10)
    count = max(len(split), 1)
    return [{"loss": float(loss_sum[i]) / count, "accuracy": float(confusion[i].diagonal().sum()) / count,
             "confusion": confusion[i].tolist()} for i in range(n)]
