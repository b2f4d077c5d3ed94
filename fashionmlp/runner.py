"""A training run from start to finish: config -> data -> model + optimizer -> engine -> run folder.

`train()` starts a run and `resume()` continues one; both hand the epoch loop to `engine.fit` and do all
the writing here, at the edge. Problems the user can fix are raised as UserError before a run folder exists.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fashionmlp import config as config_mod
from fashionmlp.checkpoint import atomic_copy, load_checkpoint, load_model_state, restore_rng, save_checkpoint
from fashionmlp.config import RunConfig
from fashionmlp.data import (
    FashionMNIST,
    TensorSplit,
    classic_batches,
    epoch_order,
    fast_batches,
    load_fashion_mnist,
    resolve_data_dir,
)
from fashionmlp.engine import EpochResult, fit, seed_everything
from fashionmlp.errors import UserError
from fashionmlp.models import build_model, n_params
from fashionmlp.optim import build_optimizer, lr_at
from fashionmlp.plots import confusion_matrix, loss_curve
from fashionmlp.tracking import (
    HPARAM_METRICS,
    MetricsFile,
    TensorBoardLog,
    check_writable,
    create_run_dir,
    git_commit,
    hparams_of,
    versions,
    write_config,
    write_json,
)

DIVERGED_EXIT = 3
INTERRUPTED_EXIT = 130


class Progress:
    """What a run reports while it works; the CLI shows it, tests and the comparison may ignore it."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, done: int) -> None: ...
    def end_epoch(self, result: EpochResult, epochs: int) -> None: ...
    def close(self) -> None: ...


class StopFlag:
    """Set by a signal handler; the engine checks it after every step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | interrupted | diverged
    summary: dict

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "diverged": DIVERGED_EXIT, "interrupted": INTERRUPTED_EXIT}[self.status]


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit CUDA request on a machine without it is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device: {name!r} requested but CUDA is not available on this machine "
                            f"(torch {torch.__version__}); use --device cpu or --device auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"device: {name!r} does not exist; this machine has {torch.cuda.device_count()} "
                            "CUDA device(s): cuda:0 .. cuda:N-1")
    return torch.device(name)


def set_threads(cfg: RunConfig) -> None:
    """Intra-op threads = the cores this process may use (or train.threads); glibc keeps freed memory."""
    threads = cfg.train.threads or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    keep_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of handing them back to the OS.

    Every training step frees and re-allocates the same few MB of activations; by default glibc returns such
    blocks to the OS and the next step pays a page fault per 4 KiB touched. Measured on the CNN (batch 128,
    2-core CPU, 4 runs each): 65-1,150 minor page faults per step by default, 0-22 with this; 0-12% more
    samples/s; peak memory unchanged. A no-op where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest allowed value
    mallopt(_M_TRIM_THRESHOLD, 2**30)


def load_data(cfg: RunConfig, data_dir: str | Path | None = None) -> FashionMNIST:
    root = resolve_data_dir(data_dir, cfg.data.dir)
    return load_fashion_mnist(root, verify_md5=cfg.data.verify_md5, allow_download=cfg.data.download,
                              subset=cfg.data.subset, val_size=cfg.data.val_size, seed=cfg.seed)


def prepare_model(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    model = build_model(cfg.model).to(device)
    if cfg.model.name == "cnn" and cfg.train.channels_last and device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


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
class _Session:
    """Everything a run carries from epoch to epoch (and into its checkpoints)."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    data: FashionMNIST
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
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
                        data_generator=self.generator)


