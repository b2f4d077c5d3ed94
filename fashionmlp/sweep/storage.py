"""Where a study lives and who runs its trials: Optuna's journal file or a database (RDB storage with
heartbeats), the study's identity (the sweep config it was made from), and trials whose worker died."""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from fashionmlp import status as st
from fashionmlp.config import show
from fashionmlp.errors import UserError
from fashionmlp.progress import StopRequest
from fashionmlp.runlock import LOCK_NAME, lock_run_dir
from fashionmlp.sweep.backend import TrialState, optuna
from fashionmlp.sweep.heartbeats import beats_every
from fashionmlp.sweep.outage import patient
from fashionmlp.sweep.owners import _gone
from fashionmlp.sweep.spec import SweepSpec
from fashionmlp.tracking import without_passwords, write_json

JOURNAL = "optuna.journal"
OWNER = "worker"  # trial user attribute: the process that runs it {host, pid, started, trial}
HEARTBEAT_SECONDS = 60  # database storages: a worker's running trial is failed after
GRACE_SECONDS = 180  # ... this long without its heartbeat (another machine, killed)
CONFIG_WAIT_SECONDS = 5  # how long a command waits for the sweep config of a study another one just created
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
           "MySQLdb": "mysqlclient"}  # the module SQLAlchemy imports -> the package to install


def _storage_label(url: str | None) -> str:
    """What outputs say about the storage: the journal, or the URL without its password."""
    if url is None:
        return "journal"
    try:
        from sqlalchemy.engine import make_url

        return without_passwords(make_url(url).render_as_string(hide_password=True))  # it leaves ?password=...
    except Exception:  # not parseable: it will be refused when opened; show no part of it
        return "<database URL>"


JOURNAL_LOCK_GRACE = 30  # seconds: Optuna's own grace period before it breaks a lock nobody releases


def _drop_dangling_lock(journal: Path) -> None:
    """Optuna's journal lock is a symbolic link to the journal, which it breaks when the journal has not changed
    for its grace period; a link that points nowhere (made with a relative path by fashionmlp before
    2026-11-30, its holder killed) it cannot age, and would wait for without end: removed once as old."""
    lock = journal.with_name(journal.name + ".lock")
    try:
        if lock.is_symlink() and not lock.exists() and time.time() - lock.lstat().st_mtime > JOURNAL_LOCK_GRACE:
            lock.unlink()
    except OSError:
        pass  # another process took or removed it first


