"""Serving batches, chosen by `data.loader`:
- fast (default): the whole split decoded once into one normalized float32 tensor on the training
  device; a batch is `x[perm[i:i+B]]`, no per-sample Python work;
- torchvision: the classic per-sample pipeline (PIL image -> ToTensor -> Normalize -> DataLoader),
  kept as the baseline.
Both draw the epoch's order from the same seeded generator, so they yield the same batches; `augment` moves
and mirrors a batch with draws from that generator too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from fashionmlp.config import DataConfig, RunConfig
from fashionmlp.data.files import MEAN, STD, Split
from fashionmlp.errors import DataError


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), (x/255 - MEAN) / STD: the same ops as ToTensor+Normalize."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels, got {images.dtype}")
    x = images.unsqueeze(1).to(torch.float32)
    return x.div_(255).sub_(torch.tensor(MEAN)).div_(torch.tensor(STD))  # in place: one float copy, not four


@dataclass
class TensorSplit:
    """A split held as one normalized tensor on the device: (N, 1, 28, 28) float32 and (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_split(cls, split: Split, device: torch.device, dtype: torch.dtype = torch.float32) -> TensorSplit:
        x = normalize(torch.from_numpy(split.images))
        return cls(x.to(device, dtype), torch.from_numpy(split.labels).to(device))

    def __len__(self) -> int:
        return len(self.y)


def images_per_epoch(n: int, batch_size: int, batchnorm: bool) -> int:
    """How many of n training images an epoch uses: all, except that BatchNorm cannot normalize a training
    batch of one image, so a lone last image of the epoch's order sits that epoch out."""
    return n - 1 if batchnorm and n % batch_size == 1 else n


def check_trainable(cfg: RunConfig, n_train: int) -> None:
    """Refuse a model and training set that cannot take a single step (before any folder is made)."""
    if cfg.model.batchnorm and n_train < 2:
        raise DataError(f"model.batchnorm: true needs at least 2 training images to normalize a batch; the "
                        f"training set has {n_train}")


def epoch_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """The epoch's sample order: one permutation from the data-order generator (kept on the CPU)."""
    return torch.randperm(n, generator=generator)


def fast_batches(split: TensorSplit, batch_size: int,
                 order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of `split` in `order`, by indexing the in-memory tensors."""
    order = order.to(split.x.device)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield split.x.index_select(0, idx), split.y.index_select(0, idx)  # faster than x[idx] (scripts/bench.py)


def augment(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, 28, 28) normalized images -> a new contiguous batch: each image moved by its own random offset of
    up to `shift` pixels along each axis (the uncovered border is 0, the mean pixel) and then, with `flip`,
    mirrored left-right with probability 1/2.

    Offsets and flips are drawn from `generator` (the run's data-order generator, on the CPU), so a run and
    its resume see the same images; the move itself is one gather from the zero-padded batch on x's device.
    """
    b, side = len(x), x.shape[-1]
    size = side + 2 * shift  # side of the padded image
    padded = torch.nn.functional.pad(x, (shift,) * 4) if shift else x
    offsets = torch.randint(0, 2 * shift + 1, (2, b, 1), generator=generator) if shift else None
    pixels = torch.arange(side)
    rows = cols = pixels.expand(b, side)  # (B, 28): the padded image's row / column that lands on each pixel
    if offsets is not None:
        rows, cols = rows + offsets[0], cols + offsets[1]
    if flip:
        mirrored = torch.randint(0, 2, (b, 1), generator=generator, dtype=torch.bool)
        cols = torch.where(mirrored, cols.flip(1), cols)
    rows = rows + torch.arange(b)[:, None] * size  # (B, 28) row of the whole padded batch seen as one image
    index = (rows * size).to(x.device)[:, :, None] + cols.to(x.device)[:, None, :]  # (B, 28, 28)
    return padded.reshape(-1).take(index).unsqueeze(1)


def augmented(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], cfg: DataConfig,
              generator: torch.Generator) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """`batches` with the config's augmentation (data.shift, data.flip) applied; unchanged when both are off."""
    if not cfg.shift and not cfg.flip:
        return batches
    return ((augment(x, cfg.shift, cfg.flip, generator), y) for x, y in batches)


class _PilDataset(torch.utils.data.Dataset):
    """The classic per-sample path: uint8 array -> PIL image -> ToTensor -> Normalize."""

    def __init__(self, split: Split):
        from torchvision import transforms

        self.split = split
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.split.images[i])  # (28, 28) uint8 -> mode "L"
        return self.transform(image), int(self.split.labels[i])


class _FixedOrder(torch.utils.data.Sampler):
    def __init__(self, order: torch.Tensor):
        self.order = order.tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def classic_batches(split: Split, batch_size: int, order: torch.Tensor, num_workers: int = 0,
                    device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same batches as `fast_batches`, through torchvision transforms and a DataLoader (images in `dtype`:
    ToTensor makes float32, a float64 run's weights want float64)."""
    pin = device is not None and device.type == "cuda"
    # a generator of its own for the seed each epoch's iterator draws: from torch's global one, which draws the
    # dropout masks, it shifted every mask after it
    loader = torch.utils.data.DataLoader(_PilDataset(split), batch_size=batch_size, sampler=_FixedOrder(order),
                                         num_workers=num_workers, pin_memory=pin, generator=torch.Generator())
    for x, y in loader:
        yield x.to(device, dtype, non_blocking=True), y.to(device, non_blocking=True)
