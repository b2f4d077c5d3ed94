"""Continue a run from checkpoints/last.pt: weights, optimizer, RNGs, metrics.csv and the TensorBoard log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fashionmlp import status as st
from fashionmlp.checkpoint import load_checkpoint, load_training_state, make_ema, restore_rng
from fashionmlp.config import RunConfig, load_config, shortcut_overrides
from fashionmlp.data import load_data
from fashionmlp.device import keep_freed_memory, prepare_model, resolve_device, set_threads
from fashionmlp.engine import Progress
from fashionmlp.errors import UserError
from fashionmlp.optim import build_optimizer, lr_at
from fashionmlp.run import RunResult, RunState, run_epochs, write_summary
from fashionmlp.runlock import lock_run_dir
from fashionmlp.savedrun import check_fits, check_run_dir
from fashionmlp.tracking import MetricsFile, TensorBoardLog, check_folder_writable, write_config


def resume(run_dir: Path, *, epochs: int | None = None, data_dir: str | Path | None = None,
           device: str | None = None, progress: Progress | None = None,
           should_stop: Callable[[], bool] = lambda: False, command: str | None = None,
           notify: Callable[[str], None] = lambda message: None) -> RunResult:
    """Continue the run in `run_dir` (to `epochs` in all, when given) exactly as if it had never stopped;
    `notify` is told what the user should know (a learning-rate schedule re-planned over more epochs)."""
    run_dir = check_run_dir(run_dir, "--resume")
    last_pt = run_dir / "checkpoints" / "last.pt"
    if not last_pt.is_file():
        raise UserError(f"--resume {str(run_dir)!r}: no checkpoint to resume from (checkpoints/last.pt is missing)")
    for folder in (run_dir, run_dir / "checkpoints"):  # a resumed run writes both; find out before training
        check_folder_writable(folder, "--resume: run folder" if folder == run_dir else "--resume: folder")
    lock = lock_run_dir(run_dir)  # before anything is read or rewritten; held until the run ends
    cfg = load_config(run_dir / "config.yaml", shortcut_overrides(epochs=epochs, device=device))
    state = load_checkpoint(last_pt)
    done = int(state["epoch"])
    best_epoch = (state.get("best") or {}).get("epoch")
    if cfg.train.patience is not None and best_epoch is not None and done - best_epoch >= cfg.train.patience:
        raise UserError(f"--resume {str(run_dir)!r}: early stopping ends this run: no better validation accuracy "
                        f"in the {done - best_epoch} epochs since epoch {best_epoch} (train.patience = "
                        f"{cfg.train.patience}); its best weights are in checkpoints/best.pt")
    if cfg.train.epochs <= done:
        raise UserError(f"--resume {str(run_dir)!r}: the run already has {done} of {cfg.train.epochs} epochs; "
                        f"pass --epochs N with N > {done} to extend it")
    check_fits(cfg, state, last_pt, optimizer_too=True)
    planned = int((state.get("config") or {}).get("train", {}).get("epochs", cfg.train.epochs))
    replan = replanned(cfg, planned, int(state["global_step"]), done)
    if replan:
        notify(replan)
    dev = resolve_device(cfg.device)
    data = load_data(cfg, data_dir)
    set_threads(cfg.train.threads)
    keep_freed_memory()
    model = prepare_model(cfg, dev)
    ema = make_ema(model, cfg.train.ema)
    load_training_state(model, ema, state, last_pt)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise UserError(f"{last_pt}: optimizer state does not fit the configured optimizer ({exc})") from None
    generator = torch.Generator()
    restore_rng(state["rng"], generator)
    previous = _previous_summary(run_dir)
    run = RunState(cfg, run_dir, dev, data, model, optimizer, generator, ema=ema, command=command, epoch=done,
                   global_step=int(state["global_step"]), history=list(state["history"]),
                   step_losses=state["step_losses"].tolist(), best=dict(state["best"]),
                   prior_seconds=float(previous.get("seconds") or 0.0))
    if "fingerprints" in previous:
        run.provenance["fingerprints"] = previous["fingerprints"]
    write_config(run_dir / "config.yaml", cfg.to_dict())
    MetricsFile(run_dir / "metrics.csv", data.val is not None).rewrite(run.history)
    write_summary(run, st.RUNNING)
    with lock:
        return run_epochs(run, _reopen_tensorboard(run), progress or Progress(), should_stop)


def replanned(cfg: RunConfig, planned: int, global_step: int, done: int) -> str | None:
    """What extending a run from `planned` to cfg.train.epochs epochs does to a schedule that depends on the
    total (warm-up, cosine, one-cycle), or None when the learning rate does not depend on it."""
    if cfg.train.epochs == planned or (cfg.optimizer.schedule == "constant" and not cfg.optimizer.warmup):
        return None
    steps = global_step // done if done else 0  # optimizer steps per epoch
    if not steps:
        return None
    before = lr_at(cfg.optimizer, global_step - 1, steps * planned)  # the last step done, as planned
    after = lr_at(cfg.optimizer, global_step, steps * cfg.train.epochs)  # the next one, as re-planned
    return (f"the {cfg.optimizer.schedule} schedule"
            + (f" with {cfg.optimizer.warmup:g} warm-up" if cfg.optimizer.warmup else "")
            + f" is re-planned over {cfg.train.epochs} epochs instead of {planned}: the learning rate goes from "
              f"{before:.4g} (step {global_step}) to {after:.4g} (step {global_step + 1})")


def _reopen_tensorboard(run: RunState) -> TensorBoardLog:
    """Continue the run's TensorBoard log from the checkpoint: purge everything from the first step of the
    last checkpointed epoch on, and log that epoch again from the checkpoint (a kill may have come between
    the checkpoint and the TensorBoard flush). Every point is then there exactly once."""
    _wait_for_a_later_second(run.run_dir)
    if not run.history:
        return TensorBoardLog(run.run_dir, purge_step=1)
    last = run.history[-1]
    start = int(run.history[-2]["global_step"]) if len(run.history) > 1 else 0
    tb = TensorBoardLog(run.run_dir, purge_step=start + 1)
    tb.epoch(last, run.step_losses[start:run.global_step], start + 1, last["samples_per_second"])
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
