"""Run folders and what goes in them: resolved config, metrics.csv, summary.json, TensorBoard events.

Every whole-file output is written atomically; metrics.csv and TensorBoard are flushed each epoch, so a
killed process keeps every completed epoch.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fashionmlp import __version__
from fashionmlp.errors import UserError

METRIC_COLUMNS = ["epoch", "train_loss", "test_loss", "test_accuracy", "lr", "seconds"]
VAL_COLUMNS = ["val_loss", "val_accuracy"]


# scheme://user:PASSWORD@, the password up to the token's last @: a "/" in it (which SQLAlchemy takes) let it through
URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/@\s:'\"]*):[^\s'\"]*@")
QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)  # ...?password=PASSWORD


def without_passwords(text: str) -> str:
    """`text` with the password of any database URL in it shown as *** (run folders travel)."""
    return QUERY_PASSWORD.sub(r"\1***", URL_PASSWORD.sub(r"\1:***@", text))


def resume_command(command: str, folder: Path, data_dir: str | None = None) -> str:
    """`fashionmlp COMMAND --resume FOLDER [--data-dir DIR]`, ready to paste into a shell (paths quoted)."""
    data = f" --data-dir {shlex.quote(str(data_dir))}" if data_dir else ""
    return f"fashionmlp {command} --resume {shlex.quote(str(folder))}{data}"


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """A new folder `<runs_dir>/<name>-<YYYYmmdd-HHMMSS>[-k]`; never reuses an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for k in range(1, 1000):
            path = runs_dir / (f"{name}-{stamp}" if k == 1 else f"{name}-{stamp}-{k}")
            try:
                path.mkdir()  # atomic: two processes in the same second get different folders
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise UserError(f"runs directory {str(runs_dir)!r} cannot be written: {exc.strerror or exc}") from None
    raise UserError(f"runs directory {str(runs_dir)!r}: too many runs named {name!r} in one second")


def check_writable(runs_dir: Path) -> None:
    """Fail early, before loading data, when the runs directory cannot hold a new run."""
    probe = runs_dir
    try:
        while not probe.exists():
            probe = probe.parent
    except OSError as exc:  # a folder on the way this user may not enter (PermissionError's traceback)
        raise UserError(f"runs directory {str(runs_dir)!r} cannot be written ({exc.strerror or exc} at "
                        f"{str(probe)!r})") from None
    if not probe.is_dir():
        raise UserError(f"runs directory {str(runs_dir)!r} cannot be written ({str(probe)!r} is not a directory)")
    why = _cannot_write(probe)  # a probe, not os.access: a read-only file system was called "no write permission"
    if why:
        raise UserError(f"runs directory {str(runs_dir)!r} cannot be written ({why} in {str(probe)!r})")


def check_folder_writable(folder: Path, what: str, hint: str = "copy it somewhere writable and use the copy") -> None:
    """Fail early when files cannot be created in `folder` (read-only file system or permissions)."""
    why = _cannot_write(folder)
    if why:
        raise UserError(f"{what} {str(folder)!r} cannot be written ({why}); {hint}")


def _cannot_write(folder: Path) -> str | None:
    """Why a file cannot be made in `folder` (a nameless temporary one is tried), or None."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return str(exc.strerror or exc)


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call write(file) on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the permissions open() would
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)) and _disk_full(exc, path.parent):
            raise UserError(f"no space left on the device of {str(path.parent)!r} (writing {path.name}): free some "
                            "space and continue; what was written before is intact") from exc
        raise


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC, or torch.save's own error ("unexpected pos") on a device
    with (almost) nothing left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def atomic_copy(source: Path, target: Path) -> None:
    """Copy a file as atomically as atomic_write writes one."""
    data = source.read_bytes()
    atomic_write(target, lambda fh: fh.write(data))


def check_picture_format(path: Path, option: str) -> None:
    """matplotlib lists formats that need more than itself: .pgf needs LaTeX (xelatex), .avif a Pillow built with
    it. A tiny figure is saved in memory first: a .pgf grid ended in a traceback after the predictions."""
    from matplotlib.figure import Figure

    try:
        probe = Figure(figsize=(0.4, 0.4))
        probe.text(0.5, 0.5, "x")  # pgf starts LaTeX for a text's size
        probe.savefig(io.BytesIO(), format=path.suffix.lower().lstrip("."))
    except (RuntimeError, OSError, KeyError, ValueError) as exc:  # 'xelatex' not found; Pillow without AVIF
        why = str(exc).split(";")[0].strip() or exc.__class__.__name__
        raise UserError(f"{option} {str(path)!r}: {path.suffix} pictures cannot be written on this machine ({why}); "
                        "give .png, .pdf or .svg") from None


def save_figure(figure: Any, path: Path, dpi: float) -> None:
    """A picture written as atomic_write writes a file, whole or not at all: saved in place, a full disk left
    zero-byte PNGs that every later reader took for pictures."""
    atomic_write(path, lambda fh: figure.savefig(fh, format=path.suffix[1:].lower() or "png", dpi=dpi))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write a whole CSV file atomically (values that are not finite floats as their repr: 'nan', 'inf')."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _fmt(v) for k, v in row.items()} for row in rows)
    text = buffer.getvalue()
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def write_json(path: Path, data: dict) -> None:
    """Strict JSON: a NaN or infinity is written as null (Python wrote NaN, which JSON.parse and jq refuse: the
    test loss of a checkpoint with NaN weights, say)."""
    text = json.dumps(_finite_or_null(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def write_config(path: Path, config: dict) -> None:
    text = yaml.safe_dump(config, sort_keys=False)
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "fashionmlp": __version__}


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _fmt(value: Any) -> Any:
    return repr(value) if isinstance(value, float) and not math.isfinite(value) else value


class MetricsFile:
    """metrics.csv: one row per completed epoch, flushed and fsynced as it is written."""

    def __init__(self, path: Path, with_val: bool):
        self.path = path
        self.columns = METRIC_COLUMNS + (VAL_COLUMNS if with_val else [])

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the file with exactly `rows` (used at the start and on resume)."""
        write_csv(self.path, self.columns, rows)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self.columns, extrasaction="ignore", lineterminator="\n").writerow(
                {k: _fmt(v) for k, v in row.items()})
            fh.flush()
            os.fsync(fh.fileno())


