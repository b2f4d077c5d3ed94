"""A saved run folder: check that it is one, that its checkpoint fits its config, and load its model."""

from __future__ import annotations

import dataclasses
import glob
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fashionmlp import status as st
from fashionmlp.checkpoint import load_checkpoint, load_model_state
from fashionmlp.config import ModelConfig, RunConfig, Values, load_config, with_values
from fashionmlp.errors import ConfigError, DataMissing, UserError
from fashionmlp.plots.common import plural
from fashionmlp.session import prepare

CHECKPOINTS = ("best", "last")


def check_run_dir(run_dir: Path, what: str = "run folder",
                  example: str = "pass a run folder such as runs/mlp_adam-20260101-120000") -> Path:
    """`run_dir` must be a folder that `fashionmlp train` made (config.yaml and checkpoints/); a missing one's
    line lists the runs of that name, else says `example`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        problem = ": no such folder" if not run_dir.exists() else " is a file, not a directory"
        named = _runs_named(run_dir)
        owner = next((p for p in run_dir.parents if _is_run(p)), None) if run_dir.is_file() else None  # e.g.
        # runs/x/checkpoints/last.pt given for runs/x
        hint = (f"; pass its run folder, {str(owner)!r}" if owner is not None else
                f"; runs of that name: {', '.join(named)}" if named else f"; {example}")
        raise UserError(f"{what} {str(run_dir)!r}{problem}{hint}")
    if not _is_run(run_dir):
        runs = sorted(p.name for p in run_dir.iterdir() if (p / "config.yaml").is_file()) if (
            run_dir / "study.json").is_file() else []
        inside = (f"; it is a study folder (compare-optimizers, train --seeds): pass one of its runs, e.g. "
                  f"{str(run_dir / runs[0])!r}" if runs else "")
        raise UserError(f"{what} {str(run_dir)!r} is not a fashionmlp run (it needs config.yaml and checkpoints/)"
                        + inside)
    return run_dir


def _is_run(folder: Path) -> bool:
    """What `fashionmlp train` makes: config.yaml and checkpoints/."""
    return (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir()


def group_of(run_dir: Path) -> str | None:
    """'study' or 'sweep' for a run inside a study folder (compare-optimizers, train --seeds) or a sweep's folder,
    else None; the path resolved first (`--resume .` from inside a trial)."""
    parent = Path(run_dir).resolve().parent
    return "study" if (parent / "study.json").is_file() else "sweep" if (parent / "sweep.json").is_file() else None


def _runs_named(run_dir: Path, most: int = 3) -> list[str]:
    """Run folders next to `run_dir` whose name is its name and a timestamp (runs/cnn_tuned ->
    runs/cnn_tuned-20261130-011749), newest first."""
    parent = run_dir.parent
    if not run_dir.name or not parent.is_dir():
        return []
    found = sorted((p for p in parent.glob(f"{glob.escape(run_dir.name)}-*") if (p / "config.yaml").is_file()),
                   key=lambda p: p.name, reverse=True)
    return [str(p) for p in found[:most]]


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """checkpoints/<best|last>.pt of a run, with the way out when it is not there."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"--checkpoint: {checkpoint!r} is not allowed; allowed: {', '.join(CHECKPOINTS)}")
    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    try:
        found = path.is_file()
    except OSError as exc:  # an unreadable checkpoints/ folder was PermissionError's traceback
        raise UserError(f"cannot look into {str(path.parent)!r} ({exc.strerror or exc})") from None
    if not found:
        hint = ""
        if checkpoint == "best" and path.with_name("last.pt").is_file():
            epochs = epochs_done(Path(run_dir))
            diverged = previous_summary(Path(run_dir)).get("status") == st.DIVERGED  # "not ... yet": never will
            hint = (f"; the run {'diverged in its first epoch' if diverged else 'has not finished an epoch yet'} "
                    "(checkpoints/last.pt holds its initial weights: --checkpoint last)" if not epochs else
                    f"; the run has finished {plural(epochs, 'epoch')}: --checkpoint last is the run as it ended")
        elif checkpoint == "last" and path.with_name("best.pt").is_file():
            hint = "; checkpoints/best.pt is there: --checkpoint best"
        raise UserError(f"no checkpoint at {str(path)!r}{hint}")
    return path


