"""A training run from start to finish: config -> session -> engine.fit -> recorder(s) -> run folder.

`train()` starts a run (resume.py continues one); both hand the epoch loop to `run_epochs`, which trains with
engine.fit and hands each epoch to the run's recorders. Problems the user can fix are raised as UserError
before a run folder exists.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch

from fashionmlp import status as st
from fashionmlp.checkpoint import make_ema
from fashionmlp.config import RunConfig
from fashionmlp.config.rules import unused_keys
from fashionmlp.data import (
    FashionMNIST,
    TensorSplit,
    augmented,
    classic_batches,
    epoch_order,
    fast_batches,
    images_per_epoch,
)
from fashionmlp.device import dtype_of
from fashionmlp.distill import Teacher, cached_logits, distill_of, with_teacher
from fashionmlp.engine import Recipe, fit
from fashionmlp.errors import StoppedBeforeStart
from fashionmlp.optim import build_optimizer, lr_at, warmup_length
from fashionmlp.progress import Progress, StopRequest
from fashionmlp.recorder import RunRecorder, RunResult, Trainee, data_info
from fashionmlp.runlock import lock_run_dir
from fashionmlp.session import Session, prepare
from fashionmlp.tracking import create_run_dir

__all__ = ["RunResult", "run_epochs", "train"]


def train(cfg: RunConfig, *, runs_dir: Path = Path("runs"), data_dir: str | Path | None = None,
          run_dir: Path | None = None, data: FashionMNIST | None = None, progress: Progress | None = None,
          stop: StopRequest | None = None, command: str | None = None, teacher: Teacher | None = None) -> RunResult:
    """Train `cfg` in a new run folder under `runs_dir` (or in `run_dir`) and return how it ended.

    `data` lets a study or sweep share one decoded data set between runs, and `teacher` one loaded teacher (the
    one cfg's distill section names); `command` is the command line recorded in summary.json.
    """
    session = prepare(cfg, data_dir=data_dir, data=data, runs_dir=runs_dir if run_dir is None else None,
                      teacher=teacher)
    if data is None and stop is not None and stop.requested:  # while it loaded the data: it left a folder of one
        raise StoppedBeforeStart()  # step (a study or sweep gives the data, and stops between its runs itself)
    if run_dir is None:
        run_dir = create_run_dir(runs_dir, cfg.run_name)
    else:
        run_dir.mkdir(parents=True, exist_ok=False)
    with lock_run_dir(run_dir):  # held until the run ends: a --resume of this folder meanwhile is refused
        model = session.model
        trainee = Trainee(model, build_optimizer(cfg.optimizer, model.parameters()),
                          torch.Generator().manual_seed(cfg.seed), make_ema(model, cfg.train.ema))
        recorder = recorder_for(run_dir, session, trainee, command).start()
        (result,) = run_epochs(trainee, session, [recorder], progress or Progress(), stop)
    return result


def recorder_for(run_dir: Path, session: Session, trainee: Trainee, command: str | None) -> RunRecorder:
    teacher = None if session.teacher is None else session.teacher.info(session.cfg)
    notes = list(session.notes) + recipe_notes(session.cfg, len(session.data.train.labels))
    return RunRecorder(run_dir, session.cfg, trainee, data_info(session.data, session.cfg), session.device,
                       session.threads, command, notes=notes, distill=teacher)


def recipe_notes(cfg: RunConfig, n_train: int) -> list[str]:
    """What a short run does to the recipe without a word: an EMA whose average is still mostly the first step's
    weights (train.ema 0.999 over 32 steps ended at 18% test accuracy), a warm-up of 0 steps; and the values it
    does not use (config.rules.unused_keys)."""
    total = steps_per_epoch(cfg, n_train)[1] * cfg.train.epochs
    notes = []
    share = cfg.train.ema ** (total - 1)  # of the copy made after the first step, in the average at the end
    if cfg.train.ema and share > 0.5:
        notes.append(f"train.ema {cfg.train.ema:g}: after this run's {total:,} steps the average still holds "
                     f"{share:.0%} of the weights after its first step (it spans about {1 / (1 - cfg.train.ema):,.0f} "
                     "steps), and that average is what is evaluated: a smaller decay, or more epochs")
    if cfg.optimizer.warmup and warmup_length(cfg.optimizer.warmup, total) == 0:
        notes.append(f"optimizer.warmup {cfg.optimizer.warmup:g} of this run's {total:,} steps is 0 steps: no warm-up")
    return notes + unused_keys(cfg)


def steps_per_epoch(cfg: RunConfig, n_train: int) -> tuple[int, int]:
    """(images an epoch uses, optimizer steps per epoch) for a training set of n_train images."""
    used = images_per_epoch(n_train, cfg.train.batch_size, cfg.model.batchnorm)
    return used, math.ceil(used / cfg.train.batch_size)


def recipe_for(cfg: RunConfig, steps: int, trainee: Trainee) -> Recipe:
    """The config's training recipe: the per-step schedule over the whole run, smoothing, EMA, TTA, autocast."""
    return Recipe(lr_for_step=lambda step: lr_at(cfg.optimizer, step, steps * cfg.train.epochs),
                  label_smoothing=cfg.train.label_smoothing, ema=trainee.ema, tta=cfg.train.tta == "flip",
                  eval_batch_size=cfg.train.eval_batch_size,
                  autocast=torch.bfloat16 if cfg.train.precision == "bf16" else None,
                  distill=distill_of(cfg))


def run_epochs(trainee: Trainee, session: Session, recorders: list[RunRecorder], progress: Progress,
               stop: StopRequest | None, finish_only: bool = False) -> list[RunResult]:
    """Train the remaining epochs of the model (from where recorders[0] stands), handing each completed epoch to
    every recorder; then each recorder's final outputs and summary, one RunResult per recorder. `finish_only`:
    the run has trained all it will (resume.ends_here): no epoch, only its end."""
    cfg, data, device = session.cfg, session.data, session.device
    teacher = session.teacher

    def batches_for_epoch(epoch: int) -> Iterable[tuple[torch.Tensor, ...]]:
        progress.start_epoch(epoch, cfg.train.epochs, steps)
        order = epoch_order(n, trainee.generator)[:used]
        if cfg.data.loader == "torchvision":
            batches = classic_batches(data.train, cfg.train.batch_size, order, cfg.data.num_workers, device,
                                      train_split.x.dtype)
        else:
            batches = fast_batches(train_split, cfg.train.batch_size, order)
        batches = augmented(batches, cfg.data, trainee.generator)
        return batches if teacher is None else with_teacher(batches, teacher, cached, order, cfg.train.batch_size)

    lead = recorders[0]
    status, last, stopped_early = st.COMPLETED, None, False
    try:  # the set-up too: a failure while the teacher scored the images left summary.json saying 'running'
        dtype = dtype_of(cfg)
        train_split = TensorSplit.from_split(data.train, device, dtype)
        test_split = TensorSplit.from_split(data.test, device, dtype)
        val_split = TensorSplit.from_split(data.val, device, dtype) if data.val is not None else None
        n = len(train_split)
        used, steps = steps_per_epoch(cfg, n)
        cached = cached_logits(cfg, teacher, train_split.x)
        first = cfg.train.epochs + 1 if finish_only else lead.epoch + 1
        stopped_early = finish_only and lead.out_of_patience() and lead.epoch < cfg.train.epochs
        for result in fit(trainee.model, trainee.optimizer, epochs=range(first, cfg.train.epochs + 1),
                          batches_for_epoch=batches_for_epoch, recipe=recipe_for(cfg, steps, trainee),
                          test=test_split, val=val_split, first_step=lead.global_step, stop=stop,
                          on_step=progress.step):
            if result.status != "ok":
                status, last = result.status, result
                if status == st.INTERRUPTED and stop is not None:
                    status = stop.reason  # the caller may name why it stopped the run, e.g. PRUNED
                break
            for recorder in recorders:
                recorder.record(result)
            last = result
            progress.end_epoch(result, cfg.train.epochs)
            if lead.out_of_patience() and lead.epoch < cfg.train.epochs:
                stopped_early = True
                break
    except Exception as exc:  # a bug, or a full disk: record it beside the run (crashed), then raise
        for recorder in recorders:
            recorder.crashed(exc)
        raise
    finally:
        progress.close()
    return [recorder.finish(status, last, stopped_early) for recorder in recorders]
