"""A database that goes away for a while (a restart, a network blip) is waited for: every call of the study's
database storage is tried again until it answers, for up to OUTAGE_SECONDS, with one warning when it goes and one
line when it is back. Before, any outage that met a database call (a trial's report after an epoch, its tell, the
next ask) ended every worker with a traceback, their run folders "crashed" and their finished epochs trained
again from the first."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from fashionmlp.errors import StoppedWaiting, UserError
from fashionmlp.progress import StopRequest
from fashionmlp.sweep.backend import optuna

OUTAGE_SECONDS = 600  # how long a database outage is waited out before the worker stops (one line, resumable)
WAITS = (1, 2, 4, 8, 15)  # seconds between tries, the last repeated
NOT_WRAPPED = {"record_heartbeat"}  # the heartbeat thread says and retries its own failures (callers below too)
# what Optuna's cache calls on the storage besides its public methods (ask, suggest, get_trials, the best trial)
PRIVATE = ("_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param")
# calls that would do their work twice if a try whose answer was lost had landed: tried again only when the
# database refused the connection (nothing was sent); else a trial made twice, or claimed and left running
ONCE = {"create_new_trial", "_create_new_trial", "set_trial_state_values"}
GONE = ("connection refused", "could not connect", "connection failed", "server closed the connection",
        "terminating connection", "connection timed out", "timeout expired", "could not translate host",
        "connection reset", "the database system is starting up", "the database system is shutting down",
        "no connection to the server", "connection is closed", "lost connection", "can't connect",
        "server has gone away", "name or service not known")  # PostgreSQL's and MySQL's words for it
REFUSED = ("connection refused", "could not connect", "can't connect", "the database system is starting up",
           "the database system is shutting down", "could not translate host", "name or service not known")
_back_hooks: list[Callable[[], None]] = []  # told when the database answers again (heartbeats: beat at once)


def on_back(hook: Callable[[], None]) -> Callable[[], None]:
    """Call `hook` whenever a database call succeeds after an outage (before the call returns); returns a function
    that removes it."""
    _back_hooks.append(hook)
    return lambda: _back_hooks.remove(hook) if hook in _back_hooks else None


def why_unreachable(exc: BaseException) -> str | None:
    """The driver's words when `exc` (or an exception it was raised from) says the database could not be reached
    (a refused, lost or timed-out connection); None for any other error, an OperationalError such as a wrong
    password, a missing table or a locked SQLite file included, which is raised at once."""
    import sqlalchemy.exc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError):
            words = " ".join(str(seen.orig or seen).split())
            if seen.connection_invalidated or any(gone in words.lower() for gone in GONE):
                return words[:200] or seen.__class__.__name__
        seen = seen.__cause__
    return None


def patient(storage, label: str, stop: StopRequest | None = None, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic):
    """`storage` (Optuna's RDB storage) with its public methods and those its cache calls tried again while the
    database is unreachable; a stop request (Ctrl-C) or OUTAGE_SECONDS end the wait with a UserError, after
    which the command can be run again (the trials' finished epochs are in their folders)."""
    names = [n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_")] + list(PRIVATE)
    for name in names:
        method = getattr(storage, name, None)
        if callable(method) and name not in NOT_WRAPPED:
            setattr(storage, name, _waiting(method, name, label, stop, sleep, clock))
    return storage


def _waiting(method, name: str, label: str, stop: StopRequest | None, sleep: Callable[[float], None],
             clock: Callable[[], float]):
    def call(*args, **kwargs):
        tries, since = 0, None
        while True:
            try:
                answer = method(*args, **kwargs)
            except Exception as exc:
                why = why_unreachable(exc)
                if why is None or (name in ONCE and not any(r in why.lower() for r in REFUSED)):
                    raise
                since = clock() if since is None else since
                if tries == 0:
                    sys.stderr.write(f"warning: the database ({label}) cannot be reached ({why}); trying again for "
                                     f"up to {OUTAGE_SECONDS // 60} min (Ctrl-C stops)\n")
                waited = clock() - since
                if waited >= OUTAGE_SECONDS or (stop is not None and stop.requested):
                    timed_out = waited >= OUTAGE_SECONDS  # else a stop: exit code 130, as Ctrl-C anywhere else
                    stopped = f"for {waited:.0f} s" if timed_out else "stopped while waiting for it"
                    raise (UserError if timed_out else StoppedWaiting)(
                        f"--storage {label}: the database could not be reached ({why}), {stopped}; the trials' "
                        "finished epochs are kept: run the same command again when it is back") from None
                sleep(WAITS[min(tries, len(WAITS) - 1)])
                tries += 1
                continue
            if tries:
                sys.stderr.write(f"the database ({label}) answers again after {clock() - since:.0f} s; going on\n")
                for hook in list(_back_hooks):
                    try:
                        hook()
                    except Exception as exc:  # noqa: BLE001 - a hook's failure is the hook's (a beat missed)
                        sys.stderr.write(f"warning: after the outage: {exc.__class__.__name__}: {exc}\n")
            return answer

    return call
