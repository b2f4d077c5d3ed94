"""A sweep from start to finish: find or make its folder and study, run workers until the study has its trials,
then write the report.

    runs/sweep-<study>-<YYYYmmdd-HHMMSS>/
      sweep.yaml, sweep.json    the resolved sweep config; which study and storage this folder belongs to
      optuna.journal            the study itself (the embedded default; with --storage it is in that database)
      trial-0000/ ...           one run folder per trial run on this machine
      trials.csv, summary.md, best.yaml, *.png
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fashionmlp.device import check_memory, largest_population
from fashionmlp.errors import ConfigError, StoppedBeforeStart, UserError
from fashionmlp.progress import StopRequest
from fashionmlp.session import prepare
from fashionmlp.sweep.backend import TrialState, finished_states, optuna, require_optuna
from fashionmlp.sweep.heartbeats import fail_stale_trials
from fashionmlp.sweep.report import _best, finished_text, missing_points, trial_rows, write_report
from fashionmlp.sweep.space import end_mixes
from fashionmlp.sweep.spec import DEFAULT_VAL_SIZE, SweepSpec
from fashionmlp.sweep.storage import (
    JOURNAL,
    _create_or_load,
    _storage_label,
    fail_dead_trials,
    open_storage,
)
from fashionmlp.sweep.workers import _Job, _replace_worker, _run_workers, _work, find_lost
from fashionmlp.teacher import teacher_path_absolute
from fashionmlp.tracking import check_folder_writable, create_run_dir, write_config, write_json

# at most 88 characters: each trial's run is named <study>-trial-NNNNN, and a run name at most 100 (a name of 90
# was taken, its folder made, and every trial then refused, blamed on the search space)
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,87}")
STUDY_NAME_RULE = ("use letters, digits, '_', '.', '-', beginning with a letter or digit (at most 88 characters: "
                   "each trial's run is <study>-trial-NNNN)")


@dataclass
class SweepResult:
    sweep_dir: Path
    study: str
    storage: str  # "journal" or the URL without password
    target: int
    rows: list[dict]  # one per trial, in trial-number order
    best: dict | None  # number, value, params, run_dir, test_accuracy (None when its folder is not here), gone
    finished: int = 0
    running: int = 0
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)  # workers that died
    missing: list[dict] = field(default_factory=list)  # grid points no finished or running trial covers
    notes: list[str] = field(default_factory=list)  # about the teacher, for the terminal and summary.md
    training: list[dict] = field(default_factory=list)  # grid points running trials (of others) hold


def default_study_name(spec: SweepSpec, config_path: str | Path | None = None) -> str:
    """The study's name without --study: the config's name, else its file's stem; one a study name cannot be
    (a space, say) is refused naming where it came from."""
    name, source = ((spec.base.name, "the config's name") if spec.base.name else
                    (Path(config_path).stem, "the config file's name") if config_path else
                    (f"sweep_{spec.base.model.name}", "the default"))
    if not STUDY_NAME.fullmatch(name):
        raise UserError(f"the study's name {name!r} ({source}; --study names it otherwise) is not allowed; "
                        f"{STUDY_NAME_RULE}: give --study NAME")
    return name


def _find_sweep_dir(runs_dir: Path, study: str, label: str) -> Path | None:
    """The newest sweep folder under runs_dir made for this study and storage."""
    pattern = re.compile(rf"sweep-{re.escape(study)}-\d{{8}}-\d{{6}}(-\d+)?")
    if not runs_dir.is_dir():
        return None
    for path in sorted((p for p in runs_dir.iterdir() if pattern.fullmatch(p.name)), reverse=True):
        try:
            meta = json.loads((path / "sweep.json").read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict):  # it started a new folder (and study, on a journal) without a word
            if (path / JOURNAL).exists() or any(path.glob("trial-*")):  # (else cut short as it was made)
                raise UserError(f"{path}: its sweep.json, which says the study and storage the folder is for, is "
                                "missing or cannot be read; repair it, or move the folder out of the runs folder")
            continue
        if meta.get("study") == study and _without_password(meta.get("storage")) == _without_password(label):
            return path
    return None


def _without_password(label: str | None) -> str | None:
    """A storage label without even the *** of a password, nor the driver: the same database given with its
    password in the URL and then through PGPASSWORD (as docs/sweep.md suggests), or as postgresql:// and then
    postgresql+psycopg://, made a second sweep folder for one study (a killed trial's folder said 'running')."""
    if label is None:
        return None
    scheme, sep, rest = label.replace(":***@", "@", 1).partition("://")
    return scheme.partition("+")[0] + sep + rest


