#!/usr/bin/env python
"""The recipe's ablation (docs/recipe.md): add one ingredient at a time to a faithful config, then the tuned
config over several seeds; prints a Markdown table of test accuracy, s/epoch and time to accuracy.

    python scripts/recipe_ablation.py --network cnn --data-dir ../shared/data/fashion-mnist
    python scripts/recipe_ablation.py --network mlp --seeds 0,1,2 --data-dir ...

Every row is an ordinary `fashionmlp train` run (folders under --runs-dir), on the full training set, scored
on the test set once at the end: the settings themselves were chosen on a validation split beforehand
(docs/recipe.md says how). Runs one training at a time; for the s/epoch column keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from fashionmlp.config import load_config
from fashionmlp.data import load_data
from fashionmlp.recorder import TIME_TO_ACCURACY
from fashionmlp.run import train
from fashionmlp.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]

# Each row adds its overrides to all the rows above it, starting from configs/<network>_nesterov.yaml; values
# as in the tuned configs (label smoothing: 0.2 for the MLP, 0.1 for the CNN).
def rows(network: str) -> list[tuple[str, list[str]]]:
    smoothing = 0.2 if network == "mlp" else 0.1
    return [
        ("faithful: Nesterov, lr 0.01, constant", []),
        ("+ one-cycle schedule (peak lr 0.1, 20% warm-up), weight decay 5e-4 on weights",
         ["optimizer.lr=0.1", "optimizer.schedule=onecycle", "optimizer.warmup=0.2", "optimizer.weight_decay=5e-4",
          "optimizer.decay_params=weights"]),
        (f"+ label smoothing {smoothing}", [f"train.label_smoothing={smoothing}"]),
        ("+ BatchNorm", ["model.batchnorm=true"]),
        ("+ augmentation: shift ±1 px, flip", ["data.shift=1", "data.flip=true"]),
        ("+ EMA of the weights (0.999)", ["train.ema=0.999"]),
        ("+ flip TTA", ["train.tta=flip"]),
    ]


def median_epoch_seconds(history: list[dict]) -> float:
    """The median training seconds of an epoch, the first (warm-up) epoch left out when there are others."""
    seconds = [r["seconds"] for r in history]
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def run(config: Path, overrides: list[str], args: argparse.Namespace, data) -> dict:
    cfg = load_config(config, overrides)
    result = train(cfg, runs_dir=args.runs_dir, data=data)
    if result.status != "completed":
        sys.exit(f"{config} {overrides}: the run ended {result.status} ({result.run_dir})")
    s = result.summary
    history = read_metrics(result.run_dir / "metrics.csv")
    return {"accuracy": s["final"]["test_accuracy"], "epoch_seconds": median_epoch_seconds(history),
            "time_to_accuracy": s["time_to_accuracy"], "n_params": s["n_params"], "run_dir": str(result.run_dir)}


def _times(row: dict) -> str:
    return " | ".join(f"{row['time_to_accuracy'][f'{level:.0%}']:.0f}" if f"{level:.0%}" in row["time_to_accuracy"]
                      else "–" for level in TIME_TO_ACCURACY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=["mlp", "cnn"], required=True)
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the tuned config's row (comma-separated)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--skip-ablation", action="store_true", help="only the tuned config's seeds")
    args = parser.parse_args()
    faithful = ROOT / "configs" / f"{args.network}_nesterov.yaml"
    tuned = ROOT / "configs" / f"{args.network}_tuned.yaml"
    data = load_data(load_config(faithful), args.data_dir)
    levels = " | ".join(f"{level:.0%}" for level in TIME_TO_ACCURACY)
    print(f"| {args.network} | test accuracy (seed 0) | s/epoch | ×faithful | s to {levels} |")
    print("|---|---|---|---|" + "---|" * len(TIME_TO_ACCURACY))
    done, overrides = [], []
    if not args.skip_ablation:
        for label, extra in rows(args.network):
            overrides = overrides + extra
            name = [] if not done else [f"name={args.network}_ablation{len(done)}"]  # row 0: the faithful run
            done.append(run(faithful, overrides + name, args, data))
            r = done[-1]
            print(f"| {label} | {r['accuracy']:.2%} | {r['epoch_seconds']:.2f} | "
                  f"{r['epoch_seconds'] / done[0]['epoch_seconds']:.2f} | {_times(r)} |", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [run(tuned, [f"seed={seed}"], args, data) for seed in seeds]
    accuracies = [r["accuracy"] for r in runs]
    spread = f" ± {statistics.stdev(accuracies):.2%}" if len(runs) > 1 else ""
    base = done[0]["epoch_seconds"] if done else float("nan")
    print(f"| **{tuned.name}** ({runs[0]['n_params']:,} parameters), seeds {args.seeds} | "
          f"{runs[0]['accuracy']:.2%} (seed {seeds[0]}); mean {statistics.fmean(accuracies):.2%}{spread} "
          f"(n={len(runs)}: {', '.join(f'{a:.2%}' for a in accuracies)}) | {runs[0]['epoch_seconds']:.2f} | "
          f"{runs[0]['epoch_seconds'] / base:.2f} | {_times(runs[0])} |")
    for r in done + runs:
        print(f"  {r['run_dir']}", file=sys.stderr)


if __name__ == "__main__":
    main()
