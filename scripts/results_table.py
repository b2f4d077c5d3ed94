#!/usr/bin/env python
"""Markdown table of finished runs: `python scripts/results_table.py RUNS_DIR` (one row per run folder)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from fashionmlp.tracking import read_metrics


def main(runs_dir: str) -> int:
    rows = []
    for summary_path in sorted(Path(runs_dir).glob("*/summary.json")):
        run = summary_path.parent
        s = json.loads(summary_path.read_text())
        metrics = read_metrics(run / "metrics.csv")
        if not metrics:
            continue
        rows.append((run.name.rsplit("-", 2)[0], s["model"], s["optimizer"], s["lr"], s["status"], s["epochs"],
                     s["final"]["test_accuracy"], s["best"]["test_accuracy"], s["best"]["epoch"],
                     statistics.median(r["seconds"] for r in metrics), s["seconds"]))
    print("| config | model | optimizer | lr | status | epochs | final test acc | best test acc (epoch) "
          "| s/epoch (median, training) | run wall time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, model, opt, lr, status, epochs, final, best, best_epoch, per_epoch, wall in rows:
        print(f"| {name} | {model} | {opt} | {lr:g} | {status} | {epochs} | {final:.2%} | {best:.2%} ({best_epoch}) "
              f"| {per_epoch:.2f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
