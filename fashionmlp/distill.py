"""Knowledge distillation: a saved run (the teacher) whose soft predictions a new run (the student) learns from.

The loss of a student's batch is alpha T^2 KL(teacher_T || student_T) + (1 - alpha) CE (Hinton et al. 2015):
both softmaxes at temperature T, the cross-entropy on the labels with the run's label smoothing. The teacher
(teacher.py loads and checks it, as `evaluate` checks a run folder) runs in inference mode on the student's
device, with its own flip TTA when it was trained with it. Its logits for the training images are computed once
per run when a batch's images need no logits of their own (no augmentation, or flips only and a TTA teacher) and
per batch otherwise; soft targets at T come from them per batch, so members of a population with other
temperatures share one teacher.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fashionmlp.config import RunConfig

Tensor = torch.Tensor


@dataclass
class Teacher:
    """A saved run's model, in inference mode on the student's device."""

    model: torch.nn.Module
    run_dir: Path
    checkpoint: Path
    epoch: int
    tta: bool  # the teacher's own train.tta: each image and its mirror
    fingerprint: str  # SHA-256 of its weights (distill.fingerprint pins it)
    dtype: torch.dtype  # of its weights
    config: RunConfig  # its run's config.yaml (its validation split, for the notes)
    status: str | None = None  # its run's summary.json status when it was loaded (the weights' moment, for the notes)

    @property
    def device(self) -> torch.device:
        """Where its weights are (the student's device when it was loaded)."""
        return next(self.model.parameters()).device

    @property
    def views(self) -> int:
        """Logits per image: 2 with flip TTA (the image and its mirror), else 1."""
        return 2 if self.tta else 1

    @torch.inference_mode()
    def logits(self, x: Tensor, forward_size: int = 512) -> Tensor:
        """(B, 1, 28, 28) normalized images -> (B, views, 10) logits, in x's dtype; at most `forward_size` views a
        forward pass (the CNN's largest activation then stays under 32 MiB, a block glibc keeps for reuse:
        device.keep_freed_memory; 2000 images at once took 2.2x the time, most of it page faults)."""
        out = []
        step = max(1, forward_size // self.views)
        for start in range(0, len(x), step):
            chunk = x[start:start + step].to(self.dtype)
            if self.tta:
                both = self.model(torch.cat([chunk, chunk.flip(3)]))  # one forward pass for the pair
                out.append(torch.stack([both[:len(chunk)], both[len(chunk):]], dim=1))
            else:
                out.append(self.model(chunk).unsqueeze(1))
        return torch.cat(out).to(x.dtype) if out else x.new_zeros((0, self.views, 10))

    def info(self, cfg: RunConfig) -> dict:
        """What summary.json says about the teacher."""
        return {"teacher": str(self.run_dir.resolve()), "checkpoint": str(self.checkpoint.resolve()),
                "epoch": self.epoch, "fingerprint": self.fingerprint, "tta": self.tta,
                "temperature": cfg.distill.temperature, "alpha": cfg.distill.alpha}


def soft_targets(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """(..., views, 10) teacher logits -> (..., 10) log-probabilities at `temperature`: the log of the mean
    softmax over the views (an image and its mirror with TTA)."""
    log_p = F.log_softmax(logits / temperature, dim=-1)
    if log_p.shape[-2] == 1:
        return log_p.squeeze(-2)
    return torch.logsumexp(log_p, dim=-2) - math.log(log_p.shape[-2])


def distill_loss(logits: Tensor, y: Tensor, teacher_logits: Tensor, temperature: float, alpha: float,
                 label_smoothing: float = 0.0) -> Tensor:
    """(B, 10) student logits, (B,) labels, (B, views, 10) teacher logits -> the batch's mean loss,
    alpha T^2 KL(teacher_T || student_T) + (1 - alpha) CE(labels, with label smoothing)."""
    wide = torch.promote_types(logits.dtype, teacher_logits.dtype)  # bf16 logits: the KL term in float32, as the
    target = soft_targets(teacher_logits.to(wide), temperature)        # population engine computes it
    kl = F.kl_div(F.log_softmax(logits.to(wide) / temperature, dim=1), target, reduction="batchmean",
                  log_target=True)
    smoothing = {"label_smoothing": label_smoothing} if label_smoothing else {}
    ce = F.cross_entropy(logits, y, **smoothing)
    return alpha * temperature**2 * kl + (1 - alpha) * ce


def with_teacher(batches: Iterable[tuple[Tensor, Tensor]], teacher: Teacher, cached: Tensor | None,
                 order: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(x, y) batches -> (x, y, teacher logits): from `cached` (the logits of every training image, indexed by
    the epoch's `order`) or, without a cache (augmented images), from the teacher on each batch."""
    for i, (x, y) in enumerate(batches):
        if cached is None:
            yield x, y, teacher.logits(x)
        else:
            idx = order[i * batch_size:(i + 1) * batch_size].to(cached.device)
            yield x, y, cached.index_select(0, idx)


def distill_of(cfg: RunConfig) -> tuple[float, float] | None:
    """A recipe's (temperature, alpha) with a teacher, else None."""
    return None if cfg.distill.teacher is None else (cfg.distill.temperature, cfg.distill.alpha)


def cached_logits(cfg: RunConfig, teacher: Teacher | None, x: Tensor) -> Tensor | None:
    """The teacher's logits of the training images `x`, computed once, when no batch needs its own: the images
    are not moved (data.shift 0), and either not mirrored or the teacher scores each image with its mirror (TTA:
    an image and its mirror then get the same soft targets, so the flip changes nothing for the teacher)."""
    if teacher is None or cfg.data.shift or (cfg.data.flip and not teacher.tta):
        return None
    return teacher.logits(x)
