"""How training talks to its caller, without torch: the results it yields after each epoch, the progress it
reports while it works, and the request that stops it. (The command line imports this before torch.)"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from fashionmlp.status import DIVERGED, INTERRUPTED

__all__ = ["EpochResult", "PopulationProgress", "Progress", "StopRequest"]


class StopRequest:
    """A request to stop after the current optimizer step. `reason` becomes the run's status: INTERRUPTED for
    Ctrl-C/SIGTERM, or what the caller names (a sweep's pruner: PRUNED)."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = INTERRUPTED
        # set by a loop once no training step is left, saying what it still does (a population's last epoch:
        # evaluating it, every member's pictures, the report); a stop then has nothing to stop, and says so
        self.finishing: str | None = None
        self.came_finishing = False  # the request came while `finishing` was set

    def request(self, reason: str = INTERRUPTED) -> None:
        self.requested, self.reason = True, reason
        self.came_finishing = self.finishing is not None


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
    nonfinite: str = "loss"  # diverged: what stopped being finite: the step's loss, or the evaluation after it


def evaluation_broke(result: EpochResult) -> EpochResult | None:
    """The epoch as diverged when its evaluation loss (test or validation) is not finite: the last steps left
    weights (or outputs) that are not, though every step's loss was (a run at lr 1e300 used to end "completed"
    with NaN metrics, keeping NaN weights as its last good checkpoint); None when it is finite."""
    losses = [result.metrics[k] for k in ("test_loss", "val_loss") if k in result.metrics]
    if all(math.isfinite(v) for v in losses):
        return None
    return dataclasses.replace(result, status=DIVERGED, nonfinite_step=len(result.step_losses), nonfinite="evaluation")


class Progress:
    """What a run reports while it works; the CLI shows it, tests and the comparison may ignore it."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, done: int) -> None: ...
    def end_epoch(self, result: EpochResult, epochs: int) -> None: ...
    def close(self) -> None: ...


class PopulationProgress:
    """What a population reports while it works: its epochs and steps, and every member's finished epoch."""

    def start_epoch(self, epoch: int, epochs: int, steps: int, members: int) -> None: ...
    def step(self, done: int) -> None: ...
    def end_epoch(self, results: list[tuple[str, EpochResult]], epochs: int) -> None: ...
    def stopped_early(self, label: str, early: dict) -> None: ...  # summary.json's early_stopping
    def close(self) -> None: ...
