"""The data of a population: one pool of training images on the device, and per seed the split that seed draws
(which images train and which validate) and the generator of its batches, shared by the seed's members."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fashionmlp.config import RunConfig
from fashionmlp.data import FashionMNIST, TensorSplit, augment, split_indices
from fashionmlp.device import dtype_of
from fashionmlp.distill import Teacher, cached_logits

Tensor = torch.Tensor


@dataclass
class SeedGroup:
    """The members of one seed: the same training images in the same order, the same augmentation draws."""

    seed: int
    train_index: Tensor  # (n_train,) positions in the pool, on the device
    val: TensorSplit | None  # this seed's validation images
    generator: torch.Generator | None = None  # the batches' generator (its first member's), set by the loop
    order: Tensor | None = None  # this epoch's order of train_index positions


@dataclass
class PopulationData:
    pool: TensorSplit  # every training image the configs use (data.subset applied), normalized, on the device
    test: TensorSplit
    groups: dict[int, SeedGroup]  # by seed
    info: dict[str, Any]  # what summary.json says about the data (recorder.data_info's keys)
    teacher: Teacher | None = None  # distillation's, shared by every member
    teacher_logits: Tensor | None = None  # (pool, views, 10): its logits of the pool, when the images never change

    @property
    def n_train(self) -> int:
        return len(next(iter(self.groups.values())).train_index)


def population_data(full: FashionMNIST, cfg: RunConfig, seeds: list[int], device: torch.device,
                    teacher: Teacher | None = None) -> PopulationData:
    """`full` is the training set without a validation split; each seed draws its own, as `train` does. With a
    `teacher`, its logits of the pool are computed once when the config does not augment."""
    pool = TensorSplit.from_split(full.train, device, dtype_of(cfg))
    groups = {}
    for seed in seeds:
        train_index, val_index = split_indices(len(pool), cfg.data.val_size, seed)
        val = None
        if val_index is not None:
            index = torch.from_numpy(val_index).to(device)
            val = TensorSplit(pool.x.index_select(0, index), pool.y.index_select(0, index))
        groups[seed] = SeedGroup(seed, torch.from_numpy(train_index).to(device), val)
    # the engine serves every member's batches as the fast loader does, whatever data.loader says
    info = {"dir": str(full.root), "train_size": len(pool) - cfg.data.val_size, "val_size": cfg.data.val_size,
            "test_size": len(full.test.labels), "loader": "fast"}
    cached = cached_logits(cfg, teacher, pool.x)
    return PopulationData(pool, TensorSplit.from_split(full.test, device, dtype_of(cfg)), groups, info, teacher,
                          cached)


def group_batch(data: PopulationData, group: SeedGroup, start: int, batch_size: int, cfg: RunConfig
                ) -> tuple[Tensor, Tensor, Tensor | None]:
    """The batch at `start` of the group's epoch order, augmented with the group's generator, as
    data.fast_batches and data.augmented make it for a single run; and the teacher's logits of it (None
    without a teacher), as distill.with_teacher gives them."""
    positions = group.train_index.index_select(0, group.order[start:start + batch_size].to(group.train_index.device))
    x, y = data.pool.x.index_select(0, positions), data.pool.y.index_select(0, positions)
    if cfg.data.shift or cfg.data.flip:
        x = augment(x, cfg.data.shift, cfg.data.flip, group.generator)
    if data.teacher is None:
        return x, y, None
    cached = data.teacher_logits
    return x, y, data.teacher.logits(x) if cached is None else cached.index_select(0, positions)
