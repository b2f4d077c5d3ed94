"""Who runs a study's trial: the record a worker writes on the trials it claims (host, boot id, pid namespace,
pid and its start time), and whether that worker is known to be dead (sweep.storage.fail_dead_trials)."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any

from fashionmlp.errors import UserError
from fashionmlp.runlock import lock_run_dir


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc, clock ticks since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _place() -> dict[str, str | None]:
    """Where this process's pid means something: the host name, the kernel's boot id and the pid namespace. Two
    containers on one host (host network: one host name) see each other's pids as absent; machines cloned with
    one host name boot with different ids."""
    return {"host": socket.gethostname(), **_kernel()}


@functools.cache
def _kernel() -> dict[str, str | None]:
    try:
        return {"boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                "pidns": str(os.stat("/proc/self/ns/pid").st_ino)}
    except OSError:  # not Linux
        return {"boot": None, "pidns": None}


def _here(owner: dict[str, Any]) -> bool:
    """Whether the worker that wrote `owner` ran where this process can see its pid (a record without boot id
    and pid namespace, as older versions wrote it, by its host name alone)."""
    place = _place()
    return all(owner.get(key) == value for key, value in place.items() if key == "host" or key in owner)


def _owner(number: int) -> dict[str, Any]:
    return {**_place(), "pid": os.getpid(), "started": _process_start(os.getpid()), "trial": number}


def _alive(owner: dict[str, Any]) -> bool:
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    started = _process_start(int(owner["pid"]))
    return not (owner.get("started") and started and started != owner["started"])


def _gone(owner: dict[str, Any], journal: bool, run_dir: Any, sweep_dir: Path) -> bool:
    """Whether the worker that claimed a trial is known to be dead: its pid where this process sees it; on a
    journal (no heartbeats to say it) on this host also after a reboot (another boot id), and in another pid
    namespace of this kernel (a container, perhaps restarted) when its run folder's lock is free."""
    if _here(owner):
        return not _alive(owner)
    if not journal or owner.get("host") != socket.gethostname() or owner.get("boot") is None:
        return False  # another machine, or a database's heartbeats decide
    if owner["boot"] != _kernel()["boot"]:
        return True
    if not isinstance(run_dir, str) or not Path(run_dir).resolve().is_relative_to(Path(sweep_dir).resolve()):
        return False
    try:
        with lock_run_dir(Path(run_dir)):
            return True  # nobody trains there
    except (UserError, OSError):
        return False  # held, or no such folder yet