def read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


class TensorBoardLog:
    """Scalars on one x axis (optimizer steps), hparams in the same run, the confusion matrix as an image."""

    def __init__(self, run_dir: Path, purge_step: int = 1):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events at or after that step left by a run that crashed before its checkpoint. A new
        # run's log starts with one too (at step 1, hiding nothing): `tensorboard --load_fast=false` takes a log's
        # first session start for the run's first and purges nothing at it, so a resumed run showed its last
        # checkpointed epoch twice there when only the resumed log had one.
        # a queue that holds an epoch of per-step losses: the writer thread drains it at the epoch's flush instead of
        # making every add_scalar wait for it (10, the default, made an epoch's logging cost ~40 ms)
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, max_queue=4096)

    def epoch(self, row: dict, step_losses: list[float], first_step: int, samples_per_second: float) -> None:
        """Log one completed epoch: per-step losses from `first_step` on, then the epoch scalars."""
        w = self.writer
        for i, loss in enumerate(step_losses):
            w.add_scalar("loss/train_step", loss, first_step + i)
        step = first_step + len(step_losses) - 1
        w.add_scalar("loss/train", row["train_loss"], step)
        for key, tag in (("test_loss", "loss/test"), ("test_accuracy", "accuracy/test"), ("val_loss", "loss/val"),
                         ("val_accuracy", "accuracy/val"), ("lr", "lr"), ("epoch", "epoch")):
            if key in row:
                w.add_scalar(tag, row[key], step)
        w.add_scalar("perf/samples_per_second", samples_per_second, step)
        w.flush()

    def hparams(self, hparams: dict[str, Any], result: dict[str, float], step: int) -> None:
        """Write the HParams session into THIS run (add_hparams would make a separate sub-run), its metrics the
        run's result (summary.json's `final`: with early stopping the restored epoch's, not the last epoch's
        curve points it showed before) as final/* scalars at `step`."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {tag: float(result[key]) for key, tag in HPARAM_METRICS if result.get(key) is not None}
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        for summary in hparams_summary(clean, dict.fromkeys(metrics, 0.0)):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def figure(self, tag: str, figure: Any, step: int) -> None:
        self.writer.add_figure(tag, figure, step, close=False)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


HPARAM_METRICS = (("test_accuracy", "final/test_accuracy"), ("test_loss", "final/test_loss"),
                  ("train_loss", "final/train_loss"), ("val_accuracy", "final/val_accuracy"),
                  ("val_loss", "final/val_loss"))  # summary.json's final key -> its tag; val: when there is one


def hparams_of(config: dict) -> dict[str, Any]:
    """The flat hyper-parameters shown in TensorBoard's HParams tab."""
    model, optim, train, data = config["model"], config["optimizer"], config["train"], config["data"]
    return {"model": model["name"], "hidden": str(model["hidden"]), "activation": model["activation"],
            "batchnorm": model["batchnorm"], "optimizer": optim["name"], "lr": optim["lr"],
            "momentum": optim["momentum"], "weight_decay": optim["weight_decay"], "schedule": optim["schedule"],
            "warmup": optim["warmup"], "batch_size": train["batch_size"], "epochs": train["epochs"],
            "label_smoothing": train["label_smoothing"], "ema": train["ema"], "tta": train["tta"],
            "shift": data["shift"], "flip": data["flip"], "precision": train["precision"],
            "seed": config["seed"]}
