"""Retried trials that go on from where the trial they repeat stopped.

A stop (Ctrl-C) or a killed worker fails the running trials and queues their values again (Optuna's retry
callback, which copies the trial's attributes, its run folder among them). The retry continues that run folder,
as `train --resume` would, when it can: its finished epochs are not trained again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashionmlp import status as st
from fashionmlp.checkpoint import load_checkpoint
from fashionmlp.config import load_config, with_values
from fashionmlp.errors import UserError
from fashionmlp.progress import PopulationProgress
from fashionmlp.resume import check_resumable
from fashionmlp.savedrun import config_difference
from fashionmlp.teacher import teacher_path_absolute
from fashionmlp.tracking import write_config


@dataclass
class Stopped:
    """The run a retried trial continues."""

    run_dir: Path
    cfg: Any  # its RunConfig: the trial's, but for the run's name and thread count
    history: list[dict]  # the epochs its checkpoint holds, from which `train --resume` goes on
    finishing: bool  # it has every epoch; only its end was not written (killed while it drew its pictures)

    @property
    def epoch(self) -> int:
        return len(self.history)


def resumable(run_dir: Path, cfg, sweep_dir: Path) -> Stopped | None:
    """The stopped run in `run_dir` when a retried trial with config `cfg` can continue it: a folder of this
    machine's sweep (the storage is data: it never points a run anywhere else), stopped (interrupted, or its
    worker killed) after an epoch at least, trained from the trial's config (its name and thread count aside,
    and where its teacher lies, when the teacher's weights are pinned alike), resumable as `train --resume`
    checks it; None otherwise. Its epochs are read from its checkpoint, which resume trusts (metrics.csv lags
    behind it when a kill came between the two)."""
    if not run_dir.resolve().is_relative_to(Path(sweep_dir).resolve()):
        return None
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        if not isinstance(summary, dict) or summary.get("status") not in (st.INTERRUPTED, st.KILLED):
            return None
        saved = load_config(run_dir / "config.yaml")
        if not _same_run(saved, cfg):
            return None
        followed = _follow_the_teacher(saved, cfg)
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        finishing = check_resumable(followed, state, run_dir)
        history = list(state["history"])
        if history and followed is not saved:  # only a run the retry continues is changed
            write_config(run_dir / "config.yaml", followed.to_dict())
    except (OSError, ValueError, UserError):
        return None
    return Stopped(run_dir, followed, history, finishing) if history else None


def _same_run(saved, cfg) -> bool:
    """Whether a run with config `saved` trains what `cfg` asks for. The thread count it started with is kept
    (the same order of additions: it ends where it would have); a teacher pinned to the same weights may lie
    elsewhere (a run records its resolved path, the sweep's config the path as given)."""
    same_teacher = saved.distill.fingerprint is not None and saved.distill.fingerprint == cfg.distill.fingerprint
    skipped = {"name", "train.threads"} | ({"distill.teacher"} if same_teacher else set())
    return config_difference(saved.to_dict(), cfg.to_dict(), skipped) is None


def _follow_the_teacher(saved, cfg):
    """A stopped run whose teacher (the same weights: _same_run) the sweep now names at another path, moved or
    on another machine: its config with the new one (written to its config.yaml, as a user would edit it for
    `train --resume`, when the retry continues it: it said "no such folder" and trained the trial again)."""
    if saved.distill.teacher is None:
        return saved
    there = teacher_path_absolute(cfg).distill.teacher
    return saved if Path(saved.distill.teacher) == Path(there) else with_values(saved, {"distill.teacher": there})


class Earlier(PopulationProgress):
    """A continued population's progress: the epochs its runs finished before the stop are reported to the
    study once it has started (after every check that could refuse it), so the pruner judges each trial on
    every epoch."""

    def __init__(self, report):
        self.report, self.reported = report, False

    def start_epoch(self, *args, **kwargs) -> None:
        if not self.reported:
            self.report()
            self.reported = True
