"""The sweep's workers: each asks the study for trials and trains them as ordinary runs, here or in spawned
processes (`--jobs`); the pruner stops hopeless trials after an epoch, and a stop request fails and requeues
the trial in progress."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashionmlp import status as st
from fashionmlp.data import load_data
from fashionmlp.errors import ConfigError
from fashionmlp.progress import Progress, StopRequest
from fashionmlp.run import train
from fashionmlp.sweep.backend import TrialState, finished_states, optuna
from fashionmlp.sweep.report import progress_line
from fashionmlp.sweep.space import trial_config
from fashionmlp.sweep.spec import SweepSpec
from fashionmlp.sweep.storage import JOURNAL, OWNER, _owner, _retry, fail_dead_trials, open_storage


@dataclass(frozen=True)
class _Job:
    """What a worker needs (picklable: spawned workers get it as their argument)."""

    spec: SweepSpec
    study: str
    storage: str | None  # database URL; None: the journal
    sweep_dir: Path
    data_dir: str | None
    worker: int  # 0..J-1: one of the three numbers its sampler's seed is drawn from
    threads: int  # train.threads of its trials (0: the config's)
    command: str | None = None  # the sweep's command line, recorded in each trial's summary.json


class _Interrupted(Exception):
    def __init__(self, number: int):
        super().__init__(f"trial {number} interrupted")
        self.number = number


class _Rejected(Exception):
    """The trial's combination of values is not a valid config (each value alone is): the trial fails."""


class _TrialStop:
    """A trial's stop request: the user's (Ctrl-C, SIGTERM), or the pruner's verdict (the run then ends
    "pruned")."""

    def __init__(self, user: StopRequest):
        self.user = user
        self.pruned = False

    @property
    def requested(self) -> bool:  # read by engine.fit after every step
        return self.pruned or self.user.requested

    @property
    def reason(self) -> str:  # read by run.run_epochs when the run stops
        return st.INTERRUPTED if self.user.requested else st.PRUNED


class _Report(Progress):
    """Reports the metric after each epoch to the trial (and a line to `echo`) and asks the pruner whether to
    go on."""

    def __init__(self, trial, spec: SweepSpec, stop: _TrialStop, echo: Callable[[str], None] = lambda line: None):
        self.trial, self.spec, self.stop, self.echo = trial, spec, stop, echo

    def end_epoch(self, result, epochs: int) -> None:
        value = result.metrics[self.spec.metric]
        self.echo(f"trial {self.trial.number:>3} epoch {result.epoch}/{epochs}  {self.spec.metric} {value:.4f}  "
                  f"{result.metrics['seconds']:.1f}s")
        self.trial.report(value, result.epoch)
        if result.epoch < epochs and self.trial.should_prune():
            self.stop.pruned = True  # the run stops after the next step; that unfinished epoch is dropped


def _make_sampler(spec: SweepSpec, worker: int, start: int):
    """The sampler of worker `worker`, started when the study had `start` trials: each (worker, start) gets its
    own seed, so workers and continued studies do not repeat the random draws of earlier ones."""
    seed = int(np.random.SeedSequence([spec.seed, worker, start]).generate_state(1)[0])
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler_startup_trials)


def _make_pruner(spec: SweepSpec):
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                       n_warmup_steps=spec.pruner_from_epoch)


