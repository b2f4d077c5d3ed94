"""A run folder, written while its model trains: config.yaml, checkpoints, metrics.csv, TensorBoard events,
summary.json and, at the end, loss_curve.png.

The recorder never trains: whoever does (engine.fit for one model, the population engine for many) hands it
one EpochResult at a time, so one training loop can feed several recorders.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from fashionmlp import status as st
from fashionmlp.checkpoint import save_checkpoint, state_digest
from fashionmlp.config import RunConfig
from fashionmlp.data import FashionMNIST, epoch_order
from fashionmlp.errors import UserError
from fashionmlp.models import n_params
from fashionmlp.plots import confusion_matrix, loss_curve
from fashionmlp.progress import EpochResult
from fashionmlp.savedrun import group_of, previous_summary
from fashionmlp.tracking import (
    MetricsFile,
    TensorBoardLog,
    atomic_copy,
    git_commit,
    hparams_of,
    resume_command,
    save_figure,
    versions,
    without_passwords,
    write_config,
    write_json,
)

TIME_TO_ACCURACY = (0.85, 0.88, 0.90, 0.92, 0.93)  # test accuracies whose first arrival summary.json times


@dataclass
class Trainee:
    """The objects that train one model, and that its checkpoints save."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the data order's (and the augmentation's) own generator
    ema: AveragedModel | None = None  # the weights' moving average (train.ema), which is what gets evaluated
    rng: torch.Generator | None = None  # draws its dropout masks (None: torch's global generator, as `train`)


@dataclass
class RunResult:
    run_dir: Path
    status: str  # status.COMPLETED | INTERRUPTED | DIVERGED | PRUNED
    summary: dict

    @property
    def exit_code(self) -> int:
        return st.EXIT_CODES[self.status]


def data_info(data: FashionMNIST, cfg: RunConfig) -> dict[str, Any]:
    """What summary.json says about the data a run trained on."""
    return {"dir": str(data.root), "train_size": len(data.train.labels),
            "val_size": 0 if data.val is None else len(data.val.labels), "test_size": len(data.test.labels),
            "loader": cfg.data.loader}


def fingerprints(model: torch.nn.Module, generator: torch.Generator, n: int, batch_size: int) -> dict[str, str]:
    """SHA-256 of the initial weights and of the first batch's sample indices: equal means same start."""
    probe = torch.Generator()
    probe.set_state(generator.get_state())  # a copy: the run's own generator is not advanced
    first = epoch_order(n, probe)[:batch_size]
    return {"initial_weights": state_digest(model.state_dict()),
            "first_batch": hashlib.sha256(first.numpy().tobytes()).hexdigest()}


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


