"""Shared fixtures: tiny Fashion-MNIST-format IDX files and configs that point at them."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import settings

# The same generated examples on every run: a property test that fails, fails every time.
# (HYPOTHESIS_PROFILE=explore draws new examples, to hunt for failures on purpose.)
settings.register_profile("fashionmlp", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fashionmlp"))

REAL_DATA_CANDIDATES = [os.environ.get("FASHIONMLP_DATA_DIR"),
                        str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist")]
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable synthetic images: class k lights a 7x7 patch at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 4)
        images[i, 7 * r: 7 * r + 7, 7 * c: 7 * c + 7] += 150
    return images, labels


def write_dataset(root: Path, n_train: int = 320, n_test: int = 160, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_images(n_train, 1)
    test_x, test_y = make_images(n_test, 2)
    for name, arr in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                      ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        data = idx_bytes(arr)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("fmnist"))


def tiny_config(data_dir: Path, **sections) -> dict:
    """A complete config for the tiny data set: 2 quick epochs of the MLP on the CPU."""
    cfg = {
        "name": "tiny", "seed": 0, "device": "cpu",
        "model": {"name": "mlp", "hidden": [32, 32]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 64},
        "data": {"dir": str(data_dir), "verify_md5": False, "download": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def write_config(tmp_path, tiny_data):
    """write_config(**sections) -> path of a YAML config based on tiny_config."""

    def write(name: str = "cfg.yaml", **sections) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_config(tiny_data, **sections)))
        return path

    return write


@pytest.fixture(scope="session")
def real_data() -> Path:
    for candidate in REAL_DATA_CANDIDATES:
        if candidate and all((Path(candidate) / f).is_file() for f in TRAIN_FILES):
            return Path(candidate)
    pytest.skip("real Fashion-MNIST files not found (set FASHIONMLP_DATA_DIR)")
