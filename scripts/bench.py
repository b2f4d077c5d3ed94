#!/usr/bin/env python
"""Benchmark: samples/s of a training epoch, fast in-memory path vs the classic torchvision pipeline,
against the machine's measured float32 matrix-multiply peak.

    python scripts/bench.py                       # full: real data (if found), median of 3 epochs per case
    python scripts/bench.py --quick --json b.json # a fraction of an epoch per measurement, < 1 minute
    python scripts/bench.py --population 4,12     # the population engine: N models at once vs one by one

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


def population_cases(sizes: list[int], args) -> list[dict]:
    """Per network and size N: N models of one shape (optimizers of the study, seeds 0..) trained for
    --population-epochs epochs on the population engine, then the same N one after another with `train`;
    training seconds per model-epoch from the runs' summary.json (evaluation excluded), each order run once."""
    import tempfile

    from fashionmlp.config import with_values
    from fashionmlp.population import MemberSpec, train_population
    from fashionmlp.run import train as train_run
    from fashionmlp.study import DEFAULT_VARIANTS

    root = str(Path(args.data_dir or os.environ.get(ENV_VAR) or DEFAULT_DATA))
    variants = list(DEFAULT_VARIANTS.values())
    cases = []
    for model_name in args.population_models.split(","):
        base = config_from_dict({"model": {"name": model_name}, "device": args.device,
                                 "data": {"dir": root, "subset": args.population_subset},
                                 "train": {"epochs": args.population_epochs}})
        for n in sizes:
            cfgs = [with_values(base, {"seed": i // len(variants), "optimizer": variants[i % len(variants)],
                                       "name": f"m{i}"}) for i in range(n)]
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                pop = train_population([MemberSpec(c, Path(tmp) / "p" / c.name, c.name) for c in cfgs])
                pop_wall = time.perf_counter() - started
                started = time.perf_counter()
                single = [train_run(c, run_dir=Path(tmp) / "s" / c.name) for c in cfgs]
                seq_wall = time.perf_counter() - started
            per = [sum(r.summary["train_seconds"] for r in rs) / (n * args.population_epochs) for rs in (pop, single)]
            case = {"model": model_name, "device": args.device, "members": n, "epochs": args.population_epochs,
                    "images": pop[0].summary["data"]["train_size"],
                    "population_s_per_model_epoch": round(per[0], 4), "sequential_s_per_model_epoch": round(per[1], 4),
                    "train_speedup": round(per[1] / per[0], 2), "population_wall_s": round(pop_wall, 2),
                    "sequential_wall_s": round(seq_wall, 2), "wall_speedup": round(seq_wall / pop_wall, 2)}
            cases.append(case)
            print(f"{model_name:<5} N={n:<3} s per model-epoch: population {per[0]:.4f}, one by one {per[1]:.4f} "
                  f"({per[1] / per[0]:.2f}x); wall with evaluation and run folders: {pop_wall:.1f} s vs "
                  f"{seq_wall:.1f} s ({seq_wall / pop_wall:.2f}x)", flush=True)
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fraction of an epoch per measurement (< 1 min)")
    parser.add_argument("--json", type=Path, help="also write the cases as a JSON list to this file")
    parser.add_argument("--data-dir", help=f"Fashion-MNIST folder (default: ${ENV_VAR}, then {DEFAULT_DATA})")
    parser.add_argument("--synthetic", type=int, metavar="N", help="use N random images instead of the data set")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per case; the median is reported")
    parser.add_argument("--population", metavar="N,N", help="instead: the population engine with N models at once "
                                                            "vs one after another (e.g. 4,12)")
    parser.add_argument("--population-models", default="mlp", help="networks of the population cases: mlp,cnn")
    parser.add_argument("--population-epochs", type=int, default=2, help="epochs per model in the population cases")
    parser.add_argument("--population-subset", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--device", default="cpu", help="the population cases' device (cpu, cuda)")
    args = parser.parse_args(argv)
    set_threads()  # as `train` does: one thread per idle core, freed memory kept for reuse
    keep_freed_memory()
    if args.population:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
              + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
        cases = population_cases([int(n) for n in args.population.split(",")], args)
        if args.json:
            args.json.write_text(json.dumps(cases, indent=2) + "\n")
        return 0
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
