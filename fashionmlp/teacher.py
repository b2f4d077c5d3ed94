"""Loading a distillation teacher: a saved run folder, checked as any saved-run input, on the student's device."""

from __future__ import annotations

from pathlib import Path

import torch

from fashionmlp import status as st
from fashionmlp.checkpoint import load_checkpoint, load_model_state, state_digest
from fashionmlp.config import RunConfig, load_config, with_values
from fashionmlp.device import dtype_of, prepare_model
from fashionmlp.distill import Teacher
from fashionmlp.errors import UserError
from fashionmlp.resume import previous_summary
from fashionmlp.savedrun import RUNNING_WHY, check_fits, check_run_dir, checkpoint_path, default_checkpoint

Tensor = torch.Tensor
KEY = "distill.teacher"


def weights_fingerprint(state: dict[str, Tensor]) -> str:
    """SHA-256 over a model state's names, dtypes, shapes and values."""
    return state_digest(state, layout=True)


def load_teacher(cfg: RunConfig, device: torch.device) -> Teacher | None:
    """The teacher of cfg.distill (None without one), checked like any saved-run input: a missing, foreign or
    untrained run, a checkpoint that does not fit its config, or weights other than distill.fingerprint pins are
    one UserError each. Building the model draws from torch's global generator: call before seeding."""
    given = cfg.distill.teacher
    if given is None:
        return None
    pinned_to = cfg.distill.fingerprint
    run_dir = check_run_dir(Path(given).expanduser(), KEY, example=(
        f"the teacher these weights were pinned to ({pinned_to[:12]}...) is not there: put it back, or name the "
        "folder it is in now in distill.teacher (a student's config.yaml, for --resume: its weights are checked "
        "against distill.fingerprint)" if pinned_to else
        "train a teacher first (e.g. fashionmlp train --config configs/cnn_tuned.yaml) and give its run folder "
        "(runs/cnn_tuned-<timestamp>)"))
    try:
        saved = load_config(run_dir / "config.yaml")
    except UserError as exc:
        raise UserError(f"{KEY} {given!r}: its config.yaml is not valid: {exc}") from None
    name = default_checkpoint(saved) if cfg.distill.checkpoint == "auto" else cfg.distill.checkpoint
    try:
        path = checkpoint_path(run_dir, name)
    except UserError as exc:
        last = run_dir / "checkpoints" / "last.pt"
        if name == "best" and last.is_file():  # the hint is distill.checkpoint's, not evaluate's --checkpoint
            try:
                untrained = int(load_checkpoint(last).get("epoch", 0)) == 0
            except UserError as unreadable:
                raise UserError(f"{KEY} {given!r}: {unreadable}") from None
            if untrained:
                raise UserError(f"{KEY} {given!r}: the run has not finished an epoch yet (no checkpoints/best.pt): "
                                "an untrained model cannot teach") from None
            raise UserError(f"{KEY} {given!r}: it has no checkpoints/best.pt; distill.checkpoint: last uses its "
                            "last.pt") from None
        if name == "last" and (run_dir / "checkpoints" / "best.pt").is_file():  # evaluate's hint named --checkpoint
            raise UserError(f"{KEY} {given!r}: it has no checkpoints/last.pt; distill.checkpoint: best uses its "
                            "best.pt") from None
        raise UserError(f"{KEY} {given!r}: {exc}") from None
    status = previous_summary(run_dir).get("status")  # before its weights: a run ending meanwhile reads unfinished
    try:  # named as the teacher: "checkpoint does not fit" alone did not say which key gave the file
        state = load_checkpoint(path)
        check_fits(saved, state, path)
    except UserError as exc:
        raise UserError(f"{KEY} {given!r}: {exc}") from None
    if int(state["epoch"]) == 0:
        raise UserError(f"{KEY} {given!r}: {path.name} is from epoch 0 (the run has not finished an epoch), an "
                        "untrained model cannot teach")
    if not all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point()):
        raise UserError(f"{KEY} {given!r}: {path.name} holds weights that are not finite (NaN or inf: the run "
                        "diverged), which cannot teach")
    fingerprint = weights_fingerprint(state["model"])
    _same_weights(cfg, path, fingerprint)
    model = prepare_model(saved, device)  # the teacher's own architecture and precision
    try:  # weights of other shapes than its config.yaml says: named as the teacher's too
        load_model_state(model, state["model"], path)
    except UserError as exc:
        raise UserError(f"{KEY} {given!r}: {exc}") from None
    model.eval().requires_grad_(False)
    return Teacher(model, run_dir, path, int(state["epoch"]), saved.train.tta == "flip", fingerprint,
                   dtype_of(saved), saved, status)


