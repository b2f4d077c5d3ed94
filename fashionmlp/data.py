"""Fashion-MNIST: finding, verifying and decoding the IDX files, and serving batches.

Two ways to serve batches, chosen by `data.loader`:
- fast (default): the whole split decoded once into one normalized float32 tensor on the training
  device; a batch is `x[perm[i:i+B]]`, no per-sample Python work;
- torchvision: the classic per-sample pipeline (PIL image -> ToTensor -> Normalize -> DataLoader),
  kept as the baseline and for per-sample augmentation.
Both draw the epoch's order from the same seeded generator, so they yield the same batches.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashionmlp.config import DataConfig, RunConfig
from fashionmlp.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # pixel mean and std of the 60,000 training images, on the [0, 1] scale

FILES = {  # split/kind -> (file name, MD5 of the published .gz)
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
ENV_VAR = "FASHIONMLP_DATA_DIR"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def resolve_data_dir(cli_dir: str | Path | None = None, config_dir: str | None = None) -> Path:
    """--data-dir, then the config's data.dir, then $FASHIONMLP_DATA_DIR, then ./data."""
    for candidate in (cli_dir, config_dir, os.environ.get(ENV_VAR) or None):
        if candidate:
            return Path(candidate).expanduser()
    return Path("data")


def _locate(root: Path, name: str) -> Path | None:
    """The file in `root` or torchvision's `root/FashionMNIST/raw`, gzipped or not."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        for candidate in (folder / name, folder / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileStatus:
    key: str
    path: Path | None
    md5_ok: bool | None  # None: not checked (missing, or not gzipped so the published MD5 does not apply)


def file_status(root: Path, verify_md5: bool = True) -> list[FileStatus]:
    if root.exists() and not root.is_dir():
        raise DataError(f"data directory {str(root)!r} is a file, not a folder; point --data-dir / ${ENV_VAR} at "
                        "the folder that holds the four Fashion-MNIST .gz files")
    rows = []
    for key, (name, expected) in FILES.items():
        path = _locate(root, name)
        ok = None
        if path is not None and verify_md5 and path.suffix == ".gz":
            ok = md5sum(path) == expected
        rows.append(FileStatus(key, path, ok))
    return rows


def _missing_message(root: Path, missing: list[str], reason: str) -> str:
    names = ", ".join(FILES[k][0] for k in missing)
    return (f"Fashion-MNIST files missing in {str(root)!r}: {names} ({reason}); put the four .gz files there "
            f"(or in its FashionMNIST/raw/), or point --data-dir / ${ENV_VAR} at the folder that has them")


def download(root: Path) -> None:
    """Fetch the four files through torchvision's mirrors into `root/FashionMNIST/raw`."""
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    created = root.absolute()
    while not created.parent.exists():
        created = created.parent
    created = None if created.exists() else created  # the topmost folder this call makes, if any
    try:
        root.mkdir(parents=True, exist_ok=True)
        TorchvisionFashionMNIST(str(root), train=True, download=True)
        TorchvisionFashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # any network or mirror failure: the user's fix is the same
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)  # leave no empty folders behind a failed download
        raise DataError(_missing_message(root, [k for k, (n, _) in FILES.items() if _locate(root, n) is None],
                                         f"download failed: {exc.__class__.__name__}")) from exc


def ensure_files(root: Path, verify_md5: bool = True, allow_download: bool = True) -> dict[str, Path]:
    """Paths of the four files, downloading missing ones if allowed and checking MD5s if asked."""
    status = file_status(root, verify_md5=False)
    missing = [s.key for s in status if s.path is None]
    if missing and allow_download:
        download(root)
        status = file_status(root, verify_md5=False)
        missing = [s.key for s in status if s.path is None]
    if missing:
        raise DataError(_missing_message(root, missing, "download is off" if not allow_download else "not found"))
    paths = {s.key: s.path for s in status}
    if verify_md5:
        for key, path in paths.items():
            digest = md5sum(path) if path.suffix == ".gz" else None
            if digest is not None and digest != FILES[key][1]:
                raise DataError(f"{path}: MD5 {digest} does not match the published {FILES[key][1]}; "
                                "the file is damaged or not Fashion-MNIST (set data.verify_md5: false for "
                                "other IDX files)")
    return paths


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (gzipped or not) into an array, rejecting anything that is not one."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} "
                        f"({exc.__class__.__name__}: {exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX size mismatch: header says {shape} ({expected} bytes), file has {len(raw)}"
                        f" bytes ({'truncated' if len(raw) < expected else 'trailing data'})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64


def _read_split(paths: dict[str, Path], split: str) -> Split:
    images = read_idx(paths[f"{split}_images"])
    labels = read_idx(paths[f"{split}_labels"])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{paths[f'{split}_images']}: expected uint8 images of shape (N, 28, 28), "
                        f"got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{paths[f'{split}_labels']}: expected a 1-D label file, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{split} images and labels have different counts: {len(images)} images, "
                        f"{len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{paths[f'{split}_labels']}: labels must be 0-9, found {labels.min()}..{labels.max()}")
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    val: Split | None
    test: Split
    root: Path


def load_fashion_mnist(root: str | Path, *, verify_md5: bool = True, allow_download: bool = True,
                       subset: int | None = None, val_size: int = 0, seed: int = 0) -> FashionMNIST:
    """Decode the data set; `subset` keeps the first N training images, `val_size` carves a seeded val split."""
    root = Path(root)
    paths = ensure_files(root, verify_md5=verify_md5, allow_download=allow_download)
    train, test = _read_split(paths, "train"), _read_split(paths, "test")
    if subset is not None:
        train = Split(train.images[:subset], train.labels[:subset])
    val = None
    if val_size:
        if val_size >= len(train.labels):
            raise DataError(f"data.val_size: {val_size} leaves no training images (the training set has "
                            f"{len(train.labels)}); allowed: 0 to {len(train.labels) - 1}")
        order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed)).numpy()
        val_idx, train_idx = np.sort(order[:val_size]), np.sort(order[val_size:])
        val = Split(train.images[val_idx], train.labels[val_idx])
        train = Split(train.images[train_idx], train.labels[train_idx])
    return FashionMNIST(train, val, test, root)


def load_data(cfg: RunConfig, data_dir: str | Path | None = None) -> FashionMNIST:
    """The data set a config asks for; the validation split is drawn with the config's seed."""
    root = resolve_data_dir(data_dir, cfg.data.dir)
    return load_fashion_mnist(root, verify_md5=cfg.data.verify_md5, allow_download=cfg.data.download,
                              subset=cfg.data.subset, val_size=cfg.data.val_size, seed=cfg.seed)


# ---------------------------------------------------------------- tensors and batches


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
    def from_split(cls, split: Split, device: torch.device) -> TensorSplit:
        x = normalize(torch.from_numpy(split.images))
        return cls(x.to(device), torch.from_numpy(split.labels).to(device))

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
                    device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same batches as `fast_batches`, through torchvision transforms and a DataLoader."""
    pin = device is not None and device.type == "cuda"
    loader = torch.utils.data.DataLoader(_PilDataset(split), batch_size=batch_size, sampler=_FixedOrder(order),
                                         num_workers=num_workers, pin_memory=pin)
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
