"""The run setup, written once: device, data, process settings, seed and a freshly initialized model.

Every command that trains or loads a model starts here (train, resume, lr-find, compare, sweep, and the
saved-run loader behind evaluate, predict and inspect), so the same config always meets the same checks in
the same order, before any folder is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fashionmlp.config import RunConfig
from fashionmlp.data import FashionMNIST, check_trainable, load_data
from fashionmlp.device import (
    auto_threads,
    check_memory,
    deterministic_cuda,
    keep_freed_memory,
    oversubscribed,
    prepare_model,
    resolve_device,
    set_threads,
)
from fashionmlp.engine import seed_everything
from fashionmlp.tracking import check_writable

if TYPE_CHECKING:
    from fashionmlp.distill import Teacher


@dataclass
class Session:
    """What a run works with: its config, device, data (None for inference), model and the CPU threads used;
    with distill.teacher, the teacher (and cfg's distill.fingerprint names its weights)."""

    cfg: RunConfig
    device: torch.device
    data: FashionMNIST | None
    model: torch.nn.Module
    threads: int
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. why fewer threads)
    teacher: Teacher | None = None


def prepare(cfg: RunConfig, *, data_dir: str | Path | None = None, data: FashionMNIST | None = None,
            runs_dir: Path | None = None, with_data: bool = True, evaluates: bool = True,
            threads: int | None = None, teacher: Teacher | None = None) -> Session:
    """Resolve the device, check that `runs_dir` (when given) can hold a new folder, load the data (or take
    `data`, already loaded) and check that the model trains on it and fits in memory, set the CPU threads and
    the allocator, seed every generator with cfg.seed and build the model on the device.

    `with_data=False` skips the data (inference on a saved run); `evaluates=False` counts only the training
    images in the memory check (the range test puts no test images on the device); `threads` overrides
    train.threads (a resumed run keeps the count it started with). With distill.teacher (and data), the teacher
    is loaded and checked too, or `teacher` is taken (a study's runs share the one loaded for the first). Every
    user mistake is a UserError raised here, before anything is written.
    """
    device = resolve_device(cfg.device)
    deterministic_cuda(cfg, device)
    if runs_dir is not None:
        check_writable(runs_dir)
    if with_data:
        data = data or load_data(cfg, data_dir)
        n_train = len(data.train.labels)
        check_trainable(cfg, n_train)
        others = len(data.test.labels) + (0 if data.val is None else len(data.val.labels))
        check_memory(cfg, device, n_train + (others if evaluates else 0), n_train)
    notes = []
    if not with_data or cfg.distill.teacher is None:
        teacher = None
    else:
        from fashionmlp.teacher import check_same_teacher, load_teacher, pinned, teacher_notes  # needs prepare

        here = teacher.device if teacher is not None else None  # cuda means cuda:0 where the weights are
        if here is not None and (here.type, here.index or 0) != (device.type, device.index or 0):
            teacher = None  # a study's teacher, loaded for a run on another device
        if teacher is None:  # loading builds a model: before the seed, so the student's weights are its own
            teacher = load_teacher(cfg, device)
        else:
            check_same_teacher(cfg, teacher)
        cfg = pinned(cfg, teacher)
        notes += teacher_notes(cfg, teacher)
    if threads is None:
        threads, why = (cfg.train.threads, None) if cfg.train.threads else auto_threads()
        notes += [why] if why else []
    notes += [too_many] if (too_many := oversubscribed(threads)) and device.type == "cpu" else []
    set_threads(threads)
    keep_freed_memory()
    seed_everything(cfg.seed)
    return Session(cfg, device, data if with_data else None, prepare_model(cfg, device), threads, notes, teacher)