def check_same_teacher(cfg: RunConfig, teacher: Teacher) -> None:
    """A teacher already loaded (a study's, shared by its runs) must be the one cfg's distill.fingerprint pins."""
    _same_weights(cfg, teacher.checkpoint, teacher.fingerprint)


def _same_weights(cfg: RunConfig, path: Path, fingerprint: str) -> None:
    pinned_to = cfg.distill.fingerprint
    if pinned_to is not None and pinned_to != fingerprint:
        raise UserError(f"{KEY} {cfg.distill.teacher!r}: the weights of {path.name} are not the ones "
                        f"distill.fingerprint names ({pinned_to[:12]}..., found {fingerprint[:12]}...): the teacher "
                        "changed since the config was written (a new run taught by its weights as they are now: "
                        "--set distill.fingerprint=null)")


def pinned(cfg: RunConfig, teacher: Teacher) -> RunConfig:
    """The config a taught run records: its teacher's folder as an absolute path (a resume from another working
    folder finds it) and the fingerprint of its weights (a changed teacher is refused)."""
    return with_values(cfg, {"distill.teacher": str(teacher.run_dir.resolve()),
                             "distill.fingerprint": teacher.fingerprint})


def teacher_path_absolute(cfg: RunConfig) -> RunConfig:
    """cfg with distill.teacher as an absolute path (as `pinned` records it), for configs written to be trained
    from anywhere (a sweep's best.yaml and sweep.yaml: a relative path was refused from another folder)."""
    given = cfg.distill.teacher
    return cfg if given is None else with_values(cfg, {"distill.teacher": str(Path(given).expanduser().resolve())})


def teacher_notes(cfg: RunConfig, teacher: Teacher) -> list[str]:
    """What a taught run's summary notes about its teacher: validation images it may have seen, a best.pt
    chosen on the test set."""
    notes = [note] if (note := teacher_note(cfg, teacher)) else []
    ended = teacher.status  # when its weights were loaded: a study's later runs share them, not its later status
    if ended not in (None, st.COMPLETED):
        why = f" ({RUNNING_WHY})" if ended == st.RUNNING else ""  # a killed teacher's still says running
        notes.append(f"the teacher's run ({teacher.run_dir.name}) is {ended}{why}, not completed: it teaches with "
                     f"the weights of its epoch {teacher.epoch} of {teacher.config.train.epochs}")
    if teacher.checkpoint.name == "best.pt" and not teacher.config.data.val_size:
        notes.append(f"the teacher's best.pt ({teacher.run_dir.name}) is the epoch with its best test accuracy (it "
                     "had no validation split): the test set chose the teacher's weights; distill.checkpoint: last "
                     "avoids it")
    return notes


def teacher_note(cfg: RunConfig, teacher: Teacher) -> str | None:
    """A note when the student's validation images may have trained the teacher (its val numbers then flatter
    it): unless both held out the same images (the same val_size, seed and subset)."""
    if not cfg.data.val_size:
        return None
    saved = teacher.config
    same = (saved.data.val_size, saved.seed, saved.data.subset) == (cfg.data.val_size, cfg.seed, cfg.data.subset)
    if same:
        return None
    return (f"the teacher ({teacher.run_dir.name}) did not hold out this run's validation images "
            f"(its data.val_size {saved.data.val_size}, seed {saved.seed}): it may have trained on them, so the "
            "validation accuracy flatters the student")