@dataclass
class RunRecorder:
    """Writes one run folder. `start` makes a new run's first files, `reopen` continues a resumed one; then
    `record` after each completed epoch and `finish` (or `crashed`) at the end."""

    run_dir: Path
    cfg: RunConfig
    trainee: Trainee
    data: dict[str, Any]  # data_info()
    device: torch.device
    threads: int  # CPU threads the run trains with (train.threads 0 resolved)
    command: str | None = None  # the command line that started this session, for summary.json
    engine: str = "single"  # what trained it: single | population
    notes: list[str] = field(default_factory=list)  # what the user should know, in summary.json and on the terminal
    distill: dict | None = None  # the teacher (distill.Teacher.info), for summary.json
    epoch: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    confusion: list = field(default_factory=list)  # of the last completed epoch, for TensorBoard
    prior_seconds: float = 0.0  # wall time of earlier sessions of this run (before a resume)
    resumed: bool = False  # reopened: evaluate and inspect may have drawn its checkpoints (a new run has none)
    started: float = field(default_factory=time.time)
    provenance: dict = field(default_factory=lambda: {"versions": versions(), "git_commit": git_commit()})
    tb: TensorBoardLog | None = None

    def __post_init__(self) -> None:
        self.metrics = MetricsFile(self.run_dir / "metrics.csv", bool(self.data["val_size"]))

    def start(self) -> RunRecorder:
        """The files of a new run, before its first step: config.yaml, checkpoints/last.pt of the initial weights
        (an interrupted first epoch can still be resumed), summary.json saying "running", metrics.csv's header."""
        self.provenance["fingerprints"] = fingerprints(self.trainee.model, self.trainee.generator,
                                                       self.data["train_size"], self.cfg.train.batch_size)
        try:
            write_config(self.run_dir / "config.yaml", self.cfg.to_dict())
            self.checkpoint("last.pt")
            self.write_summary(st.RUNNING)
            self.metrics.rewrite([])
        except UserError as exc:  # a full disk: a folder without its first checkpoint could never be resumed
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise UserError(f"{exc}; nothing was trained, so the run's new folder {self.run_dir.name} is "
                            "removed") from None
        self.tb = TensorBoardLog(self.run_dir)
        return self

    def reopen(self, state: dict, previous_summary: dict) -> RunRecorder:
        """Continue a run from its checkpoint `state`: the history, the files that mirror it, and the TensorBoard
        log (purged from the last checkpointed epoch on, which is logged again: each point exactly once)."""
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.history, self.step_losses = list(state["history"]), state["step_losses"].tolist()
        self.best = dict(state["best"])
        self.prior_seconds, self.resumed = float(previous_summary.get("seconds") or 0.0), True
        if "fingerprints" in previous_summary:
            self.provenance["fingerprints"] = previous_summary["fingerprints"]
        write_config(self.run_dir / "config.yaml", self.cfg.to_dict())
        self.metrics.rewrite(self.history)
        self.write_summary(st.RUNNING)
        self.tb = _reopen_tensorboard(self.run_dir, self.history, self.step_losses, self.global_step)
        return self

    def checkpoint(self, name: str) -> None:
        t = self.trainee
        save_checkpoint(self.run_dir / "checkpoints" / name, model=t.model, optimizer=t.optimizer, epoch=self.epoch,
                        global_step=self.global_step, config=self.cfg.to_dict(), history=self.history,
                        step_losses=self.step_losses, best=self.best, data_generator=t.generator, ema=t.ema,
                        torch_generator=t.rng)

    def record(self, result: EpochResult) -> None:
        """A completed epoch. Checkpoint first, then the files that mirror it; a kill between them is repaired
        by resume."""
        first_step, epoch_before, best_before = self.global_step + 1, self.epoch, self.best
        self.epoch = result.epoch
        self.global_step += len(result.step_losses)
        self.step_losses.extend(result.step_losses)
        row = dict(result.metrics, samples_per_second=result.samples_per_second, global_step=self.global_step)
        self.history.append(row)
        key = "val_accuracy" if "val_accuracy" in row else "test_accuracy"
        improved = not self.best or row[key] > self.best.get(key, -1.0)
        if improved:
            self.best = {"epoch": row["epoch"], "test_accuracy": row["test_accuracy"]}
            if key == "val_accuracy":
                self.best["val_accuracy"] = row["val_accuracy"]
        checkpoints = self.run_dir / "checkpoints"
        try:  # best.pt first: when last.pt holds an improved epoch, best.pt holds it too
            self.checkpoint("best.pt" if improved else "last.pt")
            if improved:  # the same state: copy the bytes instead of serializing twice
                atomic_copy(checkpoints / "best.pt", checkpoints / "last.pt")
        except BaseException:  # not saved (a full disk): the summary written next must not claim the epoch
            self.epoch, self.global_step, self.best = epoch_before, first_step - 1, best_before
            del self.history[-1], self.step_losses[len(self.step_losses) - len(result.step_losses):]
            raise
        if self.resumed:
            self._drop_outputs_of(["last", "best"] if improved else ["last"])
        self.metrics.append(row)
        self.tb.epoch(row, result.step_losses, first_step, result.samples_per_second)
        self.confusion = result.confusion
        self.write_summary(st.RUNNING)

    def _drop_outputs_of(self, replaced: list[str]) -> None:
        """evaluate's and inspect's files made from the checkpoints (`replaced`: last, best) this epoch replaced:
        a resumed run kept epoch 6's evaluation-last.json and inspect/ beside epoch 14's last.pt."""
        dropped = []
        for name in replaced:
            for path in (self.run_dir / f"evaluation-{name}.json", self.run_dir / f"confusion_matrix-{name}.png"):
                try:
                    path.unlink()
                    dropped.append(path.name)
                except OSError:  # not there (the common case), or not ours to remove: an epoch is not lost for it
                    pass
        inspected = self.run_dir / "inspect"
        if previous_summary(inspected).get("checkpoint") in replaced:
            from fashionmlp.inspection import remove_inspection  # (it imports the engine, which imports this)

            if remove_inspection(inspected):  # its own files (not what else is there), unless one is drawing
                dropped.append("inspect/'s pictures and log")
        if dropped:
            self.notes.append(f"removed {', '.join(dropped)}: made from a checkpoint that epoch {self.epoch} "
                              "replaced; evaluate or inspect the run again")

    def out_of_patience(self) -> bool:
        """train.patience epochs have passed since the best validation accuracy (early stopping)."""
        patience = self.cfg.train.patience
        return patience is not None and bool(self.best) and self.epoch - self.best["epoch"] >= patience

    def finish(self, status: str, last: EpochResult | None = None, stopped_early: bool = False) -> RunResult:
        """The run's end: the pictures (unless interrupted), and summary.json with how it ended."""
        cfg, extra = self.cfg, {}
        if status == st.DIVERGED:
            extra["diverged"] = {"epoch": last.epoch, "step": last.nonfinite_step, "what": last.nonfinite,
                                 "global_step": self.global_step + last.nonfinite_step, "lr": last.metrics["lr"],
                                 "last_good_epoch": self.epoch}
        if status == st.INTERRUPTED:
            extra["resume_command"] = self.resume_command()
        elif cfg.train.patience is not None and status == st.COMPLETED:
            extra["early_stopping"] = {"patience": cfg.train.patience,
                                       "stopped_after_epoch": self.epoch if stopped_early else None,
                                       "restored_epoch": self.best.get("epoch")}
        try:
            if status != st.INTERRUPTED:
                self.finish_outputs(extra.get("early_stopping", {}))
            self.tb.close()
            return RunResult(self.run_dir, status, self.write_summary(status, **extra))
        except UserError as exc:  # a full disk, with every epoch saved: a traceback, and a run that said 'running'
            self.crashed(exc)  # 'interrupted', if there is room for that
            then = ("the sweep command, run again, writes the trial's end" if group_of(self.run_dir) == "sweep" else
                    f"`{self.resume_command()}` writes the run's end")
            raise UserError(f"{exc}; then {then}") from None

    def resume_command(self) -> str:
        """The command that continues this run, ready to paste: paths quoted, the data folder it trained on."""
        return resume_command("train", self.run_dir, self.data.get("dir"))

    def crashed(self, exc: BaseException) -> None:
        """Record beside the run why it stopped (the caller lets `exc` raise): a bug ('crashed'), or what the user
        can mend and then resume ('interrupted' with the error: a full disk)."""
        status = st.INTERRUPTED if isinstance(exc, UserError) else st.CRASHED
        try:
            self.write_summary(status, error=f"{exc.__class__.__name__}: {exc}", resume_command=self.resume_command())
        except UserError:  # no room for it either: `exc` says what happened
            pass

    def finish_outputs(self, early_stopping: dict) -> None:
        """The run's pictures (loss curve, confusion matrix in TensorBoard) and its HParams entry."""
        cfg = self.cfg
        # the seed: a group's members (a study's seeds) otherwise had the same title
        title = f"{cfg.run_name}: {cfg.model.name}, {cfg.optimizer.name} lr={cfg.optimizer.lr:g}, seed {cfg.seed}"
        if self.history:
            note = ", ".join(([f"label smoothing {cfg.train.label_smoothing:g}"] if cfg.train.label_smoothing else [])
                             + (["augmented images"] if cfg.data.shift or cfg.data.flip else [])
                             + ([f"distilled: T={cfg.distill.temperature:g}, alpha={cfg.distill.alpha:g}"]
                                if cfg.distill.teacher is not None else []))
            save_figure(loss_curve(self.history, self.step_losses, title, note, cfg.distill.teacher is not None,
                                   early_stopping.get("restored_epoch"), early_stopping.get("stopped_after_epoch")),
                        self.run_dir / "loss_curve.png", dpi=110)
        if self.confusion:
            last = self.history[-1]  # the last epoch's, with early stopping too: said in the title
            self.tb.figure("confusion_matrix/test", confusion_matrix(
                self.confusion, f"{title}: epoch {last['epoch']}, test accuracy {last['test_accuracy']:.2%}"),
                self.global_step)
        self.tb.hparams(hparams_of(cfg.to_dict()), self.result_row(early_stopping), self.global_step)

    def result_row(self, early_stopping: dict) -> dict:
        """The metrics row the run reports as its result: the last epoch's, or with early stopping the restored
        (best) epoch's, whose weights the run ends with (best.pt)."""
        if early_stopping.get("restored_epoch") is not None:
            return next(r for r in self.history if r["epoch"] == early_stopping["restored_epoch"])
        return self.history[-1] if self.history else {}

    def write_summary(self, status: str, **extra: Any) -> dict:
        last = self.result_row(extra.get("early_stopping", {}))
        cfg = self.cfg
        summary = {
            "status": status,
            "epochs": self.epoch,
            "epochs_planned": cfg.train.epochs,
            "final": {k: last.get(k) for k in ("train_loss", "test_loss", "test_accuracy")},
            "best": self.best,
            "seconds": round(self.prior_seconds + time.time() - self.started, 3),
            "train_seconds": round(sum(r["seconds"] for r in self.history), 3),
            "time_to_accuracy": time_to_accuracy(self.history),
            "samples_per_second": samples_per_second(self.history),
            "device": str(self.device),
            "threads": self.threads,
            "engine": self.engine,
            "seed": cfg.seed,
            "model": cfg.model.name,
            "optimizer": cfg.optimizer.name,
            "lr": cfg.optimizer.lr,
            "weight_decay": cfg.optimizer.weight_decay,
            "momentum": cfg.optimizer.momentum,
            "n_params": n_params(self.trainee.model),
            "data": self.data,
            **self.provenance,
            "command": None if self.command is None else without_passwords(self.command),  # folders travel
            **({"notes": self.notes} if self.notes else {}),
            **({"distill": self.distill} if self.distill else {}),
            **extra,
        }
        if "val_accuracy" in last:
            summary["final"].update(val_loss=last["val_loss"], val_accuracy=last["val_accuracy"])
        write_json(self.run_dir / "summary.json", summary)
        return summary


def _reopen_tensorboard(run_dir: Path, history: list[dict], step_losses: list[float],
                        global_step: int) -> TensorBoardLog:
    """Continue a run's TensorBoard log from its checkpoint: purge everything from the first step of the last
    checkpointed epoch on, and log that epoch again from the checkpoint (a kill may have come between the
    checkpoint and the TensorBoard flush). Every point is then there exactly once."""
    _wait_for_a_later_second(run_dir)
    if not history:
        return TensorBoardLog(run_dir)
    last = history[-1]
    start = int(history[-2]["global_step"]) if len(history) > 1 else 0
    tb = TensorBoardLog(run_dir, purge_step=start + 1)
    tb.epoch(last, step_losses[start:global_step], start + 1, last["samples_per_second"])
    return tb


def _wait_for_a_later_second(run_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and names begin with the creation second; the
    purge marker of a resumed log only works from a file that sorts after the old ones (at most 1 s wait)."""
    seconds = [int(p.name.split(".")[3]) for p in run_dir.glob("events.out.tfevents.*")
               if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)
