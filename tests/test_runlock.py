"""One process at a time in a run folder: a second `--resume` of a folder in use gets one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fashionmlp.errors import UserError
from fashionmlp.runlock import lock_run_dir

ROOT = Path(__file__).resolve().parents[1]


def _fashionmlp(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "fashionmlp", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_file_system_without_locks_goes_on_unlocked_and_says_so(tmp_path, monkeypatch, capsys):
    """ENOLCK (some network file systems) was a traceback from train and inspect."""
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    import fashionmlp.runlock

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr(fashionmlp.runlock, "_said_unlocked", False)
    for _ in range(2):  # a study's members would each say it: once is enough
        lock_run_dir(tmp_path, "inspect folder").close()
    assert capsys.readouterr().err == (f"warning: inspect folder {str(tmp_path)!r}: cannot lock (No locks available); "
                                       "two processes in it at once are not kept apart (said once)\n")


def test_a_second_lock_on_the_same_folder_is_refused_until_the_first_is_closed(tmp_path):
    first = lock_run_dir(tmp_path)
    with pytest.raises(UserError, match=rf"run folder '{tmp_path}' is in use by another process \(pid {os.getpid()}\)"):
        lock_run_dir(tmp_path)  # a second open file description: flock refuses it even in the same process
    first.close()
    with lock_run_dir(tmp_path):
        pass


def test_resuming_a_folder_that_another_process_trains_in_is_refused(write_config, tmp_path):
    # batch 1: 320 steps per epoch, slow enough to still be training when the second process comes
    config = write_config("slow.yaml", train={"epochs": 60, "batch_size": 1, "threads": 1})
    trainer = _fashionmlp("train", "--config", config, "--runs-dir", tmp_path / "runs")
    deadline = time.time() + 120
    while True:
        done = [p for p in (tmp_path / "runs").glob("*/metrics.csv") if len(p.read_text().splitlines()) > 1]
        if done:
            run = done[0].parent
            break
        assert trainer.poll() is None and time.time() < deadline, trainer.communicate()
        time.sleep(0.05)
    second = _fashionmlp("train", "--resume", run, "--epochs", 80)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert err.strip().splitlines() == [f"error: run folder '{run}' is in use by another process (pid {trainer.pid}); "
                                        "wait for it to finish or stop it first"]
    assert trainer.poll() is None  # the first one trains on, undisturbed
    trainer.kill()  # kill -9: the kernel drops the lock with the process
    trainer.communicate()
    epoch = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    third = _fashionmlp("train", "--resume", run, "--epochs", epoch + 1)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
