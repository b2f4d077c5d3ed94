"""Test helpers: tiny Fashion-MNIST-format IDX data, configs for it, the CLI in-process, run folders read back."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fashionmlp.cli import app


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def run_dir_of(result) -> Path:
    """The run folder a `train` invocation printed (its last stdout line)."""
    return Path(result.stdout.strip().splitlines()[-1])


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    found = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    _same_in_the_other_backend(run_dir, found)
    return found


def _same_in_the_other_backend(run_dir: Path, found: dict[str, list[tuple[int, float]]]) -> None:
    """`tensorboard --load_fast=false` reads events with another accumulator, which takes a log's first
    session start for the first run (a resumed run's log showed its last checkpointed epoch twice there)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    for tag, points in found.items():
        assert [e.step for e in acc.Tensors(tag)] == [step for step, _ in points], tag


def accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


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


def tiny_config(data_dir: Path, **sections) -> dict:
    """A complete config for the tiny data set: 2 quick epochs of the MLP on the CPU."""
    cfg = {
        "name": "tiny", "seed": 0, "device": "cpu",
        "model": {"name": "mlp", "hidden": [32, 32]},
        "optimizer": {"name": "adam", "lr": 0.01},
        # one thread: tiny steps are faster on one, and runs compared bit for bit must not depend on the load
        "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 64, "threads": 1},
        "data": {"dir": str(data_dir), "verify_md5": False, "download": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg
