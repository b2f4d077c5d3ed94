"""The sweep's workers: each asks the study for trials and trains them as ordinary runs, here or in spawned
processes (`--jobs`); the pruner stops hopeless trials after an epoch, and a stop request fails and requeues
the trial in progress."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fashionmlp import status as st
from fashionmlp.config import whole_training_set
from fashionmlp.data import load_data
from fashionmlp.errors import StoppedWaiting, UserError
from fashionmlp.progress import StopRequest
from fashionmlp.sweep.backend import TrialState, finished_states, optuna
from fashionmlp.sweep.heartbeats import beat_once, fail_stale_trials, heartbeats
from fashionmlp.sweep.owners import _owner
from fashionmlp.sweep.report import progress_line
from fashionmlp.sweep.sampler import PerTrialSeed
from fashionmlp.sweep.spec import SweepSpec
from fashionmlp.sweep.storage import (
    JOURNAL,
    OWNER,
    _retry,
    fail_dead_trials,
    open_storage,
)
from fashionmlp.sweep.trials import Asked, configure, duplicate_of, keeps_shape, train_batch


@dataclass(frozen=True)
class _Job:
    """What a worker needs (picklable: spawned workers get it as their argument)."""

    spec: SweepSpec
    study: str
    storage: str | None  # database URL; None: the journal
    sweep_dir: Path
    data_dir: str | None
    worker: int  # 0..J-1
    threads: int  # train.threads of its trials (0: the config's)
    command: str | None = None  # the sweep's command line, recorded in each trial's summary.json
    population: int = 1  # trials asked at once (those of one shape train together)
    workers: int = 1  # workers on this machine: each asks for at most its share of the trials left


def _make_pruner(spec: SweepSpec):
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                       n_warmup_steps=spec.pruner_from_epoch)


def _work(job: _Job, data, echo: Callable[[str], None], user_stop: StopRequest) -> bool:
    """One worker: ask for trials (up to job.population at a time), train them, tell the study, until the
    study has its finished trials; True when interrupted."""
    storage = open_storage(job.storage, job.sweep_dir / JOURNAL, user_stop)
    books = optuna.load_study(study_name=job.study, storage=storage, sampler=optuna.samplers.RandomSampler())
    study = optuna.load_study(study_name=job.study, storage=storage, sampler=PerTrialSeed(job.spec, job.population),
                              pruner=_make_pruner(job.spec))
    spec = job.spec
    data = data if data is not None else load_data(spec.base, job.data_dir)
    whole: list = []  # the training set without a validation split (each population draws its seed's), loaded once

    def full():
        if not whole:
            whole.append(load_data(whole_training_set(spec.base), job.data_dir))
        return whole[0]

    refill = job.population > 1 and keeps_shape(spec)  # later trials take the places of those that end
    while not user_stop.requested:
        find_lost(books, echo, job.sweep_dir)
        asked = _ask(study, books, spec, job, echo, stop=user_stop)
        if not asked:
            break
        if _train_asked(asked, study, books, storage, job, data, full, echo, user_stop, refill):
            return True
    return user_stop.requested


def find_lost(books, echo: Callable[[str], None], sweep_dir: Path) -> None:
    """Running trials whose worker died are failed and queued again: a database's (heartbeats, any machine), and
    on this machine the journal's (the worker's pid); their run folders in `sweep_dir` say "killed"."""
    revived = fail_stale_trials(books) + fail_dead_trials(books, sweep_dir)
    if revived:
        echo(f"trial(s) {', '.join(map(str, revived))} lost their worker: marked failed, queued to run again")


def _train_asked(asked: list[Asked], study, books, storage, job: _Job, data, full, echo: Callable[[str], None],
                 user_stop: StopRequest, refill: bool) -> bool:
    """Train the asked trials (with `refill`, those asked while they train too) and tell the study each outcome
    as its run ends; True when a stop interrupted them (their values are queued again)."""
    spec = job.spec
    told: set[int] = set()
    refused: list[UserError] = []  # raised while the population ran: its members finish first

    def more(places: int) -> list[Asked]:
        if user_stop.requested or refused:
            return []
        # a population that others join may run the worker's whole share: other machines' lost trials are queued
        # again meanwhile (database heartbeats), while this machine's wait for the next batch (find_lost in
        # _work), whose retries continue their runs where they stopped (a place in a running population cannot)
        fail_stale_trials(books)
        try:
            new = _ask(study, books, spec, job, echo, places, user_stop)
        except UserError as exc:
            refused.append(exc)
            return []
        asked.extend(new)
        beats.add([a.trial.number for a in new])
        return new

    interrupted = False

    def ended(a: Asked, result) -> None:
        nonlocal interrupted
        told.add(a.trial.number)
        beats.drop(a.trial.number)
        if result.status == st.INTERRUPTED:  # a stop (a continued run), or taken by another worker meanwhile
            interrupted = _tell_interrupted(study, books, a.trial, result, echo) or interrupted
        else:
            _tell(study, books, spec, a, result, echo)

    with heartbeats(storage, job.study, [a.trial.number for a in asked]) as beats:
        results = train_batch(asked, spec, job.population, data, job.data_dir, full, user_stop, echo, job.command,
                              more if refill else None, ended)
    for a in [a for a in asked if a.trial.number not in told]:
        result = results.get(a.trial.number)
        if result is None or result.status == st.INTERRUPTED:  # not started, or stopped mid-way: run it later
            # (not a trial another worker took meanwhile: this worker goes on with others)
            interrupted = _tell_interrupted(study, books, a.trial, result, echo) or interrupted
            continue
        _tell(study, books, spec, a, result, echo)
    if refused:
        raise refused[0]
    return interrupted


def _tell(study, books, spec: SweepSpec, a: Asked, result, echo: Callable[[str], None]) -> None:
    """A finished trial's outcome to the study (pruned and diverged runs as pruned), and its progress line."""
    attrs = {"epochs": result.summary["epochs"], "status": result.status, "seconds": result.summary.get("seconds"),
             "threads": result.summary.get("threads")}  # threads: best.yaml's (float32 numbers depend on it)
    if result.status in (st.PRUNED, st.DIVERGED):  # diverged: the pruner's outcome, reached by the loss
        frozen = _told(study, a.trial, echo, attrs, state=TrialState.PRUNED)
    else:
        frozen = _told(study, a.trial, echo, attrs, values=float(result.summary["final"][spec.metric]))
    if frozen is None:
        return
    finished = len(books.get_trials(deepcopy=False, states=finished_states()))
    echo(progress_line(spec, frozen, finished))


