"""A training run from start to finish: config -> data -> model + optimizer -> engine.fit -> run folder.

`train()` starts a run (resume.py continues one); both hand the epoch loop to `run_epochs`, which does all
the writing, at the edge. Problems the user can fix are raised as UserError before a run folder exists.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from fashionmlp import status as st
from fashionmlp.checkpoint import make_ema, save_checkpoint
from fashionmlp.config import RunConfig
from fashionmlp.data import (
    FashionMNIST,
    TensorSplit,
    augmented,
    check_trainable,
    classic_batches,
    epoch_order,
    fast_batches,
    images_per_epoch,
    load_data,
)
from fashionmlp.device import check_memory, keep_freed_memory, prepare_model, resolve_device, set_threads
from fashionmlp.engine import EpochResult, Progress, Recipe, fit, seed_everything
from fashionmlp.models import n_params
from fashionmlp.optim import build_optimizer, lr_at
from fashionmlp.plots import confusion_matrix, loss_curve
from fashionmlp.runlock import lock_run_dir
from fashionmlp.tracking import (
    HPARAM_METRICS,
    MetricsFile,
    TensorBoardLog,
    atomic_copy,
    check_writable,
    create_run_dir,
    git_commit,
    hparams_of,
    versions,
    write_config,
    write_json,
)


@dataclass
class RunResult:
    run_dir: Path
    status: str  # status.COMPLETED | INTERRUPTED | DIVERGED | PRUNED
    summary: dict

    @property
    def exit_code(self) -> int:
        return st.EXIT_CODES[self.status]


def fingerprints(model: torch.nn.Module, generator: torch.Generator, n: int, batch_size: int) -> dict[str, str]:
    """SHA-256 of the initial weights and of the first batch's sample indices: equal means same start."""
    weights = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        weights.update(key.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    probe = torch.Generator()
    probe.set_state(generator.get_state())  # a copy: the run's own generator is not advanced
    first = epoch_order(n, probe)[:batch_size]
    return {"initial_weights": weights.hexdigest(),
            "first_batch": hashlib.sha256(first.numpy().tobytes()).hexdigest()}


@dataclass
class RunState:
    """Everything a run carries from epoch to epoch (and into its checkpoints)."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    data: FashionMNIST
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the data order's (and the augmentation's) own generator
    ema: AveragedModel | None = None  # the weights' moving average (train.ema), which is what gets evaluated
    command: str | None = None  # the command line that started this session, for summary.json
    epoch: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    confusion: list = field(default_factory=list)  # of the last completed epoch, for TensorBoard
    prior_seconds: float = 0.0  # wall time of earlier sessions of this run (before a resume)
    started: float = field(default_factory=time.time)
    provenance: dict = field(default_factory=lambda: {"versions": versions(), "git_commit": git_commit()})

    def checkpoint(self, name: str) -> None:
        save_checkpoint(self.run_dir / "checkpoints" / name, model=self.model, optimizer=self.optimizer,
                        epoch=self.epoch, global_step=self.global_step, config=self.cfg.to_dict(),
                        history=self.history, step_losses=self.step_losses, best=self.best,
                        data_generator=self.generator, ema=self.ema)


def train(cfg: RunConfig, *, runs_dir: Path = Path("runs"), data_dir: str | Path | None = None,
          run_dir: Path | None = None, data: FashionMNIST | None = None,
          initial_state: dict[str, torch.Tensor] | None = None, progress: Progress | None = None,
          should_stop: Callable[[], bool] = lambda: False, command: str | None = None) -> RunResult:
    """Train `cfg` in a new run folder under `runs_dir` (or in `run_dir`) and return how it ended.

    `data` and `initial_state` let the optimizer comparison share one decoded data set and one initialization;
    `command` is the command line recorded in summary.json.
    """
    device = resolve_device(cfg.device)
    if run_dir is None:
        check_writable(runs_dir)
    data = data or load_data(cfg, data_dir)
    n_train = len(data.train.labels)
    check_trainable(cfg, n_train)
    check_memory(cfg, device, n_train + len(data.test.labels) + (0 if data.val is None else len(data.val.labels)),
                 n_train)
    set_threads(cfg.train.threads)
    keep_freed_memory()
    seed_everything(cfg.seed)
    model = prepare_model(cfg, device)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    if run_dir is None:
        run_dir = create_run_dir(runs_dir, cfg.run_name)
    else:
        run_dir.mkdir(parents=True, exist_ok=False)
    lock = lock_run_dir(run_dir)  # held until the run ends: a --resume of this folder meanwhile is refused
    run = RunState(cfg, run_dir, device, data, model, build_optimizer(cfg.optimizer, model.parameters()),
                   torch.Generator().manual_seed(cfg.seed), ema=make_ema(model, cfg.train.ema), command=command)
    run.provenance["fingerprints"] = fingerprints(model, run.generator, len(data.train.labels),
                                                  cfg.train.batch_size)
    write_config(run_dir / "config.yaml", cfg.to_dict())
    run.checkpoint("last.pt")  # epoch 0: an interrupted first epoch can still be resumed
    write_summary(run, st.RUNNING)
    with lock:
        return run_epochs(run, TensorBoardLog(run_dir), progress or Progress(), should_stop)


def run_epochs(run: RunState, tb: TensorBoardLog, progress: Progress, should_stop: Callable[[], bool]) -> RunResult:
    """Train the remaining epochs of `run`, recording each one; then the final outputs and summary."""
    cfg = run.cfg
    train_split = TensorSplit.from_split(run.data.train, run.device)
    test_split = TensorSplit.from_split(run.data.test, run.device)
    val_split = TensorSplit.from_split(run.data.val, run.device) if run.data.val is not None else None
    metrics = MetricsFile(run.run_dir / "metrics.csv", val_split is not None)
    if run.epoch == 0:
        metrics.rewrite([])
    n = len(train_split)
    used = images_per_epoch(n, cfg.train.batch_size, cfg.model.batchnorm)
    steps = math.ceil(used / cfg.train.batch_size)

    def batches_for_epoch(epoch: int):
        progress.start_epoch(epoch, cfg.train.epochs, steps)
        order = epoch_order(n, run.generator)[:used]
        if cfg.data.loader == "torchvision":
            batches = classic_batches(run.data.train, cfg.train.batch_size, order, cfg.data.num_workers, run.device)
        else:
            batches = fast_batches(train_split, cfg.train.batch_size, order)
        return augmented(batches, cfg.data, run.generator)

    recipe = Recipe(lr_for_step=lambda step: lr_at(cfg.optimizer, step, steps * cfg.train.epochs),
                    label_smoothing=cfg.train.label_smoothing, ema=run.ema, tta=cfg.train.tta == "flip",
                    eval_batch_size=cfg.train.eval_batch_size,
                    autocast=torch.bfloat16 if cfg.train.precision == "bf16" else None)
    status, last, stopped_early = st.COMPLETED, None, False
    try:
        for result in fit(run.model, run.optimizer, epochs=range(run.epoch + 1, cfg.train.epochs + 1),
                          batches_for_epoch=batches_for_epoch, recipe=recipe, test=test_split, val=val_split,
                          first_step=run.global_step, should_stop=should_stop, on_step=progress.step):
            if result.status != "ok":
                status, last = result.status, result
                if status == st.INTERRUPTED:  # the caller may name why it stopped the run, e.g. PRUNED
                    status = getattr(should_stop, "reason", status)
                break
            record_epoch(run, result, metrics, tb)
            last = result
            progress.end_epoch(result, cfg.train.epochs)
            if out_of_patience(run) and run.epoch < cfg.train.epochs:
                stopped_early = True
                break
    except Exception as exc:  # a bug, not a user mistake: record it beside the run, then let it raise
        write_summary(run, st.CRASHED, error=f"{exc.__class__.__name__}: {exc}",
                      resume_command=f"fashionmlp train --resume {run.run_dir}")
        raise
    finally:
        progress.close()
    extra: dict[str, Any] = {}
    if status == st.DIVERGED:
        extra["diverged"] = {"epoch": last.epoch, "step": last.nonfinite_step,
                             "global_step": run.global_step + last.nonfinite_step, "lr": last.metrics["lr"],
                             "last_good_epoch": run.epoch}
    if status == st.INTERRUPTED:
        extra["resume_command"] = f"fashionmlp train --resume {run.run_dir}"
    elif cfg.train.patience is not None and status == st.COMPLETED:
        extra["early_stopping"] = {"patience": cfg.train.patience, "stopped_after_epoch": run.epoch if stopped_early
                                   else None, "restored_epoch": run.best.get("epoch")}
    if status != st.INTERRUPTED:
        finish_outputs(run, tb)
    tb.close()
    summary = write_summary(run, status, **extra)
    return RunResult(run.run_dir, status, summary)


def out_of_patience(run: RunState) -> bool:
    """train.patience epochs have passed since the best validation accuracy (early stopping)."""
    patience = run.cfg.train.patience
    return patience is not None and bool(run.best) and run.epoch - run.best["epoch"] >= patience


def record_epoch(run: RunState, result: EpochResult, metrics: MetricsFile, tb: TensorBoardLog) -> None:
    """Checkpoint first, then the files that mirror it; a kill between them is repaired by resume."""
    first_step = run.global_step + 1
    run.epoch = result.epoch
    run.global_step += len(result.step_losses)
    run.step_losses.extend(result.step_losses)
    row = dict(result.metrics, samples_per_second=result.samples_per_second, global_step=run.global_step)
    run.history.append(row)
    key = "val_accuracy" if "val_accuracy" in row else "test_accuracy"
    improved = not run.best or row[key] > run.best.get(key, -1.0)
    if improved:
        run.best = {"epoch": row["epoch"], "test_accuracy": row["test_accuracy"]}
        if key == "val_accuracy":
            run.best["val_accuracy"] = row["val_accuracy"]
    run.checkpoint("last.pt")
    if improved:  # the same state: copy the bytes instead of serializing twice
        atomic_copy(run.run_dir / "checkpoints" / "last.pt", run.run_dir / "checkpoints" / "best.pt")
    metrics.append(row)
    tb.epoch(row, result.step_losses, first_step, result.samples_per_second)
    run.confusion = result.confusion
    write_summary(run, st.RUNNING)


def finish_outputs(run: RunState, tb: TensorBoardLog) -> None:
    """The run's pictures (loss curve, confusion matrix in TensorBoard) and its HParams entry."""
    cfg = run.cfg
    title = f"{cfg.run_name}: {cfg.model.name}, {cfg.optimizer.name} lr={cfg.optimizer.lr:g}"
    if run.history:
        note = ", ".join(([f"label smoothing {cfg.train.label_smoothing:g}"] if cfg.train.label_smoothing else [])
                         + (["augmented images"] if cfg.data.shift or cfg.data.flip else []))
        loss_curve(run.history, run.step_losses, title, note).savefig(run.run_dir / "loss_curve.png", dpi=110)
    if run.confusion:
        tb.figure("confusion_matrix/test", confusion_matrix(run.confusion, title), run.global_step)
    # The metric values are the last points of these scalar tags, already in this run.
    tb.hparams(hparams_of(cfg.to_dict()), {tag: 0.0 for tag in HPARAM_METRICS})


TIME_TO_ACCURACY = (0.85, 0.88, 0.90, 0.92, 0.93)  # test accuracies whose first arrival summary.json times


def time_to_accuracy(history: list[dict]) -> dict[str, float]:
    """Training seconds (evaluation excluded) at the end of the first epoch whose test accuracy reached each
    of TIME_TO_ACCURACY, e.g. {"85%": 1.9, "88%": 5.6}; a level never reached is absent."""
    reached, seconds = {}, 0.0
    for row in history:
        seconds += row["seconds"]
        for level in TIME_TO_ACCURACY:
            key = f"{level:.0%}"
            if key not in reached and row["test_accuracy"] >= level:
                reached[key] = round(seconds, 3)
    return reached


def samples_per_second(history: list[dict]) -> float | None:
    """Images trained over the training seconds of all epochs (evaluation excluded); None before an epoch."""
    seconds = sum(r["seconds"] for r in history)
    return sum(r["samples_per_second"] * r["seconds"] for r in history) / seconds if seconds > 0 else None


def write_summary(run: RunState, status: str, **extra: Any) -> dict:
    last = run.history[-1] if run.history else {}
    if "early_stopping" in extra:  # the run ends with the best epoch's weights (best.pt): report those
        last = next(r for r in run.history if r["epoch"] == extra["early_stopping"]["restored_epoch"])
    summary = {
        "status": status,
        "epochs": run.epoch,
        "epochs_planned": run.cfg.train.epochs,
        "final": {k: last.get(k) for k in ("train_loss", "test_loss", "test_accuracy")},
        "best": run.best,
        "seconds": round(run.prior_seconds + time.time() - run.started, 3),
        "train_seconds": round(sum(r["seconds"] for r in run.history), 3),
        "time_to_accuracy": time_to_accuracy(run.history),
        "samples_per_second": samples_per_second(run.history),
        "device": str(run.device),
        "seed": run.cfg.seed,
        "model": run.cfg.model.name,
        "optimizer": run.cfg.optimizer.name,
        "lr": run.cfg.optimizer.lr,
        "n_params": n_params(run.model),
        "data": {"dir": str(run.data.root), "train_size": len(run.data.train.labels),
                 "val_size": 0 if run.data.val is None else len(run.data.val.labels),
                 "test_size": len(run.data.test.labels), "loader": run.cfg.data.loader},
        **run.provenance,
        "command": run.command,
        **extra,
    }
    if "val_accuracy" in last:
        summary["final"].update(val_loss=last["val_loss"], val_accuracy=last["val_accuracy"])
    write_json(run.run_dir / "summary.json", summary)
    return summary
