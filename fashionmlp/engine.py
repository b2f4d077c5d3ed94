"""Training and evaluation loops: they compute and return numbers; no file I/O, no printing."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fashionmlp.data import TensorSplit
from fashionmlp.optim import set_lr
from fashionmlp.status import DIVERGED, INTERRUPTED

CHECK_FINITE_EVERY = 50  # steps between the (synchronizing) checks for a non-finite loss


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators: the one place seeds are set."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                    should_stop: Callable[[], bool] = lambda: False,
                    on_step: Callable[[int], None] | None = None,
                    autocast: torch.dtype | None = None,
                    lr_for_step: Callable[[int], float] | None = None,
                    label_smoothing: float = 0.0,
                    ema: AveragedModel | None = None) -> TrainStats:
    """One pass over `batches`; losses stay on the device and are read once at the end (plus rare finite checks).

    `autocast` (e.g. torch.bfloat16) runs the forward pass and loss under torch.autocast; `lr_for_step(i)` sets
    the learning rate before the epoch's 0-based step i; `ema` is updated after every optimizer step.
    """
    model.train()
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    samples = 0
    nonfinite_step = None
    interrupted = False
    smoothing = {"label_smoothing": label_smoothing} if label_smoothing else {}
    start = time.perf_counter()
    for x, y in batches:
        if lr_for_step is not None:
            set_lr(optimizer, lr_for_step(len(losses)))
        with _autocast(x.device.type, autocast):
            loss = F.cross_entropy(model(x), y, **smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        losses.append(loss.detach())
        sizes.append(len(y))
        samples += len(y)
        if on_step is not None:
            on_step(len(losses))
        if len(losses) % CHECK_FINITE_EVERY == 0:  # only the steps since the last check
            nonfinite_step = _first_nonfinite(losses, len(losses) - CHECK_FINITE_EVERY)
            if nonfinite_step is not None:
                break
        if should_stop():
            interrupted = True
            break
    step_losses = torch.stack(losses).double().cpu() if losses else torch.zeros(0, dtype=torch.float64)
    seconds = time.perf_counter() - start
    if nonfinite_step is None:
        nonfinite_step = _first_nonfinite(losses)
    # Each step's loss is its batch's mean; weight by batch size so a short last batch counts less.
    train_loss = float((step_losses * torch.tensor(sizes, dtype=torch.float64)).sum() / max(samples, 1))
    return TrainStats(train_loss, step_losses.tolist(), samples, seconds, nonfinite_step, interrupted)


def _autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast, or no context at all when off (even a disabled autocast context costs time per step)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


def _first_nonfinite(losses: list[torch.Tensor], start: int = 0) -> int | None:
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
    confusion = torch.zeros(100, dtype=torch.int64, device=split.x.device)
    for start in range(0, len(split), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        if tta:
            scores = _tta_log_proba(model, x)
            loss_sum += F.nll_loss(scores, y, reduction="sum").double()
        else:
            scores = model(x)  # logits
            loss_sum += F.cross_entropy(scores, y, reduction="sum").double()
        confusion += torch.bincount(y * 10 + scores.argmax(1), minlength=100)
    confusion = confusion.view(10, 10).cpu()
    n = max(len(split), 1)
    return {"loss": float(loss_sum) / n, "accuracy": float(confusion.diagonal().sum()) / n,
            "confusion": confusion.tolist()}


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 2000, tta: bool = False) -> torch.Tensor:
    """(N, 1, 28, 28) normalized images -> (N, 10) class probabilities (with `tta`, averaged with the mirror's)."""
    model.eval()
    proba = (lambda b: _tta_log_proba(model, b).exp()) if tta else (lambda b: F.softmax(model(b), dim=1))
    return torch.cat([proba(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


class Progress:
    """What a run reports while it works; the CLI shows it, tests and the comparison may ignore it."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, done: int) -> None: ...
    def end_epoch(self, result: EpochResult, epochs: int) -> None: ...
    def close(self) -> None: ...


class StopFlag:
    """Set by a signal handler; `fit` checks it after every step."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = INTERRUPTED  # the run's status when it stops (a sweep's pruner sets PRUNED)

    def __call__(self) -> bool:
        return self.requested


@dataclass
class EpochResult:
    """What `fit` yields after each epoch: the metrics row, the per-step losses and how the epoch ended."""

    epoch: int
    metrics: dict  # epoch, train_loss, test_loss, test_accuracy, lr, seconds (+ val_loss, val_accuracy)
    step_losses: list[float]
    samples_per_second: float
    confusion: list[list[int]] = field(default_factory=list)
    status: str = "ok"  # ok, or status.DIVERGED / status.INTERRUPTED
    nonfinite_step: int | None = None


@dataclass(frozen=True)
class Recipe:
    """How `fit` trains and evaluates beyond the model and optimizer (the defaults: plain training)."""

    lr_for_step: Callable[[int], float]  # learning rate of a 0-based global optimizer step
    label_smoothing: float = 0.0
    ema: AveragedModel | None = None  # evaluated instead of the model when given
    tta: bool = False  # evaluate on each image and its mirror
    eval_batch_size: int = 2000
    autocast: torch.dtype | None = None


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, *, epochs: range,
        batches_for_epoch: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        recipe: Recipe, test: TensorSplit, val: TensorSplit | None = None, first_step: int = 0,
        should_stop: Callable[[], bool] = lambda: False, on_step: Callable[[int], None] | None = None
        ) -> Iterator[EpochResult]:
    """Train over `epochs` (global optimizer steps counted from `first_step`), yielding one EpochResult per
    epoch; stops after a diverged or interrupted epoch."""
    evaluated = model if recipe.ema is None else recipe.ema.module
    step = first_step
    for epoch in epochs:
        stats = train_one_epoch(model, optimizer, batches_for_epoch(epoch), should_stop=should_stop,
                                on_step=on_step, autocast=recipe.autocast,
                                lr_for_step=lambda i, first=step: recipe.lr_for_step(first + i),
                                label_smoothing=recipe.label_smoothing, ema=recipe.ema)
        lr = optimizer.param_groups[0]["lr"]  # the epoch's last step's
        step += len(stats.step_losses)
        row = {"epoch": epoch, "train_loss": stats.train_loss, "lr": lr, "seconds": stats.seconds}
        if stats.interrupted and stats.nonfinite_step is None:
            yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, status=INTERRUPTED)
            return
        if stats.nonfinite_step is not None:
            yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, status=DIVERGED,
                              nonfinite_step=stats.nonfinite_step)
            return
        tested = evaluate(evaluated, test, recipe.eval_batch_size, recipe.tta)
        row.update(test_loss=tested["loss"], test_accuracy=tested["accuracy"])
        if val is not None:
            checked = evaluate(evaluated, val, recipe.eval_batch_size, recipe.tta)
            row.update(val_loss=checked["loss"], val_accuracy=checked["accuracy"])
        yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, tested["confusion"])