def _drop_a_torn_record(journal: Path) -> None:
    """A journal whose last record a crash or a full disk cut short: Optuna reads past it, and the next record
    appended to that line made the journal unreadable (a JSONDecodeError traceback for every later command).
    Every append holds the journal's lock, so under it a last line without its newline was never finished."""
    if not journal.is_file():
        return
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(journal), grace_period=JOURNAL_LOCK_GRACE)
    lock.acquire()
    try:
        with open(journal, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return
            whole = data.rfind(b"\n") + 1
            f.truncate(whole)
        print(f"warning: {journal}: its last record was cut short (a crash, or a full disk, while it was written): "
              f"dropped ({len(data) - whole} bytes)", file=sys.stderr, flush=True)
    finally:
        lock.release()


def open_storage(url: str | None, journal: Path | None = None, stop: StopRequest | None = None):
    """Optuna's journal file storage at `journal` (url None), else its RDB storage with heartbeats, which waits out
    a database outage (outage.patient; `stop` ends the wait)."""
    if url is None:
        journal_storage = optuna.storages.journal
        journal = Path(journal).absolute()  # Optuna's lock is a link to this path: relative, it would dangle
        if not journal.exists() and any(journal.parent.glob("trial-*")):
            raise UserError(f"{journal}: missing, while its sweep folder has trial folders: the study's record (the "
                            "trials' values and results) is gone; put the file back, or move the sweep folder away "
                            "to begin the study again")
        _drop_dangling_lock(journal)
        _drop_a_torn_record(journal)
        return journal_storage.JournalStorage(journal_storage.JournalFileBackend(str(journal)))
    if "://" not in url:
        raise UserError(f"--storage {url!r} is not a database URL; e.g. postgresql://user:password@host/db, "
                        "mysql+pymysql://user:password@host/db or sqlite:///sweep.db (without --storage the study "
                        "is a journal file in the sweep folder)")
    if url.split("://", 1)[0].split("+", 1)[0] == "postgres":
        raise UserError(f"--storage {_storage_label(url)}: SQLAlchemy names PostgreSQL postgresql://, not postgres:// "
                        "(e.g. postgresql://user:password@host/db)")
    try:
        import sqlalchemy.exc

        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # heartbeats and their retry callback are marked experimental
                    return patient(optuna.storages.RDBStorage(
                        url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_SECONDS,
                        grace_period=GRACE_SECONDS,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback()),
                        _storage_label(url), stop)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers starting together on an empty database race to create Optuna's tables, and
                # PostgreSQL's CREATE TABLE IF NOT EXISTS is not atomic: the loser finds them made on a retry.
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or str(exc)
        package = DRIVERS.get(missing, missing)
        raise UserError(f"--storage {_storage_label(url)}: its database driver is not installed (no module "
                        f"{missing!r}): pip install {package!r}") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if url.startswith("sqlite") and "unable to open database file" in first:
            first += (" (sqlite:///sweep.db is a path from the working directory, sqlite:////tmp/sweep.db an "
                      "absolute one; its folder must exist)")
        elif isinstance(exc, ValueError) and url.partition("://")[2].count("@") > 1:  # "invalid literal for int()"
            first += ("; a password (or user name) with @, : or / in it is written percent-encoded: @ as %40, : as "
                      "%3A, / as %2F")
        raise UserError(f"--storage {_storage_label(url)}: cannot use the database: {first}") from None


def _create_or_load(storage, name: str, spec: SweepSpec, label: str):
    """The study `name` (created when new); a study made from a different sweep config is a UserError."""
    mine = spec.definition()
    study, theirs = _created_or_loaded(storage, name, spec.direction)
    if theirs is None:
        study.set_user_attr("fashionmlp_sweep", mine)
    elif theirs != mine and theirs != _as_before_pinning(mine, theirs, spec):
        ours = {**_flat(mine["config"]), **_flat(mine["sweep"], "sweep.")}
        old = {**_flat(theirs.get("config", {})), **_flat(theirs.get("sweep", {}), "sweep.")}
        searched = {p.key for p in spec.params}  # each trial sets its own: the config's value is not used
        diff = [k for k in sorted(set(ours) | set(old)) if ours.get(k) != old.get(k) and k not in searched]
        if diff == ["distill.fingerprint"]:
            raise UserError(f"--study {name!r} in {label}: the teacher's weights changed since the study started "
                            f"(distill.teacher {spec.base.distill.teacher!r} holds {ours[diff[0]][:12]}..., the study "
                            f"was taught by {str(old.get(diff[0]))[:12]}...); give it its teacher back, or start a new "
                            "study with --study NEW_NAME")
        if diff:
            said = [_one_difference(k, ours, old) for k in diff]
            raise UserError(f"--study {name!r} in {label} was started from a different sweep config: "
                            f"{'; '.join(said[:3])}; continue it with the same config, or start a new study with "
                            "--study NEW_NAME")
    if spec.sampler == "grid":
        _queue_the_grid(study, spec)
    return study


def _created_or_loaded(storage, name: str, direction: str):
    """The study and the sweep config stored on it (None when this process created it). The storage creates a
    study once (the second of two commands started together gets DuplicatedStudyError), so only its creator
    stores its config: the other waits for it (the creator stores it right away) and compares. A study with no
    config after that wait (its creator was killed in between; a study made by Optuna alone) takes ours."""
    sampler = optuna.samplers.RandomSampler()
    try:
        return optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler), None
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    deadline = time.monotonic() + CONFIG_WAIT_SECONDS
    while (theirs := study.user_attrs.get("fashionmlp_sweep")) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return study, theirs


