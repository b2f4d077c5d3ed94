"""Training and evaluation of one model: they compute and return numbers; no file I/O, no printing.

`train_step` is the one optimizer step (used by `fit` and by the learning-rate range test), `fit` yields one
EpochResult per epoch, and a `StopRequest` is how a caller (Ctrl-C, a sweep's pruner) asks it to stop.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fashionmlp.data import TensorSplit
from fashionmlp.distill import distill_loss
from fashionmlp.metrics import confusion_counts
from fashionmlp.optim import set_lr
from fashionmlp.progress import EpochResult, StopRequest, evaluation_broke
from fashionmlp.status import DIVERGED, INTERRUPTED

CHECK_FINITE_EVERY = 50  # steps between the (synchronizing) checks for a non-finite loss


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators: the one place seeds are set."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Recipe:
    """How a model is trained and evaluated beyond the model and optimizer (the defaults: plain training)."""

    lr_for_step: Callable[[int], float] | None = None  # learning rate of a 0-based global optimizer step
    label_smoothing: float = 0.0  # weight of the uniform target in the training loss
    ema: AveragedModel | None = None  # updated after every step; evaluated instead of the model when given
    tta: bool = False  # evaluate on each image and its mirror
    eval_batch_size: int = 2000
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16: forward pass and loss under torch.autocast
    distill: tuple[float, float] | None = None  # (temperature, alpha): batches carry the teacher's logits

    def evaluated(self, model: nn.Module) -> nn.Module:
        """The model that is evaluated and saved: the EMA's average when there is one."""
        return model if self.ema is None else self.ema.module


PLAIN = Recipe()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               recipe: Recipe = PLAIN, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step on the batch (x, y): forward and loss (with the recipe's autocast and label smoothing;
    with recipe.distill, the distillation loss against `teacher_logits`), backward, step, EMA update. Returns the
    batch's mean loss, detached, on the device (no synchronization)."""
    smoothing = {"label_smoothing": recipe.label_smoothing} if recipe.label_smoothing else {}
    with _autocast(x.device.type, recipe.autocast):
        if recipe.distill is None:
            loss = F.cross_entropy(model(x), y, **smoothing)
        else:
            loss = distill_loss(model(x), y, teacher_logits, *recipe.distill, recipe.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if recipe.ema is not None:
        recipe.ema.update_parameters(model)
    return loss.detach()


def _autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast, or no context at all when off (even a disabled autocast context costs time per step)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


@dataclass
class TrainStats:
    """What one pass of `train_one_epoch` measured."""

    train_loss: float  # mean over the epoch's samples (nan if the epoch diverged)
    step_losses: list[float]  # one per optimizer step, in order
    samples: int
    seconds: float
    nonfinite_step: int | None = None  # 1-based step of the epoch where the loss first stopped being finite
    interrupted: bool = False  # a stop was requested: the epoch is incomplete and must not be recorded

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Iterable[tuple[torch.Tensor, ...]], recipe: Recipe = PLAIN, *,
                    first_step: int = 0, stop: StopRequest | None = None,
                    on_step: Callable[[int], None] | None = None) -> TrainStats:
    """One pass over `batches`; losses stay on the device and are read once at the end (plus rare finite checks).

    The recipe's lr_for_step sets the learning rate of global step first_step + i before the epoch's step i;
    `on_step(i)` is told after each step (1-based); `stop` is checked before each step.
    """
    model.train()
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    samples = 0
    nonfinite_step = None
    interrupted = False
    start = time.perf_counter()
    for x, y, *teacher in batches:  # (x, y), or (x, y, teacher logits) when distilling
        # before each step, not after: a stop that came during the epoch's last step let the step finish, then
        # dropped the whole epoch (a full-batch run lost an epoch to every Ctrl-C); now the epoch is recorded
        if stop is not None and stop.requested:
            interrupted = True
            break
        if recipe.lr_for_step is not None:
            set_lr(optimizer, recipe.lr_for_step(first_step + len(losses)))
        losses.append(train_step(model, optimizer, x, y, recipe, *teacher))
        sizes.append(len(y))
        samples += len(y)
        if on_step is not None:
            on_step(len(losses))
        if len(losses) % CHECK_FINITE_EVERY == 0:  # only the steps since the last check
            nonfinite_step = first_nonfinite(losses, len(losses) - CHECK_FINITE_EVERY)
            if nonfinite_step is not None:
                break
    step_losses = torch.stack(losses).double().cpu() if losses else torch.zeros(0, dtype=torch.float64)
    seconds = time.perf_counter() - start
    if nonfinite_step is None:
        nonfinite_step = first_nonfinite(losses)
    # Each step's loss is its batch's mean; weight by batch size so a short last batch counts less.
    train_loss = float((step_losses * torch.tensor(sizes, dtype=torch.float64)).sum() / max(samples, 1))
    return TrainStats(train_loss, step_losses.tolist(), samples, seconds, nonfinite_step, interrupted)