def _told(study, trial, echo: Callable[[str], None], attrs: dict, **outcome):
    """The trial's user attributes `attrs` set and study.tell; None when another worker had failed the trial
    meanwhile (this one was silent past the heartbeat grace) and queued it again: its outcome here is not the
    study's (it was a traceback)."""
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return study.tell(trial, **outcome)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # ValueError: "Cannot tell a FAIL trial"
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            echo(f"trial {trial.number:>3}: not told to the study: it was failed meanwhile and its values queued "
                 "again")
            return None
        raise


def _ask(study, books, spec: SweepSpec, job: _Job, echo: Callable[[str], None], most: int = 0,
         stop: StopRequest | None = None) -> list[Asked]:
    """Up to job.population trials (or `most`: a running population's free places), without asking beyond the
    study's target (running trials count: workers elsewhere may hold them) or, for a grid, beyond its queued
    points. REJECTED_IN_A_ROW trials whose values no config accepts end the worker (a UserError)."""
    asked: list[Asked] = []
    limit, rejected = most or job.population, 0
    while len(asked) < limit and not (stop is not None and stop.requested):
        finished = len(books.get_trials(deepcopy=False, states=finished_states()))
        running = len(books.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if finished + running >= spec.target:
            break
        if not asked:  # a fair share: the trials left, spread over this machine's workers
            limit = min(most or job.population, -(-(spec.target - finished - running) // job.workers))
            complete = len(books.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))  # what the pruner counts
            if spec.pruner != "none" and complete < spec.pruner_startup_trials:
                # a trial's first epochs reported before the pruner has its startup trials cannot be pruned: ask
                # no more of them than it still needs (a batch of 8 at the start trained 8 such trials to the end)
                startup = -(-(spec.pruner_startup_trials - complete - running) // job.workers)
                limit = min(limit, max(0 if most else 1, startup))  # a running population need not grow
            if limit < 1:
                break
        if spec.sampler == "grid" and not books.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            break  # every point is taken (or done); nothing is sampled beyond the grid
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat ... with Study.optimize": this worker beats itself
            trial = study.ask()
        beat_once(study, trial)
        trials = books.get_trials(deepcopy=False)
        record = next(t for t in trials if t.number == trial.number)
        if spec.sampler != "grid" and _taken_before(trials, trial.number) >= spec.target:
            _skip(study, trial, f"not run: other workers took the study's {spec.target} trials first")
            break
        if spec.sampler == "grid" and "fixed_params" not in record.system_attrs:
            _skip(study, trial, "not run: another worker took the grid's last point first")
            break
        twin = duplicate_of(record, books) if spec.sampler == "grid" else None
        if twin is not None:
            _skip(study, trial, f"not run: the same grid point as trial {twin} (the grid was queued twice)")
            continue
        # a retry (Optuna's callback copies the stopped trial's attributes) continues that trial's run when it
        # can; not one joining a running population, whose members start at its first epoch together
        continues = record.user_attrs.get("run_dir") if record.system_attrs.get("retry_history") and not most else None
        configured = configure(trial, spec, job.study, job.sweep_dir, job.threads, continues)
        if configured is None:  # a combination of values no config accepts: the trial fails, the sweep goes on
            frozen = study.tell(trial, state=TrialState.FAIL)
            echo(progress_line(spec, frozen, len(books.get_trials(deepcopy=False, states=finished_states()))))
            rejected += 1
            if rejected >= REJECTED_IN_A_ROW:  # the space's values rarely go together: it would go on for ever
                for a in asked:  # asked, not started: queued again for whoever continues the study
                    study.tell(a.trial, state=TrialState.FAIL)
                    _retry(books, a.trial.number)
                raise UserError(f"sweep.space: {rejected} trials in a row drew values no config accepts (the last: "
                                f"{frozen.user_attrs.get('error')}); narrow the space to values that go together")
            continue
        rejected = 0
        asked.append(configured)
    return asked


REJECTED_IN_A_ROW = 20


def _taken_before(trials, number: int) -> int:
    """Trials asked before trial `number` that count, or will, towards the study's target: workers that passed
    the check before asking at the same moment all asked (three racing for the last two trials ran 13 of 12),
    and the trials asked first are the ones that run. A waiting one is a retry that the next ask takes."""
    return sum(1 for t in trials if t.number < number and t.state != TrialState.FAIL)


def _skip(study, trial, why: str) -> None:
    """A trial that must not train (no grid point of its own): failed at once, saying why."""
    trial.set_user_attr(OWNER, _owner(trial.number))
    trial.set_user_attr("run_dir", None)  # not the run folder a retry inherited: it trains none
    trial.set_user_attr("skipped", why)
    study.tell(trial, state=TrialState.FAIL)


def _tell_interrupted(study, books, trial, result, echo: Callable[[str], None]) -> bool:
    """A trial stopped before its end: failed, its run folder says so, and its values are queued again; False
    when another worker had failed it meanwhile (and queued it again)."""
    attrs = {"epochs": 0 if result is None else result.summary["epochs"],
             "status": st.INTERRUPTED if result is None else result.status,  # None: asked, not started
             "seconds": None if result is None else result.summary.get("seconds")}
    if _told(study, trial, echo, attrs, state=TrialState.FAIL) is None:
        return False
    _retry(books, trial.number)
    echo(f"trial {trial.number:>3} interrupted: marked failed and queued to run again")
    return True


def _spawned(job: _Job, parent: int, errors) -> None:
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
    try:
        interrupted = _work(job, None, lambda line: print(line, flush=True), flag)
    except UserError as exc:  # told to the command, which says it once for all its workers
        errors.put((str(exc), exc.exit_code))
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(130 if interrupted else 0)


def _run_workers(jobs: list[_Job], stop: StopRequest, echo: Callable[[str], None]) -> list[str]:
    """Run each job in its own spawned process; forward a stop request once; return what went wrong. A user
    mistake a worker found (a UserError, e.g. a space whose trials keep being rejected) is raised once here."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks
    errors = ctx.SimpleQueue()
    procs = [ctx.Process(target=_spawned, args=(job, os.getpid(), errors), name=f"worker-{job.worker + 1}")
             for job in jobs]
    for p in procs:
        p.start()
    echo("workers: " + ", ".join(f"{p.name} pid {p.pid}" for p in procs))
    forwarded = False
    while any(p.is_alive() for p in procs):
        # any worker's end, or 50 ms: a stop is forwarded within that (it took up to 0.4 s, about an epoch of a
        # small trial, joining each worker in turn)
        wait([p.sentinel for p in procs if p.is_alive()], timeout=0.05)
        if stop.requested and not forwarded:
            for p in procs:
                if p.is_alive():
                    p.terminate()  # SIGTERM: finish the step, fail and requeue the trial, exit
            forwarded = True
    if not errors.empty():
        message, code = errors.get()
        raise (StoppedWaiting if code == StoppedWaiting.exit_code else UserError)(message)
    problems = []
    for p in procs:
        if forwarded and p.exitcode == -signal.SIGTERM:
            continue  # the stop this process forwarded, reaching a worker before (or after) it could finish
        if p.exitcode and p.exitcode < 0:
            problems.append(f"{p.name} (pid {p.pid}) was killed by {signal.Signals(-p.exitcode).name}")
        elif p.exitcode not in (0, 130):
            problems.append(f"{p.name} (pid {p.pid}) exited with code {p.exitcode}")
    return problems


def _replace_worker(job: _Job, worker: int) -> _Job:
    return dataclasses.replace(job, worker=worker)