def _work(job: _Job, data, echo: Callable[[str], None], user_stop: StopRequest) -> bool:
    """One worker: run trials until the study has its finished trials; True when interrupted."""
    storage = open_storage(job.storage, job.sweep_dir / JOURNAL)
    books = optuna.load_study(study_name=job.study, storage=storage, sampler=optuna.samplers.RandomSampler())
    sampler = _make_sampler(job.spec, job.worker, len(books.get_trials(deepcopy=False)))
    study = optuna.load_study(study_name=job.study, storage=storage, sampler=sampler, pruner=_make_pruner(job.spec))
    data = data if data is not None else load_data(job.spec.base, job.data_dir)
    spec = job.spec

    def objective(trial) -> float:
        trial.set_user_attr(OWNER, _owner(trial.number))
        trial.set_user_attr("status", st.RUNNING)  # replaces what a retried trial inherited
        trial.set_user_attr("epochs", None)  # known when the run ends
        values = {p.key: p.suggest(trial) for p in spec.params}
        name = f"trial-{trial.number:04d}"
        try:
            cfg = trial_config(spec, values, f"{job.study}-{name}", job.threads)
        except ConfigError as exc:
            trial.set_user_attr("error", str(exc))
            raise _Rejected(str(exc)) from None
        run_dir = job.sweep_dir / name
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        stop = _TrialStop(user_stop)
        result = train(cfg, run_dir=run_dir, data=data, progress=_Report(trial, spec, stop, echo), stop=stop,
                       command=job.command)
        trial.set_user_attr("epochs", result.summary["epochs"])
        trial.set_user_attr("status", result.status)
        if result.status == st.INTERRUPTED:
            raise _Interrupted(trial.number)
        if result.status in (st.PRUNED, st.DIVERGED):  # diverged: the pruner's outcome, reached by the loss itself
            raise optuna.TrialPruned(f"{result.status} after epoch {result.summary['epochs']}")
        return float(result.summary["final"][spec.metric])

    def after_trial(this_study, trial) -> None:
        fail_dead_trials(books)
        finished = len(books.get_trials(deepcopy=False, states=finished_states()))
        echo(progress_line(spec, trial, finished))
        if user_stop.requested:  # asked to stop between two trials: start no other
            this_study.stop()

    # Counting running trials too keeps concurrent workers from starting trials beyond the target.
    enough = optuna.study.MaxTrialsCallback(spec.target, states=(*finished_states(), TrialState.RUNNING))
    try:
        study.optimize(objective, callbacks=[after_trial, enough], catch=(_Rejected,), gc_after_trial=False)
    except _Interrupted as exc:  # the trial is FAIL already (Optuna re-raised); run its values again later
        _retry(books, exc.number)
        echo(f"trial {exc.number:>3} interrupted: marked failed and queued to run again")
        return True
    return user_stop.requested


def _spawned(job: _Job, parent: int) -> None:
    """Entry point of a worker process: SIGTERM (from the parent) stops it gracefully; so does the parent's death."""
    flag = StopRequest()

    def on_term(signum, frame):
        if flag.requested:
            os._exit(130)
        flag.request()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which forwards SIGTERM once
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line per trial of our own replaces Optuna's log

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        flag.request()

    threading.Thread(target=watch, daemon=True).start()
    interrupted = _work(job, None, lambda line: print(line, flush=True), flag)
    raise SystemExit(130 if interrupted else 0)


def _run_workers(jobs: list[_Job], stop: StopRequest, echo: Callable[[str], None]) -> list[str]:
    """Run each job in its own spawned process; forward a stop request once; return what went wrong."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks
    procs = [ctx.Process(target=_spawned, args=(job, os.getpid()), name=f"worker-{job.worker + 1}") for job in jobs]
    for p in procs:
        p.start()
    echo("workers: " + ", ".join(f"{p.name} pid {p.pid}" for p in procs))
    forwarded = False
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.2)
        if stop.requested and not forwarded:
            for p in procs:
                if p.is_alive():
                    p.terminate()  # SIGTERM: finish the step, fail and requeue the trial, exit
            forwarded = True
    problems = []
    for p in procs:
        if p.exitcode and p.exitcode < 0:
            problems.append(f"{p.name} (pid {p.pid}) was killed by {signal.Signals(-p.exitcode).name}")
        elif p.exitcode not in (0, 130):
            problems.append(f"{p.name} (pid {p.pid}) exited with code {p.exitcode}")
    return problems


def _replace_worker(job: _Job, worker: int) -> _Job:
    return dataclasses.replace(job, worker=worker)
