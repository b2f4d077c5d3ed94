#!/usr/bin/env python
"""Benchmark: samples/s of a training epoch, fast in-memory path vs the classic torchvision pipeline,
against the machine's measured float32 matrix-multiply peak.

    python scripts/bench.py                       # full: real data (if found), median of 3 epochs per case
    python scripts/bench.py --quick --json b.json # a fraction of an epoch per measurement, < 1 minute

Each case measures the fast path and the classic pipeline (num_workers 0 and 2) in alternating rounds.
Cases: MLP batch 128, MLP batch 1024, CNN batch 128 (channels_last, as `train` uses it), the CNN without
channels_last (the measurement behind that default) and the CNN with `train.precision: bf16` (autocast; both
pipelines). Every measurement follows a warm-up of the same length.

Each round also measures how much of the machine's parallelism is there at that moment ("scaling": a small
matrix multiply on all threads vs on one; about 1.9 on two cores that serve at once). On a shared VM it drops in
slow spells (to ~1.5 on this project's machine), and then the fast path, which needs both cores, loses more than
the classic pipeline, whose per-sample Python work runs on one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fashionmlp.config import config_from_dict
from fashionmlp.data import ENV_VAR, Split, TensorSplit, classic_batches, epoch_order, fast_batches, load_fashion_mnist
from fashionmlp.device import keep_freed_memory, prepare_model, set_threads
from fashionmlp.engine import Recipe, seed_everything, train_one_epoch
from fashionmlp.models import build_model, train_flops_per_sample
from fashionmlp.optim import build_optimizer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist"
CASES = [("mlp", 128, None, "fp32"), ("mlp", 1024, None, "fp32"), ("cnn", 128, True, "fp32"),
         ("cnn", 128, False, "fp32"), ("cnn", 128, True, "bf16")]


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n x n @ n x n torch.mm (2 n^3 flops) over `repeats` runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def core_scaling(repeats: int = 300) -> float:
    """Speed of a small matmul on all intra-op threads over its speed on one thread (best of 3 each).

    The shape is the MLP's first layer at batch 128, (128, 784) @ (784, 100): ~100 us per call, so it feels
    the cost of starting and joining threads as the training steps do (a large matmul hides it).
    """
    a, b = torch.randn(128, 784), torch.randn(784, 100)
    threads = torch.get_num_threads()

    def seconds() -> float:
        torch.mm(a, b)
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        return best

    torch.set_num_threads(1)
    try:
        single = seconds()
    finally:
        torch.set_num_threads(threads)
    return single / seconds()


def load_train(args) -> tuple[Split, str]:
    if args.synthetic:
        rng = np.random.default_rng(0)
        return Split(rng.integers(0, 256, (args.synthetic, 28, 28), dtype=np.uint8),
                     rng.integers(0, 10, args.synthetic).astype(np.int64)), f"synthetic ({args.synthetic} images)"
    root = Path(args.data_dir or os.environ.get(ENV_VAR) or DEFAULT_DATA)
    data = load_fashion_mnist(root, allow_download=False)
    return data.train, f"Fashion-MNIST train ({len(data.train.labels)} images, {root})"


class Pipeline:
    """One model + optimizer fed by one pipeline (fast, or classic with `workers`); `epoch()` returns samples/s."""

    def __init__(self, model_name: str, batch: int, channels_last: bool | None, precision: str, train: Split,
                 split: TensorSplit, workers: int | None, steps: int | None):
        cfg = config_from_dict({"model": {"name": model_name}, "device": "cpu",
                                "optimizer": {"name": "nesterov", "lr": 0.01, "momentum": 0.9},
                                "train": {"channels_last": bool(channels_last)}})
        seed_everything(0)
        self.model = prepare_model(cfg, torch.device("cpu"))  # the layout rule `train` uses
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters())
        self.generator = torch.Generator().manual_seed(0)
        self.train, self.split, self.batch, self.workers, self.steps = train, split, batch, workers, steps
        self.autocast = torch.bfloat16 if precision == "bf16" else None
        self.rates: list[float] = []

    def epoch(self, record: bool = True) -> None:
        order = epoch_order(len(self.split), self.generator)
        if self.workers is None:
            batches = fast_batches(self.split, self.batch, order)
        else:
            batches = classic_batches(self.train, self.batch, order, self.workers)
        if self.steps is not None:
            batches = itertools.islice(batches, self.steps)
        stats = train_one_epoch(self.model, self.optimizer, batches, Recipe(autocast=self.autocast))
        if record:
            self.rates.append(stats.samples_per_second)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def measure_case(model_name: str, batch: int, channels_last: bool | None, precision: str, train: Split,
                 split: TensorSplit, *, quick: bool, repeats: int) -> tuple[float, float, int, float]:
    """(fast samples/s, best classic samples/s, its num_workers, core scaling): medians over `repeats` rounds
    after a warm-up.

    The pipelines take turns within each round, so a slow spell of the machine (shared VMs have them) falls
    on all of them instead of on one; it still slows the fast path more (see `core_scaling`).
    """
    steps = max(4, 4096 // batch) if quick else None
    classic_steps = None if steps is None else max(2, steps // 4)
    fast = Pipeline(model_name, batch, channels_last, precision, train, split, None, steps)
    classics = [Pipeline(model_name, batch, channels_last, precision, train, split, w, classic_steps) for w in (0, 2)]
    pipelines = [fast, *classics]
    for p in pipelines:
        p.epoch(record=False)  # warm-up
    scaling = []
    for _ in range(repeats):
        scaling.append(core_scaling())
        for p in pipelines:
            p.epoch()
    best = max(classics, key=lambda p: p.median)
    return fast.median, best.median, best.workers, statistics.median(scaling)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fraction of an epoch per measurement (< 1 min)")
    parser.add_argument("--json", type=Path, help="also write the cases as a JSON list to this file")
    parser.add_argument("--data-dir", help=f"Fashion-MNIST folder (default: ${ENV_VAR}, then {DEFAULT_DATA})")
    parser.add_argument("--synthetic", type=int, metavar="N", help="use N random images instead of the data set")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per case; the median is reported")
    args = parser.parse_args(argv)
    set_threads()  # as `train` does: one thread per core, freed memory kept for reuse
    keep_freed_memory()
    train, source = load_train(args)
    peak = matmul_peak_gflops()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; data: {source}")
    print(f"float32 matmul peak (2048^3 torch.mm, best of 5): {peak:.1f} GFLOP/s\n")
    header = (f"{'model':<5} {'batch':>5} {'ch.last':>7} {'prec.':>5} {'fast samples/s':>15} {'classic samples/s':>18} "
              f"{'workers':>7} {'speedup':>8} {'GFLOP/sample':>12} {'achieved GFLOP/s':>16} {'of peak':>8} "
              f"{'scaling':>7}")
    print(header)
    cases = []
    split = TensorSplit.from_split(train, torch.device("cpu"))
    for model_name, batch, channels_last, precision in CASES:
        fast, classic, workers, scaling = measure_case(model_name, batch, channels_last, precision, train, split,
                                                       quick=args.quick, repeats=args.repeats)
        model = build_model(config_from_dict({"model": {"name": model_name}}).model)
        flops = train_flops_per_sample(model)
        achieved = fast * flops / 1e9
        case = {"model": model_name, "batch_size": batch, "channels_last": channels_last, "precision": precision,
                "fast_samples_per_s": round(fast, 1), "classic_samples_per_s": round(classic, 1),
                "classic_num_workers": workers, "speedup": round(fast / classic, 2),
                "flops_per_sample": flops, "peak_gflops": round(peak, 2), "achieved_gflops": round(achieved, 2),
                "peak_fraction": round(achieved / peak, 4), "core_scaling": round(scaling, 2)}
        cases.append(case)
        layout = "-" if channels_last is None else str(channels_last)
        print(f"{model_name:<5} {batch:>5} {layout:>7} {precision:>5} {fast:>15,.0f} {classic:>18,.0f} "
              f"{workers:>7} "
              f"{fast / classic:>7.1f}x {flops / 1e9:>12.5f} {achieved:>16.1f} {achieved / peak:>8.1%} "
              f"{scaling:>6.2f}x",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(cases, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