def train(cfg: RunConfig, *, runs_dir: Path = Path("runs"), data_dir: str | Path | None = None,
          run_dir: Path | None = None, data: FashionMNIST | None = None,
          initial_state: dict[str, torch.Tensor] | None = None, progress: Progress | None = None,
          should_stop: Callable[[], bool] = lambda: False) -> RunResult:
    """Train `cfg` in a new run folder under `runs_dir` (or in `run_dir`) and return how it ended.

    `data` and `initial_state` let the optimizer comparison share one decoded data set and one initialization.
    """
    device = resolve_device(cfg.device)
    if run_dir is None:
        check_writable(runs_dir)
    data = data or load_data(cfg, data_dir)
    set_threads(cfg)
    if run_dir is None:
        run_dir = create_run_dir(runs_dir, cfg.run_name)
    else:
        run_dir.mkdir(parents=True, exist_ok=False)
    seed_everything(cfg.seed)
    model = prepare_model(cfg, device)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    session = _Session(cfg, run_dir, device, data, model, build_optimizer(cfg.optimizer, model.parameters()),
                       torch.Generator().manual_seed(cfg.seed))
    session.provenance["fingerprints"] = fingerprints(model, session.generator, len(data.train.labels),
                                                      cfg.train.batch_size)
    write_config(run_dir / "config.yaml", cfg.to_dict())
    session.checkpoint("last.pt")  # epoch 0: an interrupted first epoch can still be resumed
    _write_summary(session, "running")
    return _loop(session, TensorBoardLog(run_dir), progress or Progress(), should_stop)


def resume(run_dir: Path, *, epochs: int | None = None, data_dir: str | Path | None = None,
           device: str | None = None, progress: Progress | None = None,
           should_stop: Callable[[], bool] = lambda: False) -> RunResult:
    """Continue a run from checkpoints/last.pt: weights, optimizer, RNGs, metrics and TensorBoard log."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {str(run_dir)!r}: no such run directory")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume {str(run_dir)!r}: not a fashionmlp run (no config.yaml)")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise UserError(f"--resume {str(run_dir)!r}: no checkpoint to resume from (checkpoints/last.pt is missing)")
    overrides = [f"{key}={value}" for key, value in (("train.epochs", epochs), ("device", device))
                 if value is not None]
    cfg = config_mod.load_config(run_dir / "config.yaml", overrides)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    done = int(state["epoch"])
    if cfg.train.epochs <= done:
        raise UserError(f"--resume {str(run_dir)!r}: the run already has {done} of {cfg.train.epochs} epochs; "
                        f"pass --epochs N with N > {done} to extend it")
    check_fits(cfg, state, run_dir / "checkpoints" / "last.pt", optimizer_too=True)
    dev = resolve_device(cfg.device)
    data = load_data(cfg, data_dir)
    set_threads(cfg)
    model = prepare_model(cfg, dev)
    load_model_state(model, state["model"], run_dir / "checkpoints" / "last.pt")
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise UserError(f"{run_dir / 'checkpoints' / 'last.pt'}: optimizer state does not fit the configured "
                        f"optimizer ({exc})") from None
    generator = torch.Generator()
    restore_rng(state["rng"], generator)
    previous = _previous_summary(run_dir)
    session = _Session(cfg, run_dir, dev, data, model, optimizer, generator, epoch=done,
                       global_step=int(state["global_step"]), history=list(state["history"]),
                       step_losses=state["step_losses"].tolist(), best=dict(state["best"]),
                       prior_seconds=float(previous.get("seconds") or 0.0))
    if "fingerprints" in previous:
        session.provenance["fingerprints"] = previous["fingerprints"]
    write_config(run_dir / "config.yaml", cfg.to_dict())
    MetricsFile(run_dir / "metrics.csv", data.val is not None).rewrite(session.history)
    _write_summary(session, "running")
    return _loop(session, _reopen_tensorboard(session), progress or Progress(), should_stop)


def _reopen_tensorboard(s: _Session) -> TensorBoardLog:
    """Continue the run's TensorBoard log from the checkpoint: purge everything from the first step of the
    last checkpointed epoch on, and log that epoch again from the checkpoint (a kill may have come between
    the checkpoint and the TensorBoard flush). Every point is then there exactly once."""
    _wait_for_a_later_second(s.run_dir)
    if not s.history:
        return TensorBoardLog(s.run_dir, purge_step=1)
    last = s.history[-1]
    start = int(s.history[-2]["global_step"]) if len(s.history) > 1 else 0
    tb = TensorBoardLog(s.run_dir, purge_step=start + 1)
    tb.epoch(last, s.step_losses[start:s.global_step], start + 1, last["samples_per_second"])
    return tb


def _wait_for_a_later_second(run_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and names begin with the creation second; the
    purge marker of a resumed log only works from a file that sorts after the old ones (at most 1 s wait)."""
    seconds = [int(p.name.split(".")[3]) for p in run_dir.glob("events.out.tfevents.*")
               if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


def _previous_summary(run_dir: Path) -> dict:
    try:
        previous = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def _loop(s: _Session, tb: TensorBoardLog, progress: Progress, should_stop: Callable[[], bool]) -> RunResult:
    cfg = s.cfg
    train_split = TensorSplit.from_split(s.data.train, s.device)
    test_split = TensorSplit.from_split(s.data.test, s.device)
    val_split = TensorSplit.from_split(s.data.val, s.device) if s.data.val is not None else None
    metrics = MetricsFile(s.run_dir / "metrics.csv", val_split is not None)
    if s.epoch == 0:
        metrics.rewrite([])
    n = len(train_split)
    steps = math.ceil(n / cfg.train.batch_size)

    def batches_for_epoch(epoch: int):
        progress.start_epoch(epoch, cfg.train.epochs, steps)
        order = epoch_order(n, s.generator)
        if cfg.data.loader == "torchvision":
            return classic_batches(s.data.train, cfg.train.batch_size, order, cfg.data.num_workers, s.device)
        return fast_batches(train_split, cfg.train.batch_size, order)

    status, last = "completed", None
    try:
        for result in fit(s.model, s.optimizer, epochs=range(s.epoch + 1, cfg.train.epochs + 1),
                          batches_for_epoch=batches_for_epoch,
                          lr_for_epoch=lambda e: lr_at(cfg.optimizer, e, cfg.train.epochs),
                          test=test_split, val=val_split, eval_batch_size=cfg.train.eval_batch_size,
                          should_stop=should_stop, on_step=progress.step,
                          autocast=torch.bfloat16 if cfg.train.precision == "bf16" else None):
            if result.status != "ok":
                status, last = result.status, result
                break
            _record_epoch(s, result, metrics, tb)
            last = result
            progress.end_epoch(result, cfg.train.epochs)
    except Exception as exc:  # a bug, not a user mistake: record it beside the run, then let it raise
        _write_summary(s, "crashed", error=f"{exc.__class__.__name__}: {exc}",
                       resume_command=f"fashionmlp train --resume {s.run_dir}")
        raise
    finally:
        progress.close()
    extra: dict[str, Any] = {}
    if status == "diverged":
        extra["diverged"] = {"epoch": last.epoch, "step": last.nonfinite_step,
                             "global_step": s.global_step + last.nonfinite_step, "lr": last.metrics["lr"],
                             "last_good_epoch": s.epoch}
    if status == "interrupted":
        extra["resume_command"] = f"fashionmlp train --resume {s.run_dir}"
    if status != "interrupted":
        _finish_outputs(s, tb)
    tb.close()
    summary = _write_summary(s, status, **extra)
    return RunResult(s.run_dir, status, summary)


def _record_epoch(s: _Session, result: EpochResult, metrics: MetricsFile, tb: TensorBoardLog) -> None:
    """Checkpoint first, then the files that mirror it; a kill between them is repaired by resume."""
    first_step = s.global_step + 1
    s.epoch = result.epoch
    s.global_step += len(result.step_losses)
    s.step_losses.extend(result.step_losses)
    row = dict(result.metrics, samples_per_second=result.samples_per_second, global_step=s.global_step)
    s.history.append(row)
    key = "val_accuracy" if "val_accuracy" in row else "test_accuracy"
    improved = not s.best or row[key] > s.best.get(key, -1.0)
    if improved:
        s.best = {"epoch": row["epoch"], "test_accuracy": row["test_accuracy"]}
        if key == "val_accuracy":
            s.best["val_accuracy"] = row["val_accuracy"]
    s.checkpoint("last.pt")
    if improved:  # the same state: copy the bytes instead of serializing twice
        atomic_copy(s.run_dir / "checkpoints" / "last.pt", s.run_dir / "checkpoints" / "best.pt")
    metrics.append(row)
    tb.epoch(row, result.step_losses, first_step, result.samples_per_second)
    s.confusion = result.confusion
    _write_summary(s, "running")


def _finish_outputs(s: _Session, tb: TensorBoardLog) -> None:
    title = f"{s.cfg.run_name}: {s.cfg.model.name}, {s.cfg.optimizer.name} lr={s.cfg.optimizer.lr:g}"
    if s.history:
        loss_curve(s.history, s.step_losses, title).savefig(s.run_dir / "loss_curve.png", dpi=110)
    if s.confusion:
        tb.figure("confusion_matrix/test", confusion_matrix(s.confusion, title), s.global_step)
    # The metric values are the last points of these scalar tags, already in this run.
    tb.hparams(hparams_of(s.cfg.to_dict()), {tag: 0.0 for tag in HPARAM_METRICS})


def _write_summary(s: _Session, status: str, **extra: Any) -> dict:
    last = s.history[-1] if s.history else {}
    train_seconds = sum(r["seconds"] for r in s.history)
    summary = {
        "status": status,
        "epochs": s.epoch,
        "epochs_planned": s.cfg.train.epochs,
        "final": {k: last.get(k) for k in ("train_loss", "test_loss", "test_accuracy")},
        "best": s.best,
        "seconds": round(s.prior_seconds + time.time() - s.started, 3),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": (sum(r["samples_per_second"] for r in s.history) / len(s.history)
                               if s.history else None),
        "device": str(s.device),
        "seed": s.cfg.seed,
        "model": s.cfg.model.name,
        "optimizer": s.cfg.optimizer.name,
        "lr": s.cfg.optimizer.lr,
        "n_params": n_params(s.model),
        "data": {"dir": str(s.data.root), "train_size": len(s.data.train.labels),
                 "val_size": 0 if s.data.val is None else len(s.data.val.labels),
                 "test_size": len(s.data.test.labels), "loader": s.cfg.data.loader},
        **s.provenance,
        "command": " ".join(["fashionmlp"] + sys.argv[1:]) if sys.argv and "fashionmlp" in sys.argv[0] else None,
        **extra,
    }
    if "val_accuracy" in last:
        summary["final"].update(val_loss=last["val_loss"], val_accuracy=last["val_accuracy"])
    write_json(s.run_dir / "summary.json", summary)
    return summary