def _queue_the_grid(study, spec: SweepSpec) -> None:
    """Queue every grid point that no trial holds (waiting, running or finished; a failed trial's point is
    queued again by its retry), so that the storage hands each to one worker: the whole grid for a new study,
    and what a process killed while it queued left out (those points were never trained, the study's config
    being stored already). Two processes queueing at once may queue a point twice: the later copy is failed when
    it is asked (trials.duplicate_of)."""
    held = {json.dumps(t.system_attrs.get("fixed_params") or t.params, sort_keys=True)
            for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    for point in spec.grid_points():
        if json.dumps(point, sort_keys=True) not in held:
            study.enqueue_trial(point)


def _one_difference(key: str, ours: dict, theirs: dict) -> str:
    if key not in theirs:
        return f"{key} {show(ours[key])} (not in the study's)"
    if key not in ours:
        return f"{key} absent (the study has {show(theirs[key])})"
    return f"{key} {show(ours[key])} (the study has {show(theirs[key])})"


def _as_before_pinning(mine: dict, theirs: dict, spec: SweepSpec) -> dict | None:
    """`mine` as a study made before sweeps pinned their teacher's weights stored it (the teacher's path as given;
    no fingerprint unless the config had one), so that such a study continues; None without a teacher."""
    if spec.base.distill.teacher is None:
        return None
    stored = ((theirs.get("config") or {}).get("distill") or {}).get("fingerprint")
    distill = {**mine["config"]["distill"], "teacher": spec.base.distill.teacher}
    if stored is None:
        distill["fingerprint"] = None
    return {**mine, "config": {**mine["config"], "distill": distill}}


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 5}} -> {"train.epochs": 5}; the search space's keys as sweep.space['optimizer.lr']
    (the whole space shown cut at 60 characters on both sides hid what differed)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and prefix + key == "sweep.space":  # its keys hold dots: one level, by name
            flat.update({f"sweep.space[{name!r}]": values for name, values in value.items()})
        elif isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def fail_dead_trials(study, sweep_dir: Path) -> list[int]:
    """Mark FAIL the running trials whose worker process on this machine is gone (e.g. `kill -9`), and those no
    worker claimed for longer than the grace period (any machine's), and queue their parameters again with
    Optuna's retry callback; returns their numbers.

    Database storages do the same for every machine through heartbeats; the journal file has none, so the
    worker's pid (and start time) recorded on the trial stand in for it on this machine.
    """
    failed, journal = [], not beats_every(getattr(study, "_storage", None))
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        # asked, never claimed (a retry inherits the dead worker's record until its new worker writes its own):
        # its worker died within its first moments. A database's heartbeat check finds those (beat_once)
        if not owner or owner.get("trial") != t.number:
            if not (journal and _unclaimed_for_long(t)):
                continue
        elif not _gone(owner, journal, t.user_attrs.get("run_dir"), sweep_dir):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process failed or finished it first
        _retry(study, t.number)
        failed.append(t.number)
    mark_killed_runs(study, sweep_dir)
    return failed


def _unclaimed_for_long(trial) -> bool:
    """A journal's running trial no worker has claimed (its worker attribute is written right after it is asked)
    for longer than a database's grace period: killed between the two, it stayed "running elsewhere" for ever (no
    worker whose death could be seen). The journal's times are this machine's clock."""
    started = trial.datetime_start
    return started is not None and (datetime.datetime.now() - started).total_seconds() > GRACE_SECONDS


def _remove_if_empty(run_dir: Path) -> None:
    """A trial's run folder that holds nothing but its lock (and an empty checkpoints/), unless a process holds it
    (looked at again once locked)."""
    def empty() -> bool:
        return run_dir.is_dir() and not {e.name for e in run_dir.iterdir()} - {LOCK_NAME, "checkpoints"} and not (
            (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()))

    try:
        if empty():
            with lock_run_dir(run_dir):
                if empty():
                    shutil.rmtree(run_dir)
    except (UserError, OSError):
        return


def mark_killed_runs(study, sweep_dir: Path) -> None:
    """Failed trials whose run folder is in `sweep_dir` (this machine's folder of the study) and still says
    "running" (their worker was killed, here or, through a database's heartbeat, anywhere): the folder says
    "killed" instead, since the values were queued again as a new trial. The storage's run_dir is data: a copied
    sweep folder, or a journal from someone else, never has a file outside `sweep_dir` rewritten."""
    inside = Path(sweep_dir).resolve()
    last: dict[str, Any] = {}  # run folder -> the last trial that trained there (a retry may continue a run)
    for t in study.get_trials(deepcopy=False):
        owner, run_dir = t.user_attrs.get(OWNER) or {}, t.user_attrs.get("run_dir")
        if owner.get("trial") == t.number and isinstance(run_dir, str):  # its own, not what a retry inherits
            last[run_dir] = t
    for run_dir, t in last.items():
        owner = t.user_attrs[OWNER]
        if t.state != TrialState.FAIL or owner.get("host") != socket.gethostname():
            continue  # (its folder's lock tells a live process, in whatever container of this host)
        path = Path(run_dir) / "summary.json"
        if not path.resolve().is_relative_to(inside):
            continue
        if not path.is_file():  # killed before its run wrote a file: a folder of a .lock alone, for ever
            _remove_if_empty(path.parent)
            continue
        try:
            if json.loads(path.read_text()).get("status") != st.RUNNING:
                continue  # the common case, read without the lock a retry's resume would find taken
        except (OSError, ValueError, AttributeError):
            continue
        try:  # not while a process trains there (a retry of the trial, continuing its run), nor after one did
            with lock_run_dir(path.parent):
                summary = json.loads(path.read_text())
                if summary.get("status") != st.RUNNING:
                    continue
                write_json(path, {**summary, "status": st.KILLED,
                                  "killed": f"its worker (pid {owner.get('pid')}) died; trial {t.number} was marked "
                                            "failed and its values queued to run again as a new trial"})
        except (UserError, OSError, ValueError):
            continue


def _retry(study, number: int) -> None:
    """Queue the values of failed trial `number` to run again, with Optuna's own retry callback."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # marked experimental
        # a copy: the callback appends to the trial's retry history in place
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.get_trials(deepcopy=True)[number])
