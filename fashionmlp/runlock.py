"""One process at a time in a run folder: an advisory lock held while a process trains there.

The lock is `fcntl.flock` on `<run>/.lock`. The kernel drops it when the holder's file is closed, so a process
that dies, even by `kill -9`, leaves no stale lock behind. The file itself stays (deleting it would let two
processes lock two different files of the same name).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from fashionmlp.errors import UserError

LOCK_NAME = ".lock"
_said_unlocked = False  # whether this process has warned that a folder could not be locked (said once)


def lock_run_dir(run_dir: Path, what: str = "run folder") -> IO[str]:
    """Lock `run_dir` for this process and return the open lock file; closing it (or exiting) releases the lock.

    A folder another process holds is a UserError naming that process. Where `fcntl` does not exist (Windows)
    the file is returned unlocked.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, no protection
        fcntl = None
    try:
        handle = open(Path(run_dir) / LOCK_NAME, "a+", encoding="utf-8")  # the caller closes it
    except OSError as exc:  # a read-only folder: nothing could be written there anyway
        raise UserError(f"{what} {str(run_dir)!r} cannot be written ({exc.strerror or exc})") from None
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{what} {str(run_dir)!r} is in use by another process (pid {holder}); wait for it to "
                        "finish or stop it first") from None
    except OSError as exc:  # any other flock failure (ENOLCK: a file system without locks): on unlocked, said once
        global _said_unlocked
        if not _said_unlocked:  # a study's members and a sweep's trials would each say it
            _said_unlocked = True
            sys.stderr.write(f"warning: {what} {str(run_dir)!r}: cannot lock ({exc.strerror or exc}); two processes "
                             "in it at once are not kept apart (said once)\n")
        return handle
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")  # for the message above, in the process that finds the folder taken
    handle.flush()
    return handle