def refuse_links(run_dir: Path, what: str, writes_checkpoints: bool = True) -> None:
    """A run folder from someone else must not steer a write out of it: no symbolic link among the entries a
    command writes to (the folder's files, checkpoints/ where it writes there, and everything in inspect/, whose
    projector writes into folders of its own). The folder itself may be one; so may the checkpoints of a command
    that only reads them (evaluate and inspect refused a run whose checkpoints were links, as DVC makes them)."""
    inspect = run_dir / "inspect"
    for folder in (run_dir, run_dir / "checkpoints", inspect) if writes_checkpoints else (run_dir, inspect):
        entries = [folder] if folder.is_symlink() else sorted(folder.iterdir()) if folder.is_dir() else []
        if folder == inspect and not folder.is_symlink():
            entries = sorted(inspect.rglob("*"))  # rglob does not follow links to folders: each is an entry
        link = next((entry for entry in entries if entry.is_symlink()
                     and (writes_checkpoints or entry != run_dir / "checkpoints")), None)
        if link is not None and link != run_dir:
            raise UserError(f"{what} {str(run_dir)!r}: {str(link.relative_to(run_dir))!r} is a symbolic link (to "
                            f"{str(link.resolve())!r}); a run folder's files must be its own: nothing is written "
                            "through a link")
    folder = next((name for name in WRITTEN_FILES if (run_dir / name).is_dir()), None)  # what commands write
    if folder is not None:  # found before anything is written (best.pt was met after a whole epoch)
        raise UserError(f"{what} {str(run_dir)!r}: {folder!r} is a folder where the run keeps a file")


WRITTEN_FILES = ("config.yaml", "summary.json", "metrics.csv", ".lock", "loss_curve.png", "confusion_matrix-best.png",
                 "confusion_matrix-last.png", "confusion_matrix.png", "checkpoints/best.pt", "checkpoints/last.pt")


def previous_summary(run_dir: Path) -> dict:
    """The run's summary.json ({} when it is missing or not a mapping)."""
    try:
        return previous if isinstance(previous := json.loads((run_dir / "summary.json").read_text()), dict) else {}
    except (OSError, ValueError):
        return {}


def run_data(run_dir: Path, cfg: RunConfig, data_dir: str | Path | None):
    """The data a saved run's config asks for (load_data), for a run to go on with."""
    from fashionmlp.data import FILES, load_data

    return _saved_runs_data(run_dir, cfg, data_dir, load_data, tuple(FILES))


def run_test_split(run_dir: Path, cfg: RunConfig, data_dir: str | Path | None):
    """The test split alone (load_test), for scoring a saved run: evaluate, predict and inspect."""
    from fashionmlp.data import load_test

    return _saved_runs_data(run_dir, cfg, data_dir, load_test, ("test_images", "test_labels"))


def _saved_runs_data(run_dir: Path, cfg: RunConfig, data_dir: str | Path | None,
                     load: Callable[[RunConfig, str | Path | None], Any], keys: tuple[str, ...]) -> Any:
    """load(cfg, data_dir), its files (`keys`) searched for in a saved data.dir without a download, and a missing
    file's message naming the folder the run trained on."""
    def searched_then_loaded():
        check_saved_data_dir(cfg, data_dir, keys)
        return load(cfg, data_dir)

    return _naming_the_trained_folder(run_dir, searched_then_loaded)


def check_saved_data_dir(cfg: RunConfig, data_dir: str | Path | None, keys: tuple[str, ...] | None = None) -> None:
    """A saved config's data.dir is where to look, never where to download: a run or study folder from someone
    else (`data.dir: ~/anywhere`, `download: true`) made that folder and wrote into it; nor is it offered as a
    download target. Without --data-dir, the files `keys` names (all four by default) must be there already."""
    from fashionmlp.data import FILES, ensure_files

    if data_dir is not None or not cfg.data.dir or not cfg.data.download:
        return
    try:
        ensure_files(Path(cfg.data.dir).expanduser(), verify_md5=False, allow_download=False,
                     keys=keys or tuple(FILES))
    except DataMissing as exc:
        raise DataMissing(f"{exc} (a saved run's data.dir is searched, never downloaded into: give --data-dir "
                          "DIR where the files are; `fashionmlp data --data-dir DIR` fetches them into a folder "
                          "you choose)") from None


