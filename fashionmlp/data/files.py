"""Fashion-MNIST on disk: finding, verifying (MD5), downloading and decoding the IDX files, and the splits a
config asks for (a subset, a validation split drawn with the seed)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashionmlp.config import RunConfig
from fashionmlp.errors import DataError, DataMissing

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # pixel mean and std of the 60,000 training images, on the [0, 1] scale

FILES = {  # split/kind -> (file name, MD5 of the published .gz)
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
UNZIPPED_MD5 = {  # split/kind -> MD5 of the file the published .gz holds (gunzip of the verified .gz files)
    "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
    "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
    "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
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
            try:
                found = candidate.is_file()
            except OSError as exc:  # a folder this user may not read: PermissionError's traceback
                raise DataError(f"cannot look into {str(folder)!r} ({exc.strerror or exc})") from None
            if found:
                return candidate
    return None


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:  # an unreadable file was a traceback (PermissionError), where reading it is one line
        raise DataError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc.strerror or exc})") from None
    return digest.hexdigest()


def expected_md5(key: str, path: Path) -> str:
    """The MD5 the file at `path` must have: the published .gz's, or that of the file it holds when unzipped."""
    return FILES[key][1] if path.suffix == ".gz" else UNZIPPED_MD5[key]


@dataclass(frozen=True)
class FileStatus:
    key: str
    path: Path | None
    md5_ok: bool | None  # None: not checked (missing, or verify_md5 off)


# what may name the data folder (a config's data.dir too: the value at fault may be one)
WHERE_TO = f"--data-dir, ${ENV_VAR} or a config's data.dir"


def file_status(root: Path, verify_md5: bool = True) -> list[FileStatus]:
    if root.is_symlink() and not root.exists():  # it was called missing, and a download into it tried
        raise DataError(f"data directory {str(root)!r} is a symbolic link that leads nowhere (to "
                        f"{os.readlink(root)!r}: a missing folder, or a loop of links); point {WHERE_TO} at the "
                        "folder that holds the four Fashion-MNIST .gz files")
    if root.exists() and not root.is_dir():
        raise DataError(f"data directory {str(root)!r} is a file, not a folder; point {WHERE_TO} at the folder that "
                        "holds the four Fashion-MNIST .gz files")
    rows = []
    for key, (name, _) in FILES.items():
        path = _locate(root, name)
        ok = None
        if path is not None and verify_md5:
            ok = md5sum(path) == expected_md5(key, path)
        rows.append(FileStatus(key, path, ok))
    return rows


def _missing_message(root: Path, missing: list[str], reason: str) -> str:
    names = ", ".join(FILES[k][0] for k in missing)
    return (f"Fashion-MNIST files missing in {str(root)!r}: {names} ({reason}); put the .gz files there "
            f"(or in its FashionMNIST/raw/), or point {WHERE_TO} at the folder that has them")


def download(root: Path, keys: tuple[str, ...] = tuple(FILES)) -> None:
    """Fetch the files `keys` name (their splits: torchvision fetches a split's two files together) through
    torchvision's mirrors into `root/FashionMNIST/raw`."""
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    # the topmost folder this call (or torchvision, which adds FashionMNIST/raw) makes, if any: inside an existing
    # folder too (a failed lookup in a run folder left an empty FashionMNIST/raw in it)
    created = (root / "FashionMNIST" / "raw").absolute()
    while not created.parent.exists():
        created = created.parent
    created = None if created.exists() else created
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            if any(key.startswith("train" if train else "test") for key in keys):
                TorchvisionFashionMNIST(str(root), train=train, download=True)
    except BaseException as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)  # leave no empty folders behind a failed download
        # a network, mirror or disk failure (URLError and gzip's errors are OSErrors; torchvision says RuntimeError for
        # a failed fetch or MD5; a cut connection can be http.client's IncompleteRead or a truncated archive's
        # EOFError): the user's fix is the same. Anything else (a bug, Ctrl-C) raises as it is.
        if not isinstance(exc, (OSError, RuntimeError, EOFError, http.client.HTTPException)):
            raise
        why = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else ""  # e.g. "Name or service not known"
        raise DataMissing(_missing_message(root, [k for k in keys if _locate(root, FILES[k][0]) is None],
                                         f"download failed: {exc.__class__.__name__}" + (f": {why}" if why else ""))
                          ) from exc


