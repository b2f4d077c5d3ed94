"""Continue a run from checkpoints/last.pt: weights, optimizer, RNGs, metrics.csv and the TensorBoard log."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import torch

from fashionmlp import status as st
from fashionmlp.checkpoint import RESUME_KEYS, check_layout, load_checkpoint, load_training_state, make_ema, restore_rng
from fashionmlp.config import RunConfig, shortcut_values
from fashionmlp.distill import Teacher
from fashionmlp.errors import UserError
from fashionmlp.optim import build_optimizer, lr_at
from fashionmlp.plots.common import plural
from fashionmlp.progress import Progress, StopRequest
from fashionmlp.recorder import Trainee
from fashionmlp.run import RunResult, recorder_for, run_epochs
from fashionmlp.runlock import lock_run_dir
from fashionmlp.savedrun import (
    check_fits,
    check_run_dir,
    group_of,
    previous_summary,
    refuse_links,
    run_config,
    run_data,
)
from fashionmlp.session import prepare
from fashionmlp.tracking import check_folder_writable


def resume(run_dir: Path, *, epochs: int | None = None, data_dir: str | Path | None = None,
           device: str | None = None, progress: Progress | None = None, stop: StopRequest | None = None,
           command: str | None = None, notify: Callable[[str], None] = lambda message: None,
           teacher: Teacher | None = None) -> RunResult:
    """Continue the run in `run_dir` (to `epochs` in all, when given) exactly as if it had never stopped;
    `notify` is told what the user should know (a learning-rate schedule re-planned over more epochs); `teacher`,
    one already loaded (a study's), must be the one the run's config pins."""
    run_dir = check_run_dir(run_dir, "--resume")
    last_pt = run_dir / "checkpoints" / "last.pt"
    if not last_pt.is_file():
        raise UserError(f"--resume {str(run_dir)!r}: no checkpoint to resume from (checkpoints/last.pt is missing)")
    refuse_links(run_dir, "--resume")
    for folder in (run_dir, run_dir / "checkpoints"):  # a resumed run writes both; find out before training
        check_folder_writable(folder, "--resume: run folder" if folder == run_dir else "--resume: folder")
    with lock_run_dir(run_dir):  # before anything is read or rewritten; released however this ends
        cfg = run_config(run_dir, values=shortcut_values(epochs=epochs, device=device))
        state = load_checkpoint(last_pt)
        finishing = check_resumable(cfg, state, run_dir)
        check_fits(cfg, state, last_pt, optimizer_too=True)
        planned = planned_epochs(state, cfg.train.epochs)
        check_study_member(run_dir, planned, cfg.train.epochs, int(state["epoch"]))
        replan = replanned(cfg, planned, int(state["global_step"]), int(state["epoch"]))
        previous = previous_summary(run_dir)
        kept = previous.get("threads") if not cfg.train.threads else None  # the count it trained with: exact resume
        threads = kept if isinstance(kept, int) and kept > 0 else None
        session = prepare(cfg, data=run_data(run_dir, cfg, data_dir), threads=threads, teacher=teacher)
        if replan:  # after every check (a refused resume is one error line)
            notify(replan)
        if finishing:
            notify(f"{run_dir.name} has trained its {plural(int(state['epoch']), 'epoch')} but its end was not "
                   "written (stopped while it finished): writing it now, with no more training")
        trainee = restore_trainee(session.model, cfg, state, last_pt)
        recorder = recorder_for(run_dir, session, trainee, command).reopen(state, previous)
        if finishing and previous.get("engine") in ("single", "population"):
            recorder.engine = previous["engine"]  # it trained every epoch there: only its end is written here
        (result,) = run_epochs(trainee, session, [recorder], progress or Progress(), stop, finishing)
    return result


def check_study_member(run_dir: Path, planned: int, epochs: int, done: int) -> None:
    """A run of a study folder (compare-optimizers, train --seeds) keeps the study's epochs: its table averages
    the runs as equals."""
    if epochs != planned and group_of(run_dir) == "study":
        way = ("copy the run folder out of the study to extend it alone" if done >= planned else
               "resume it without --epochs, or copy the run folder out of the study to extend it alone")
        raise UserError(f"--resume {str(run_dir)!r} --epochs {epochs}: this run is one of the study "
                        f"{str(run_dir.parent)!r}, whose runs all train {plural(planned, 'epoch')} (its table "
                        f"averages them); {way}")


# summary.json statuses of runs whose end was not written (interrupted: a full disk while it drew its pictures)
UNWRITTEN_ENDS = (st.RUNNING, st.KILLED, st.CRASHED, st.INTERRUPTED)


def _out_of_patience(cfg: RunConfig, state: dict) -> bool:
    best_epoch = (state.get("best") or {}).get("epoch")
    return cfg.train.patience is not None and best_epoch is not None and (
        int(state["epoch"]) - best_epoch >= cfg.train.patience)


def planned_epochs(state: dict, default: int) -> int:
    """The epochs the checkpoint's run trained towards (its config's, not a --epochs given to continue it)."""
    epochs = ((state.get("config") or {}).get("train") or {}).get("epochs", default)
    return int(epochs)


def ends_here(cfg: RunConfig, state: dict, run_dir: Path) -> bool:
    """Whether the run has trained every epoch it will (all of train.epochs, or its patience is used up) while
    its summary.json does not say how it ended: it was killed, or stopped by a second Ctrl-C, after its last
    checkpoint, while it drew its pictures. Resuming it only writes its end."""
    done = int(state["epoch"])
    done_all = done == planned_epochs(state, -1) == cfg.train.epochs or (
        _out_of_patience(cfg, state) and done <= cfg.train.epochs)
    return done_all and previous_summary(run_dir).get("status", st.RUNNING) in UNWRITTEN_ENDS


def check_resumable(cfg: RunConfig, state: dict, run_dir: Path) -> bool:
    """A run ended by early stopping is not continued; a finished one only with more epochs; one whose end was
    not written (ends_here) is finished: True then, when resuming it only writes its end."""
    check_layout(state, run_dir / "checkpoints" / "last.pt", RESUME_KEYS)
    teacher = cfg.distill.teacher
    if teacher is not None and Path(teacher).expanduser().resolve() == run_dir.resolve():
        raise UserError(f"--resume {str(run_dir)!r}: its config.yaml names the run itself as distill.teacher: a run "
                        "cannot teach itself (each epoch would change its teacher); name another run")
    done = int(state["epoch"])
    best_epoch = (state.get("best") or {}).get("epoch")
    if ends_here(cfg, state, run_dir):
        return True
    summary = previous_summary(run_dir)
    if summary.get("status") == st.DIVERGED and isinstance(summary.get("diverged"), dict):  # it diverged again
        what, setting = st.lower_setting(summary, summary["diverged"])
        data_dir = (summary.get("data") or {}).get("dir")
        data = f" --data-dir {shlex.quote(str(data_dir))}" if data_dir else ""
        raise UserError(f"--resume {str(run_dir)!r}: the run diverged, and continued it would start from the same "
                        f"weights and batches again; try a lower {what} in a new run: fashionmlp train --config "
                        f"{shlex.quote(str(run_dir / 'config.yaml'))} --set {setting}{data}")
    if _out_of_patience(cfg, state):
        raise UserError(f"--resume {str(run_dir)!r}: early stopping ends this run: no better validation accuracy "
                        f"in the {done - best_epoch} epochs since epoch {best_epoch} (train.patience = "
                        f"{cfg.train.patience}); its best weights are in checkpoints/best.pt")
    if cfg.train.epochs <= done:
        planned = planned_epochs(state, cfg.train.epochs)
        has = (f"the run already has its {done} of {planned} epochs" if cfg.train.epochs == done == planned else
               f"--epochs {cfg.train.epochs}: the run already has {done} epoch{'s' * (done != 1)} (of the {planned} "
               "it planned)"
               if cfg.train.epochs == done else
               f"--epochs {cfg.train.epochs} is fewer than the {done} epochs the run already has")
        way = ((f"pass --epochs N with N > {done} to extend it" if done >= planned else
                f"leave --epochs out to continue it to its {planned}, or pass N > {done}")
               if group_of(run_dir) != "study" else
               "a study's runs all train to one length (without --epochs, --resume continues an unfinished one)"
               if cfg.train.epochs < done
               else "copy the run folder out of the study to extend it alone (its table averages runs of one length)")
        raise UserError(f"--resume {str(run_dir)!r}: {has}; {way}")
    return False


def restore_trainee(model: torch.nn.Module, cfg: RunConfig, state: dict, path: Path, own_rng: bool = False
                    ) -> Trainee:
    """The model, its EMA, optimizer and data generator exactly as checkpoint `state` left them; the global
    RNGs too (with `own_rng`, torch's global generator's state goes into the trainee's own `rng` instead: a
    member of a population draws its dropout masks from it)."""
    ema = make_ema(model, cfg.train.ema)
    load_training_state(model, ema, state, path)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise UserError(f"{path}: optimizer state does not fit the configured optimizer ({exc})") from None
    generator, rng = torch.Generator(), torch.Generator() if own_rng else None
    restore_rng(state["rng"], generator, rng)
    return Trainee(model, optimizer, generator, ema, rng)


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
