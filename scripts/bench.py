#!/usr/bin/env python
"""Benchmark: samples/s of a training epoch, fast in-memory path vs the classic torchvision pipeline,
against the machine's measured float32 matrix-multiply peak.

    python scripts/bench.py                       # full: real data (if found), median of 3 epochs per case
    python scripts/bench.py --quick --json b.json # a fraction of an epoch per measurement, < 1 minute

Cases: MLP batch 128, MLP batch 1024, CNN batch 128 (channels_last, as `train` uses it), the CNN without
channels_last (the measurement behind that default) and the CNN with `train.precision: bf16` (autocast; both
pipelines). Every measurement follows a warm-up of the same length.
"""

from __future__ import annotations

import argparse
import itertools
import json
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
from fashionmlp.engine import seed_everything, train_one_epoch
from fashionmlp.models import build_model, train_flops_per_sample
from fashionmlp.optim import build_optimizer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist"
CASES = [("mlp", 128, True, "fp32"), ("mlp", 1024, True, "fp32"), ("cnn", 128, True, "fp32"),
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


def load_train(args) -> tuple[Split, str]:
    if args.synthetic:
        rng = np.random.default_rng(0)
        return Split(rng.integers(0, 256, (args.synthetic, 28, 28), dtype=np.uint8),
                     rng.integers(0, 10, args.synthetic).astype(np.int64)), f"synthetic ({args.synthetic} images)"
    root = Path(args.data_dir or os.environ.get(ENV_VAR) or DEFAULT_DATA)
    data = load_fashion_mnist(root, allow_download=False)
    return data.train, f"Fashion-MNIST train ({len(data.train.labels)} images, {root})"


def measure(model_name: str, batch: int, channels_last: bool, precision: str, train: Split, *,
            classic_workers: int | None, steps: int | None, repeats: int) -> float:
    """Median samples/s over `repeats` epochs (or `steps`-step slices) after one warm-up of the same length."""
    cfg = config_from_dict({"model": {"name": model_name} | ({"hidden": [128]} if model_name == "cnn" else {}),
                            "optimizer": {"name": "nesterov", "lr": 0.01, "momentum": 0.9},
                            "train": {"batch_size": batch, "channels_last": channels_last}})
    seed_everything(0)
    model = build_model(cfg.model)
    if channels_last and model_name == "cnn":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    generator = torch.Generator().manual_seed(0)
    split = TensorSplit.from_split(train, torch.device("cpu"))
    rates = []
    for i in range(repeats + 1):
        order = epoch_order(len(split), generator)
        if classic_workers is None:
            batches = fast_batches(split, batch, order)
        else:
            batches = classic_batches(train, batch, order, classic_workers)
        if steps is not None:
            batches = itertools.islice(batches, steps)
        stats = train_one_epoch(model, optimizer, batches,
                                autocast=torch.bfloat16 if precision == "bf16" else None)
        if i > 0:  # the first pass is the warm-up
            rates.append(stats.samples_per_second)
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fraction of an epoch per measurement (< 1 min)")
    parser.add_argument("--json", type=Path, help="also write the cases as a JSON list to this file")
    parser.add_argument("--data-dir", help=f"Fashion-MNIST folder (default: ${ENV_VAR}, then {DEFAULT_DATA})")
    parser.add_argument("--synthetic", type=int, metavar="N", help="use N random images instead of the data set")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per case; the median is reported")
    args = parser.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    train, source = load_train(args)
    peak = matmul_peak_gflops()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; data: {source}")
    print(f"float32 matmul peak (2048^3 torch.mm, best of 5): {peak:.1f} GFLOP/s\n")
    header = (f"{'model':<5} {'batch':>5} {'ch.last':>7} {'prec.':>5} {'fast samples/s':>15} {'classic samples/s':>18} "
              f"{'workers':>7} {'speedup':>8} {'GFLOP/sample':>12} {'achieved GFLOP/s':>16} {'of peak':>8}")
    print(header)
    cases = []
    for model_name, batch, channels_last, precision in CASES:
        steps = None
        if args.quick:
            steps = max(4, 4096 // batch)
        fast = measure(model_name, batch, channels_last, precision, train, classic_workers=None, steps=steps,
                       repeats=args.repeats)
        classic, workers = 0.0, 0
        classic_steps = None if steps is None else max(2, steps // 4)
        for w in (0, 2):
            rate = measure(model_name, batch, channels_last, precision, train, classic_workers=w, steps=classic_steps,
                           repeats=args.repeats)
            if rate > classic:
                classic, workers = rate, w
        model = build_model(config_from_dict({"model": {"name": model_name} | (
            {"hidden": [128]} if model_name == "cnn" else {})}).model)
        flops = train_flops_per_sample(model)
        achieved = fast * flops / 1e9
        case = {"model": model_name, "batch_size": batch, "channels_last": channels_last, "precision": precision,
                "fast_samples_per_s": round(fast, 1), "classic_samples_per_s": round(classic, 1),
                "classic_num_workers": workers, "speedup": round(fast / classic, 2),
                "flops_per_sample": flops, "peak_gflops": round(peak, 2), "achieved_gflops": round(achieved, 2),
                "peak_fraction": round(achieved / peak, 4)}
        cases.append(case)
        print(f"{model_name:<5} {batch:>5} {str(channels_last):>7} {precision:>5} {fast:>15,.0f} {classic:>18,.0f} "
              f"{workers:>7} "
              f"{fast / classic:>7.1f}x {flops / 1e9:>12.5f} {achieved:>16.1f} {achieved / peak:>8.1%}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(cases, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