def _naming_the_trained_folder(run_dir: Path, load: Callable[[], Any]) -> Any:
    """load(); where the files are missing, the message names the folder the run trained on (summary.json's
    data.dir) when that folder has them."""
    from fashionmlp.data import file_status

    try:
        return load()
    except DataMissing as exc:
        trained = (previous_summary(run_dir).get("data") or {}).get("dir")
        if not isinstance(trained, str) or not trained or any(
                s.path is None for s in file_status(Path(trained).expanduser(), verify_md5=False)):
            raise
        raise DataMissing(f"{exc}; this run trained on the files in {trained!r}: --data-dir "
                          f"{shlex.quote(trained)}") from None


def epochs_done(run_dir: Path) -> int:
    """The epochs summary.json says the run finished (0 when it cannot be read)."""
    epochs = previous_summary(run_dir).get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else 0


def check_fits(cfg: RunConfig, state: dict, path: Path, optimizer_too: bool = False) -> None:
    """The checkpoint must have been made for the model (and optimizer) that config.yaml describes."""
    saved = state.get("config") or {}
    if _with_defaults(saved.get("model")) != cfg.to_dict()["model"]:
        raise UserError(f"{path}: checkpoint does not fit the configured model (config.yaml says "
                        f"{cfg.to_dict()['model']}, the checkpoint was made for {saved.get('model')})")
    if optimizer_too and (saved.get("optimizer") or {}).get("name") != cfg.optimizer.name:
        raise UserError(f"{path}: checkpoint was made with optimizer {saved.get('optimizer', {}).get('name')!r}, "
                        f"config.yaml says {cfg.optimizer.name!r}; resume needs the same optimizer")
    # config.yaml without the teacher's pin: a distilled study resumed on the population engine before
    # 2026-11-30 rewrote its members' config.yaml so; the checkpoint's pin stands
    unpinned = {"distill.teacher", "distill.fingerprint"} if cfg.distill.fingerprint is None else set()
    if cfg.distill.fingerprint is not None and (saved.get("distill") or {}).get("fingerprint") == \
            cfg.distill.fingerprint:  # the same weights: where the teacher lies now (it moved) does not matter
        unpinned = {"distill.teacher"}
    differ = config_difference(saved, cfg.to_dict(), HOW_KEYS | unpinned)
    if differ:
        key, theirs, ours = differ
        raise UserError(f"{path}: the checkpoint was made with {key}: {_shown(theirs)}, config.yaml says "
                        f"{_shown(ours)}; a run folder's checkpoints and config.yaml must come from one run")


# Where and how a run is computed, not what: these may differ between config.yaml and a checkpoint (`--resume
# --epochs` and `--device` rewrite config.yaml before the next checkpoint; data.dir is wherever the files are)
HOW_KEYS = frozenset({"train.epochs", "device", "data.dir", "data.verify_md5", "data.download", "data.num_workers",
                      "train.eval_batch_size", "train.threads", "train.channels_last", "train.deterministic"})


