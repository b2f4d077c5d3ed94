"""A database storage's heartbeats: the workers beat for their running trials in a background thread, and a
trial whose worker (on any machine) stopped beating is failed and queued again (Optuna's own check)."""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from fashionmlp.sweep.backend import TrialState, optuna


def beats_every(storage) -> int | None:
    """A storage's heartbeat interval in seconds: a database's (set by storage.open_storage); None for the journal,
    which has no heartbeats."""
    return storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None


def beat_once(study, trial) -> None:
    """One heartbeat for a trial just asked, before its worker claims it: a worker killed in between left a trial
    that had never beaten, which Optuna's stale check skips for ever."""
    storage = getattr(study, "_storage", None)
    if beats_every(storage):
        unless_unreachable(storage.record_heartbeat, trial._trial_id)


def unless_unreachable(beat, *args) -> None:
    """`beat(*args)` (a heartbeat), skipped when the database cannot be reached: the heartbeat thread beats the
    trial when it answers again (a blip between asking for a trial and its first beat was a traceback)."""
    from fashionmlp.sweep.outage import why_unreachable

    try:
        beat(*args)
    except Exception as exc:
        if why_unreachable(exc) is None:
            raise


class Beats:
    """The running trials a worker records heartbeats for (a database storage only; none for the journal):
    `add` beats a trial at once, as it starts (one joining a running population too), `drop` stops beating one
    whose run ended; `beat` records them all (every interval, from heartbeats' thread)."""

    def __init__(self, storage=None, study_name: str = ""):
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study_name) if storage is not None else None
        self.ids: dict[int, int] = {}  # trial number -> trial id
        self.lock = threading.Lock()

    def add(self, numbers: list[int]) -> None:
        if self.storage is None:
            return
        for number in numbers:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
            with self.lock:
                self.ids[number] = trial_id
            unless_unreachable(self.storage.record_heartbeat, trial_id)

    def drop(self, number: int) -> None:
        with self.lock:
            self.ids.pop(number, None)

    def beat(self) -> None:
        with self.lock:
            ids = list(self.ids.values())
        for trial_id in ids:
            self.storage.record_heartbeat(trial_id)


@contextmanager
def heartbeats(storage, study_name: str, numbers: list[int]) -> Iterator[Beats]:
    """While the trials `numbers` (and those `add`ed) train, record their heartbeats every interval in a
    background thread, as Study.optimize does for its one trial (a database storage fails a running trial whose
    heartbeats stopped: its worker, on whatever machine, died); nothing for the journal, which has none."""
    interval = beats_every(storage)
    if not interval:
        yield Beats()
        return
    import sqlalchemy.exc  # a database storage (only those beat): SQLAlchemy is there

    unreachable = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError)
    beats = Beats(storage, study_name)
    beats.add(numbers)
    done = threading.Event()

    def beat() -> None:
        failing = False
        while not done.wait(interval):
            try:
                beats.beat()
                failing = False
            except unreachable as exc:  # a database blip killed this thread, and the live trials were failed as
                if not failing:  # lost 180 s later and trained twice: beat again at the next interval
                    sys.stderr.write(f"warning: a heartbeat could not be recorded ({exc.__class__.__name__}); "
                                     "trying again every interval\n")
                failing = True

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    from fashionmlp.sweep.outage import on_back

    # when the database answers again, this worker's trials beat at once: after an outage longer than the grace
    # period every running trial is stale, and the first stale check (any machine's) failed the live ones too
    forget = on_back(lambda: unless_unreachable(beats.beat))
    try:
        yield beats
    finally:
        forget()
        done.set()
        thread.join()


def fail_stale_trials(study) -> list[int]:
    """Optuna's own check of a database's heartbeats (Study.optimize runs it before each trial): running trials
    whose worker stopped beating are failed, and their values queued again by the storage's retry callback;
    returns their numbers (none for the journal, which has no heartbeats: a trial failed meanwhile by its own live
    worker, interrupted or skipped, was announced as lost)."""
    if not beats_every(getattr(study, "_storage", None)):
        return []
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # marked experimental
        optuna.storages.fail_stale_trials(study)
    return sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running)
