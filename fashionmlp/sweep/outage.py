"""A database that goes away for a while (a restart, a network blip) is waited for: every call of the study's
database storage is retried until it answers again, up to OUTAGE_SECONDS, with one warning when it goes and one
line when it is back. Before, any outage that met a database call (a trial's report after an epoch, its tell, the
next ask) ended every worker with a traceback, their run folders "crashed" and their finished epochs trained
again from the first."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from fashionmlp.errors import UserError
from fashionmlp.progress import StopRequest
from fashionmlp.sweep.backend import optuna

OUTAGE_SECONDS = 600  # how long a database outage is waited out before the worker stops (one line, resumable)
WAITS = (1, 2, 4, 8, 15)  # seconds between tries, the last repeated
NOT_WRAPPED = {"record_heartbeat"}  # the heartbeat thread says and retries its own failures


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached (a lost or refused connection), not that a call was
    wrong: SQLAlchemy's OperationalError or InterfaceError, or a DBAPI error that invalidated its connection,
    itself or as the cause of Optuna's StorageInternalError."""
    import sqlalchemy.exc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
                isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def patient(storage, label: str, stop: StopRequest | None = None, sleep: Callable[[float], None] = time.sleep):
    """`storage` (Optuna's RDB storage) with each public method (and the stale-trial query Optuna's heartbeat check
    uses) retried while the database is unreachable; a stop request (Ctrl-C) or OUTAGE_SECONDS end the wait with
    a UserError, after which the command can be run again (the trials' finished epochs are in their folders)."""
    names = [n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_")] + ["_get_stale_trial_ids"]
    for name in names:
        method = getattr(storage, name, None)
        if callable(method) and name not in NOT_WRAPPED:
            setattr(storage, name, _waiting(method, name, label, stop, sleep))
    return storage


def _waiting(method, name: str, label: str, stop: StopRequest | None, sleep: Callable[[float], None]):
    def call(*args, **kwargs):
        tries, waited = 0, 0.0
        while True:
            try:
                answer = method(*args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if tries and name == "set_trial_state_values":  # the try the connection dropped after had landed
                    return True
                raise
            except Exception as exc:
                if not unreachable(exc):
                    raise
                why = str(getattr(exc, "orig", None) or exc.__cause__ or exc).strip().splitlines()[0][:200]
                if tries == 0:
                    sys.stderr.write(f"warning: the database ({label}) cannot be reached ({why}); trying again for "
                                     f"up to {OUTAGE_SECONDS // 60} min (Ctrl-C stops)\n")
                if waited >= OUTAGE_SECONDS or (stop is not None and stop.requested):
                    raise UserError(f"--storage {label}: the database could not be reached for {waited:.0f} s "
                                    f"({why}); the trials' finished epochs are kept: run the same command again "
                                    "when it is back") from None
                wait = WAITS[min(tries, len(WAITS) - 1)]
                sleep(wait)
                tries, waited = tries + 1, waited + wait
                continue
            if tries:
                sys.stderr.write(f"the database ({label}) answers again after {waited:.0f} s; going on\n")
            return answer

    return call