def _new_sweep_dir(runs_dir: Path, study: str, label: str, spec: SweepSpec) -> Path:
    path = create_run_dir(runs_dir, f"sweep-{study}")
    write_json(path / "sweep.json", {"study": study, "storage": label})
    write_config(path / "sweep.yaml", {**teacher_path_absolute(spec.base).to_dict(), "sweep": spec.section()})
    return path


def run_sweep(spec: SweepSpec, *, study: str, jobs: int = 1, storage: str | None = None,
              runs_dir: Path = Path("runs"), data_dir: str | Path | None = None, population: int | None = None,
              echo: Callable[[str], None] = print, stop: StopRequest | None = None,
              command: str | None = None) -> SweepResult:
    """Run (or continue) the study until it has `spec.target` finished trials, with `jobs` worker processes
    on this machine, each asking for `population` trials at a time (None: as many as choose_population picks)
    and training those of one shape together; then write the report. Every user mistake is raised before a
    folder is made; `command` is recorded in each trial's summary.json."""
    require_optuna()
    stop = stop or StopRequest()
    cores = len(os.sched_getaffinity(0))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= cores:
        raise UserError(f"--jobs: {jobs!r} is out of range; allowed: 1 to {cores} (the CPU cores this process may "
                        "use: each worker needs one)")
    if not STUDY_NAME.fullmatch(study):
        raise UserError(f"--study: {study!r} is not allowed; {STUDY_NAME_RULE}")
    session = prepare(spec.base, data_dir=data_dir, runs_dir=runs_dir)  # the data's own mistakes, before any folder
    spec, notes = _pinned_teacher(spec, session)
    fits = _check_memory(spec, session)
    said: list[str] = []  # what choose_population says, echoed once the study is open (after every refusal)
    population = choose_population(population, spec, session.device.type, fits, said.append)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line per trial of our own replaces Optuna's log
    try:
        return _run(spec, study, jobs, storage, runs_dir, data_dir, session.data, echo, stop, command, population,
                    said, notes)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _pinned_teacher(spec: SweepSpec, session) -> tuple[SweepSpec, list[str]]:
    """The spec with its teacher's weights pinned (distill.fingerprint: a study continued with another teacher is
    refused, and best.yaml trains only with this one), and what the trials' summaries note about the teacher
    (validation images it may have seen: the sweep is scored on them)."""
    if session.teacher is None:
        return spec, []
    from fashionmlp.config import with_values
    from fashionmlp.teacher import teacher_notes

    base = with_values(spec.base, {"distill.fingerprint": session.cfg.distill.fingerprint})  # prepare pinned it
    return dataclasses.replace(spec, base=base), teacher_notes(session.cfg, session.teacher)


def _space_lines(spec: SweepSpec) -> list[str]:
    """What the command says of a space with fewer points than the trials it asks for."""
    if spec.grid_size is not None and spec.grid_size < spec.trials:
        return [f"the grid has {spec.grid_size} points: {spec.grid_size} trials, not {spec.trials}"]
    points = math.prod(len(p.choices) for p in spec.params) if all(p.kind == "choice" for p in spec.params) else 0
    if spec.grid_size is None and 0 < points < spec.trials:  # 12 random trials of 3 points: each 3-5 times, alike
        return [f"note: the space has {points} points and the sweep asks for {spec.trials} trials: the "
                f"{spec.sampler} sampler trains points more than once (alike, with one seed); sampler: grid trains "
                "each once"]
    return []