def first_nonfinite(losses: list[torch.Tensor], start: int = 0) -> int | None:
    """1-based step of the first non-finite loss among losses[start:], or None."""
    if len(losses) <= start:
        return None
    bad = (~torch.isfinite(torch.stack(losses[start:]))).nonzero()
    return start + int(bad[0]) + 1 if len(bad) else None


def _tta_log_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, 10) log of the mean softmax of each image and its left-right mirror."""
    both = F.log_softmax(model(torch.cat([x, x.flip(3)])), dim=1)  # one forward pass for the pair
    return torch.logaddexp(both[:len(x)], both[len(x):]) - math.log(2)


@torch.inference_mode()
def evaluate(model: nn.Module, split: TensorSplit, batch_size: int = 2000, tta: bool = False) -> dict:
    """Mean loss, accuracy and the 10x10 confusion matrix (rows: true class, columns: predicted)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.x.device)
    confusion = torch.zeros((10, 10), dtype=torch.int64)
    for start in range(0, len(split), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        if tta:
            scores = _tta_log_proba(model, x)
            loss_sum += F.nll_loss(scores, y, reduction="sum").double()
        else:
            scores = model(x)  # logits
            loss_sum += F.cross_entropy(scores, y, reduction="sum").double()
        confusion += confusion_counts(y, scores.argmax(1))
    n = max(len(split), 1)
    return {"loss": float(loss_sum) / n, "accuracy": float(confusion.diagonal().sum()) / n,
            "confusion": confusion.tolist()}


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 2000, tta: bool = False) -> torch.Tensor:
    """(N, 1, 28, 28) normalized images -> (N, 10) class probabilities (with `tta`, averaged with the mirror's)."""
    model.eval()
    proba = (lambda b: _tta_log_proba(model, b).exp()) if tta else (lambda b: F.softmax(model(b), dim=1))
    return torch.cat([proba(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, *, epochs: range,
        batches_for_epoch: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        recipe: Recipe, test: TensorSplit, val: TensorSplit | None = None, first_step: int = 0,
        stop: StopRequest | None = None, on_step: Callable[[int], None] | None = None) -> Iterator[EpochResult]:
    """Train over `epochs` (global optimizer steps counted from `first_step`), yielding one EpochResult per
    epoch; stops after a diverged or interrupted epoch."""
    evaluated = recipe.evaluated(model)
    step = first_step
    for epoch in epochs:
        stats = train_one_epoch(model, optimizer, batches_for_epoch(epoch), recipe, first_step=step, stop=stop,
                                on_step=on_step)
        lr = optimizer.param_groups[0]["lr"]  # the epoch's last step's
        step += len(stats.step_losses)
        row = {"epoch": epoch, "train_loss": stats.train_loss, "lr": lr, "seconds": stats.seconds}
        if stats.interrupted and stats.nonfinite_step is None:
            yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, status=INTERRUPTED)
            return
        if stats.nonfinite_step is not None:
            if recipe.lr_for_step is not None:  # the step's own lr: the check came up to 50 steps later
                row["lr"] = recipe.lr_for_step(step - len(stats.step_losses) + stats.nonfinite_step - 1)
            yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, status=DIVERGED,
                              nonfinite_step=stats.nonfinite_step)
            return
        tested = evaluate(evaluated, test, recipe.eval_batch_size, recipe.tta)
        row.update(test_loss=tested["loss"], test_accuracy=tested["accuracy"])
        if val is not None:
            checked = evaluate(evaluated, val, recipe.eval_batch_size, recipe.tta)
            row.update(val_loss=checked["loss"], val_accuracy=checked["accuracy"])
        result = EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, tested["confusion"])
        broke = evaluation_broke(result)
        yield broke or result
        if broke is not None:
            return
