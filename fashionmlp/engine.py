"""Training and evaluation loops: they compute and return numbers; no file I/O, no printing."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
                    autocast: torch.dtype | None = None) -> TrainStats:
    """One pass over `batches`; losses stay on the device and are read once at the end (plus rare finite checks).

    `autocast` (e.g. torch.bfloat16) runs the forward pass and loss under torch.autocast.
    """
    model.train()
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    samples = 0
    nonfinite_step = None
    interrupted = False
    start = time.perf_counter()
    for x, y in batches:
        with _autocast(x.device.type, autocast):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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


@torch.inference_mode()
def evaluate(model: nn.Module, split: TensorSplit, batch_size: int = 2000) -> dict:
    """Mean loss, accuracy and the 10x10 confusion matrix (rows: true class, columns: predicted)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.x.device)
    confusion = torch.zeros(100, dtype=torch.int64, device=split.x.device)
    for start in range(0, len(split), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        confusion += torch.bincount(y * 10 + logits.argmax(1), minlength=100)
    confusion = confusion.view(10, 10).cpu()
    n = max(len(split), 1)
    return {"loss": float(loss_sum) / n, "accuracy": float(confusion.diagonal().sum()) / n,
            "confusion": confusion.tolist()}


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """(N, 1, 28, 28) normalized images -> (N, 10) class probabilities."""
    model.eval()
    return torch.cat([F.softmax(model(x[i:i + batch_size]), dim=1) for i in range(0, len(x), batch_size)])


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


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, *, epochs: range,
        batches_for_epoch: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        lr_for_epoch: Callable[[int], float], test: TensorSplit, val: TensorSplit | None = None,
        eval_batch_size: int = 2000, should_stop: Callable[[], bool] = lambda: False,
        on_step: Callable[[int], None] | None = None, autocast: torch.dtype | None = None
        ) -> Iterator[EpochResult]:
    """Train over `epochs`, yielding one EpochResult per epoch; stops after a diverged or interrupted epoch."""
    for epoch in epochs:
        lr = lr_for_epoch(epoch)
        set_lr(optimizer, lr)
        stats = train_one_epoch(model, optimizer, batches_for_epoch(epoch), should_stop=should_stop,
                                on_step=on_step, autocast=autocast)
        row = {"epoch": epoch, "train_loss": stats.train_loss, "lr": lr, "seconds": stats.seconds}
        if stats.interrupted and stats.nonfinite_step is None:
            yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, status=INTERRUPTED)
            return
        if stats.nonfinite_step is not None:
            yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, status=DIVERGED,
                              nonfinite_step=stats.nonfinite_step)
            return
        tested = evaluate(model, test, eval_batch_size)
        row.update(test_loss=tested["loss"], test_accuracy=tested["accuracy"])
        if val is not None:
            checked = evaluate(model, val, eval_batch_size)
            row.update(val_loss=checked["loss"], val_accuracy=checked["accuracy"])
        yield EpochResult(epoch, row, stats.step_losses, stats.samples_per_second, tested["confusion"])