def config_difference(saved: dict, current: dict, skipped: frozenset[str] | set[str] = HOW_KEYS,
                      prefix: str = "") -> tuple[str, object, object] | None:
    """The first dotted key whose value differs between a checkpoint's config and config.yaml, with both
    values; keys that only one of them has (written by another fashionmlp version) and `skipped` are skipped."""
    for key, theirs in saved.items():
        dotted = f"{prefix}{key}"
        if key not in current or dotted in skipped:
            continue
        ours = current[key]
        if isinstance(theirs, dict) and isinstance(ours, dict):
            found = config_difference(theirs, ours, skipped, f"{dotted}.")
            if found:
                return found
        elif _plain(theirs) != _plain(ours):
            return dotted, theirs, ours
    return None


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _shown(value: object) -> str:
    """A value as config.yaml spells it (null, true, false)."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(_plain(value))


def _with_defaults(model: object) -> object:
    """A saved model section, with the keys that an older fashionmlp did not write at their default."""
    if not isinstance(model, dict):
        return model
    defaults = dataclasses.asdict(ModelConfig())
    return {**{k: v for k, v in defaults.items() if k not in ("hidden",)}, **model}


@dataclass
class LoadedRun:
    cfg: RunConfig
    model: torch.nn.Module
    device: torch.device
    checkpoint: Path
    epoch: int
    global_step: int = 0  # the optimizer steps behind the checkpoint: the x axis of the run's TensorBoard log
    name: str = "best"  # which checkpoint: best | last
    notes: list[str] = field(default_factory=list)  # what the user should know about the choices made

    @property
    def title(self) -> str:
        """'<run folder> (<best|last>.pt, epoch N)', as pictures name the model (no-break spaces: a wrapped title
        read "(last.pt, epoch" / "2)")."""
        return f"{self.checkpoint.parent.parent.name} ({self.name}.pt,\u00a0epoch\u00a0{self.epoch})"


def default_checkpoint(cfg: RunConfig) -> str:
    """best.pt is chosen on the validation split when the run has one; without one it is the epoch of the best
    *test* accuracy, an optimistic pick, so the run as it ended (last.pt) is the honest default."""
    return "best" if cfg.data.val_size else "last"


BEST_ON_TEST = ("best.pt is the epoch with the best test accuracy (the run has no validation split), so its test "
                "numbers are optimistic; --checkpoint last is the run as it ended")


def inference_device(cfg: RunConfig, device: str | None) -> tuple[str, str | None]:
    """The device to run a saved model on, and a note when it is not the run's own: a run trained on CUDA is
    evaluated on the CPU where CUDA is absent (an explicit --device is used as given)."""
    if device is None and cfg.device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu", (f"the run was trained with device {cfg.device!r} and CUDA is not available here: running on "
                       "the CPU (--device chooses another)")
    return device or cfg.device, None


RUNNING_WHY = "still training, or its process died without a word"  # summary.json alone cannot tell which


def unfinished_note(status: object, epoch: int, planned: int) -> list[str]:
    """A note for the weights of a run that did not end (evaluate, predict and inspect printed its numbers as
    any run's); none for a finished one."""
    if status not in (st.RUNNING, st.INTERRUPTED, st.KILLED, st.CRASHED, st.DIVERGED):
        return []
    why = {st.RUNNING: RUNNING_WHY,
           st.INTERRUPTED: "stopped; --resume continues it", st.KILLED: "its process was killed",
           st.CRASHED: "it crashed", st.DIVERGED: "its loss became non-finite after its last good epoch"}[status]
    return [f"the run is {status} ({why}): these weights are of its epoch {epoch} of {planned}"]


def run_config(run_dir: Path, values: Values | None = None) -> RunConfig:
    """A saved run's config.yaml, whose mistakes name the file (a key from another fashionmlp version read
    "unknown config key 'model.kernel'", where the user had given no config)."""
    path = Path(run_dir) / "config.yaml"
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if str(path) in text else f"the run's {str(path)!r}: {text}") from None
    try:  # the options given with it (--epochs 0 was blamed on config.yaml)
        return with_values(cfg, values) if values else cfg
    except ConfigError as exc:
        at_fault = [key for key in values if str(exc).startswith(f"{key}:")] or list(values)
        given = ", ".join(f"--{key.rsplit('.', 1)[-1]} {values[key]}" for key in at_fault)
        raise ConfigError(f"{given}: {exc}") from None


def load_run(run_dir: Path, checkpoint: str | None = None, device: str | None = None) -> LoadedRun:
    """The model of a saved run, from checkpoints/<checkpoint>.pt (default: default_checkpoint), ready for
    inference."""
    run_dir = check_run_dir(run_dir)
    saved = run_config(run_dir)
    name = checkpoint or default_checkpoint(saved)
    path = checkpoint_path(run_dir, name)
    notes = [BEST_ON_TEST] if name == "best" and not saved.data.val_size else []
    device, note = inference_device(saved, device)
    notes += [note] if note else []
    cfg = with_values(saved, {"device": device})
    state = load_checkpoint(path)
    check_fits(cfg, state, path)
    session = prepare(cfg, with_data=False)
    load_model_state(session.model, state["model"], path)
    session.model.eval()
    broken = [key for key, value in session.model.state_dict().items()
              if value.is_floating_point() and not bool(value.isfinite().all())]
    if broken:  # scored as 10% and "nan%" without a word
        notes.append(f"{path.name} holds weights that are NaN or infinite ({', '.join(broken[:3])}"
                     f"{', ...' if len(broken) > 3 else ''}): the run diverged, or the file was changed; what the "
                     "model predicts says nothing")
    if int(state["epoch"]) == 0:
        notes.append(f"{path.name} is from epoch 0: the run has not finished an epoch, these are its initial weights")
    else:
        notes += unfinished_note(previous_summary(run_dir).get("status"), int(state["epoch"]), saved.train.epochs)
    return LoadedRun(cfg, session.model, session.device, path, int(state["epoch"]), int(state["global_step"]), name,
                     notes)