# ---------------------------------------------------------------- saved runs: evaluate and predict


def check_fits(cfg: RunConfig, state: dict, path: Path, optimizer_too: bool = False) -> None:
    """The checkpoint must have been made for the model (and optimizer) that config.yaml describes."""
    saved = state.get("config") or {}
    if saved.get("model") != cfg.to_dict()["model"]:
        raise UserError(f"{path}: checkpoint does not fit the configured model (config.yaml says "
                        f"{cfg.to_dict()['model']}, the checkpoint was made for {saved.get('model')})")
    if optimizer_too and (saved.get("optimizer") or {}).get("name") != cfg.optimizer.name:
        raise UserError(f"{path}: checkpoint was made with optimizer {saved.get('optimizer', {}).get('name')!r}, "
                        f"config.yaml says {cfg.optimizer.name!r}; resume needs the same optimizer")


@dataclass
class LoadedRun:
    cfg: RunConfig
    model: torch.nn.Module
    device: torch.device
    checkpoint: Path
    epoch: int


def load_run(run_dir: Path, checkpoint: str = "best", device: str | None = None) -> LoadedRun:
    """The model of a saved run, from checkpoints/<checkpoint>.pt, ready for inference."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{str(run_dir)!r} is not a directory; pass a run folder such as runs/mlp_adam-20260101-120000")
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints").is_dir():
        raise UserError(f"{str(run_dir)!r} is not a fashionmlp run (it needs config.yaml and checkpoints/)")
    if checkpoint not in ("best", "last"):
        raise UserError(f"--checkpoint: {checkpoint!r} is not allowed; allowed: best, last")
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    cfg = config_mod.load_config(run_dir / "config.yaml", [f"device={device}"] if device else [])
    state = load_checkpoint(path)
    check_fits(cfg, state, path)
    dev = resolve_device(cfg.device)
    set_threads(cfg)
    model = prepare_model(cfg, dev)
    load_model_state(model, state["model"], path)
    model.eval()
    return LoadedRun(cfg, model, dev, path, int(state["epoch"]))