def ensure_files(root: Path, verify_md5: bool = True, allow_download: bool = True,
                 keys: tuple[str, ...] = tuple(FILES)) -> dict[str, Path]:
    """Paths of the files `keys` name (all four by default), downloading missing ones if allowed and checking
    MD5s if asked."""
    status = [s for s in file_status(root, verify_md5=False) if s.key in keys]
    missing = [s.key for s in status if s.path is None]
    if missing and allow_download:
        download(root, keys)
        status = [s for s in file_status(root, verify_md5=False) if s.key in keys]
        missing = [s.key for s in status if s.path is None]
    if missing:
        raise DataMissing(_missing_message(root, missing, "download is off" if not allow_download else "not found"))
    paths = {s.key: s.path for s in status}
    if verify_md5:
        for key, path in paths.items():
            digest, expected = md5sum(path), expected_md5(key, path)
            if digest != expected:
                what = "the published" if path.suffix == ".gz" else "Fashion-MNIST's unzipped"
                raise DataError(f"{path}: MD5 {digest} does not match {what} {expected}; "
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


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(training indices, validation indices or None) of n training images: the validation images are a
    random draw of val_size, seeded with the run's seed; both index lists sorted."""
    if not val_size:
        return np.arange(n), None
    if val_size >= n:
        raise DataError(f"data.val_size: {val_size} leaves no training images (the training set has {n}); "
                        f"allowed: 0 to {n - 1}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def load_fashion_mnist(root: str | Path, *, verify_md5: bool = True, allow_download: bool = True,
                       subset: int | None = None, val_size: int = 0, seed: int = 0) -> FashionMNIST:
    """Decode the data set; `subset` keeps the first N training images, `val_size` carves a seeded val split."""
    root = Path(root)
    paths = ensure_files(root, verify_md5=verify_md5, allow_download=allow_download)
    train, test = _read_split(paths, "train"), _read_split(paths, "test")
    if subset is not None:
        if subset > len(train.labels):  # config.yaml said 70000 while 60,000 were used
            raise DataError(f"data.subset: {subset:,} is more than the {len(train.labels):,} training images in "
                            f"{str(root)!r}")
        train = Split(train.images[:subset], train.labels[:subset])
    train_idx, val_idx = split_indices(len(train.labels), val_size, seed)
    val = None if val_idx is None else Split(train.images[val_idx], train.labels[val_idx])
    if val_idx is not None:
        train = Split(train.images[train_idx], train.labels[train_idx])
    return FashionMNIST(train, val, test, root)


def load_test(cfg: RunConfig, data_dir: str | Path | None = None) -> Split:
    """The test split alone, for commands that score a saved model (evaluate, inspect, predict): they asked for
    the training files too, and downloaded them (30 MB) where only the test files were."""
    root = resolve_data_dir(data_dir, cfg.data.dir)
    paths = ensure_files(root, verify_md5=cfg.data.verify_md5, allow_download=cfg.data.download,
                         keys=("test_images", "test_labels"))
    return _read_split(paths, "test")


def load_data(cfg: RunConfig, data_dir: str | Path | None = None) -> FashionMNIST:
    """The data set a config asks for; the validation split is drawn with the config's seed."""
    root = resolve_data_dir(data_dir, cfg.data.dir)
    return load_fashion_mnist(root, verify_md5=cfg.data.verify_md5, allow_download=cfg.data.download,
                              subset=cfg.data.subset, val_size=cfg.data.val_size, seed=cfg.seed)