def _run(spec: SweepSpec, study: str, jobs: int, storage: str | None, runs_dir: Path, data_dir, data,
         echo: Callable[[str], None], stop: StopRequest, command: str | None, population: int,
         said: list[str], notes: list[str]) -> SweepResult:
    label, sweep_dir, store = _open_study(spec, study, storage, runs_dir, echo, stop)  # the storage's refusals first
    for line in said:
        echo(line)
    books = optuna.load_study(study_name=study, storage=store, sampler=optuna.samplers.RandomSampler())
    # a database's trials whose worker (on any machine) stopped beating, and this machine's dead workers' trials:
    # else a study whose last trials were lost elsewhere stayed "running elsewhere" for ever, training nothing
    revived = fail_stale_trials(books) + fail_dead_trials(books, sweep_dir)
    if revived:
        echo(f"trial(s) {', '.join(map(str, revived))} had lost their worker (killed?): marked failed, queued again")
    finished = len(books.get_trials(deepcopy=False, states=finished_states()))
    running = len(books.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    remaining = spec.target - finished - running
    workers = max(0, min(jobs, remaining))
    cores = len(os.sched_getaffinity(0))  # (jobs <= cores: checked)
    threads = max(1, cores // workers) if workers > 1 else spec.base.train.threads
    echo(f"study {study!r} ({label}): {finished_text(finished, spec.target, at_start=True)}"
         + (f", {running} running elsewhere" if running else "") + f"; folder {sweep_dir}")
    for line in _space_lines(spec):
        echo(line)
    echo(_validation_line(spec))
    for note in notes:  # after the validation line: what the teacher may have seen of those images
        echo(f"note: {note}")
    interrupted, problems = False, []
    if workers >= 1:
        echo(f"running {remaining} more trial(s) with {workers} worker(s)"
             + (f", {threads} CPU thread(s) each" if workers > 1 else ""))
        if workers > 1 and spec.base.train.threads not in (0, threads):  # it was replaced without a word
            echo(f"note: train.threads {spec.base.train.threads} is not used: the {workers} workers share the "
                 f"{cores} cores")
        job = _Job(spec, study, storage, sweep_dir, None if data_dir is None else str(data_dir), 0,
                   threads if workers > 1 else 0, command, population, workers)
        if workers == 1:
            interrupted = _work(job, data, echo, stop)
        else:
            del data  # each worker loads its own copy
            problems = _run_workers([_replace_worker(job, k) for k in range(workers)], stop, echo)
            interrupted = stop.requested
        find_lost(books, echo, sweep_dir)
    rows = trial_rows(books, spec)
    best = _best(books, spec)
    finished = len(books.get_trials(deepcopy=False, states=finished_states()))
    running = len(books.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    missing, training = missing_points(books, spec)  # training: held by a worker of another command or machine
    if missing:
        echo(f"the grid is not complete: {len(missing)} point(s) not finished: "
             + "; ".join(", ".join(f"{k} {json.dumps(v)}" for k, v in point.items()) for point in missing[:5])
             + ("; ..." if len(missing) > 5 else "") + " (run the same command again to train them)")
    if training:
        echo(f"the grid is not complete yet: {len(training)} point(s) still training elsewhere (another command or "
             "machine on this study)")
    result = SweepResult(sweep_dir, study, label, spec.target, rows, best, finished, running, interrupted, problems,
                         missing, notes, training)
    write_report(result, spec, books)
    return result


def _open_study(spec: SweepSpec, study: str, storage: str | None, runs_dir: Path,
                echo: Callable[[str], None] = print, stop: StopRequest | None = None):
    """(the storage's label, the sweep folder, the storage) of the study, created or continued."""
    label = _storage_label(storage)
    if storage is not None:
        store = open_storage(storage, stop=stop)
        _create_or_load(store, study, spec, label)  # its refusals before anything is made on this machine
        with _one_process_at_a_time(runs_dir, echo, stop, "nothing was trained (the study is in the database)"):
            sweep_dir = _sweep_folder(runs_dir, study, label, spec)
        return label, sweep_dir, store
    with _one_process_at_a_time(runs_dir, echo, stop):
        sweep_dir = _sweep_folder(runs_dir, study, label, spec)
        store = open_storage(None, sweep_dir / JOURNAL)
        _create_or_load(store, study, spec, f"{sweep_dir / JOURNAL}")
    return label, sweep_dir, store


def _sweep_folder(runs_dir: Path, study: str, label: str, spec: SweepSpec) -> Path:
    """The study's sweep folder, found (and writable: a read-only one was a traceback from Optuna's journal lock)
    or made."""
    found = _find_sweep_dir(runs_dir, study, label)
    if found is None:
        return _new_sweep_dir(runs_dir, study, label, spec)
    check_folder_writable(found, f"study {study!r}: its sweep folder", "its trials and their run folders are "
                          "written there; copy the runs folder somewhere writable and give that as --runs-dir")
    return found


@contextmanager
def _one_process_at_a_time(runs_dir: Path, echo: Callable[[str], None] = print, stop: StopRequest | None = None,
                           left: str = "nothing was written") -> Iterator[None]:
    """Finding or making a study's sweep folder, one process at a time (an flock on runs_dir/.sweep.lock, a file
    opened for writing as NFS's emulated flock needs; the kernel drops it when the process ends): two commands
    started together each made a folder, and on the journal each its own study, training every point twice.
    A command that waits says so, and a Ctrl-C (`stop`) ends its wait (it waited silently, the Ctrl-C noted)."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no advisory locks, as for run folders (runlock)
        yield
        return
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / ".sweep.lock", "a+", encoding="utf-8") as lock:
        try:
            _wait_for_lock(fcntl, lock.fileno(), runs_dir, echo, stop or StopRequest(), left)
        except OSError as exc:  # a file system without locks: on unlocked, said
            sys.stderr.write(f"warning: {runs_dir}: cannot lock ({exc.strerror or exc}); two sweep commands "
                             "started at this moment may make two folders of one study\n")
        yield


def _wait_for_lock(fcntl, fd: int, runs_dir: Path, echo: Callable[[str], None], stop: StopRequest,
                   left: str) -> None:
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if stop.requested:
                raise StoppedBeforeStart("the sweep", left) from None
            if not said:
                echo(f"waiting for another sweep command to open its study in {runs_dir} (Ctrl-C to give up)")
                said = True
            time.sleep(0.1)


def _validation_line(spec: SweepSpec) -> str:
    if spec.val_size_added:
        return (f"validation: the config has no validation split, so data.val_size = {DEFAULT_VAL_SIZE} training "
                f"images are held out (drawn by seed {spec.base.seed}, the same for every trial); trials are scored "
                f"on {spec.metric}")
    return (f"validation: {spec.base.data.val_size} training images held out (seed {spec.base.seed}, the same for "
            f"every trial); trials are scored on {spec.metric}")


DEFAULT_POPULATION = 8  # trials a worker asks for at once, when they fit and batching pays


def choose_population(population: int | None, spec: SweepSpec, device_type: str, fits: int,
                      echo: Callable[[str], None]) -> int:
    """How many trials each worker asks for at once: --population K (1 to what fits in memory), or by default
    DEFAULT_POPULATION where batching pays (not the CNN on a CPU), fewer when memory holds fewer or the sweep
    has fewer trials; said, with the reason."""
    if population is not None:
        if isinstance(population, bool) or not isinstance(population, int) or not 1 <= population <= max(fits, 1):
            raise UserError(f"--population: {population!r} is out of range; allowed: 1 to {max(fits, 1)} (the "
                            "widest trials of the space that fit in memory at once)")
        return population
    if spec.base.model.name == "cnn" and device_type == "cpu":
        echo("population: 1 trial at a time per worker (the CNN trains no faster batched on a CPU; --population K "
             "trains K at once)")
        return 1
    chosen = max(1, min(DEFAULT_POPULATION, fits, spec.target))
    at_once = "1 trial at a time" if chosen == 1 else f"up to {chosen} trials of one shape at once"
    why = (f"memory holds {fits}" if chosen >= fits and fits < DEFAULT_POPULATION else
           f"the sweep has {spec.target} trials" if chosen == spec.target < DEFAULT_POPULATION else "the default")
    echo(f"population: {at_once} per worker ({why}; --population K sets it, 1 trains one at a time)")
    return chosen


def _check_memory(spec: SweepSpec, session) -> int:
    """Every mix of the space's ends (choices, range bounds; up to 256 mixes) must fit in memory, before any
    folder is made: the widest layers with the largest batch are among them. Returns how many of the largest
    fit at once (a population's limit)."""
    data = session.data
    n_train = len(data.train.labels)
    n_images = n_train + len(data.test.labels) + (0 if data.val is None else len(data.val.labels))
    base_raw, fits = spec.base.to_dict(), None
    for _, cfg in end_mixes(spec.params, base_raw, 256):
        if isinstance(cfg, ConfigError):
            continue  # a rejected mix never trains
        try:
            check_memory(cfg, session.device, n_images, n_train)
        except UserError as exc:
            raise UserError(f"sweep.space: {exc}") from None
        most = largest_population(cfg, session.device, n_images, n_train)
        fits = most if fits is None else min(fits, most)
    return 1 if fits is None else max(fits, 1)
