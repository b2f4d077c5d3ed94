"""What a study reports: a row per variant (mean ± std over its seeds), summary.md, summary.csv,
comparison.png, and in TensorBoard each variant's mean curve with a band of ± one standard deviation."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashionmlp import status as st
from fashionmlp.plots import comparison, plural, seed_spread
from fashionmlp.plots.common import loss_text
from fashionmlp.plots.study import CUT_BAND, band_low, seeds_over
from fashionmlp.run import steps_per_epoch
from fashionmlp.study.config import CHANCE, FAILED_MARGIN, Study
from fashionmlp.tracking import atomic_write, save_figure, write_csv

if TYPE_CHECKING:
    from fashionmlp.study.run import VariantOutcome

FINISHED = (st.COMPLETED, st.FAILED_TO_LEARN)  # the statuses of runs that reached their end
NOT_STARTED = "not started"  # a planned run a stop came before (no run folder, or none it wrote anything in)
SUMMARY_COLUMNS = ["optimizer", "lr", "momentum", "n", "runs", "final_train_loss", "final_test_loss",
                   "final_test_accuracy", "final_test_accuracy_std", "best_test_accuracy", "best_test_accuracy_std",
                   "best_epoch", "seconds_per_epoch", "status"]


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1) of the finite values; no std (None: an empty cell in
    summary.csv) for a single value, where it is undefined."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None


def summarize(outcomes: list[VariantOutcome], study: Study, planned: int = 0) -> list[dict]:
    """One row per variant (mean over seeds), sorted by final test accuracy, best first; `planned` runs per
    variant (its seeds), of which those with no outcome are "not started" (an interrupted sequential study
    called a variant with 1 of its 2 runs "completed", runs 1)."""
    rows = []
    for name, cfg in study.variants.items():
        runs = [o for o in outcomes if o.name == name]
        if not runs and not planned:  # (with `planned`, a variant a stop kept from starting has a row: not started)
            continue
        missing = max(0, planned - len(runs))
        done = [o for o in runs if o.status in FINISHED]  # the means: runs that reached their end, and only those
        finals = [o.summary["final"] for o in done]
        acc, acc_std = _mean_std([f["test_accuracy"] for f in finals])
        best = [b for b in (_best_of(o) for o in done) if b is not None]
        best_acc, best_std = _mean_std([b["test_accuracy"] for b in best])
        rows.append({
            "optimizer": name, "lr": cfg.optimizer.lr,
            "momentum": cfg.optimizer.momentum if cfg.optimizer.name in ("sgd", "nesterov") else None,
            "n": len(done), "runs": len(runs) + missing,
            "final_train_loss": _mean_std([f["train_loss"] for f in finals])[0],
            "final_test_loss": _mean_std([f["test_loss"] for f in finals])[0],
            "final_test_accuracy": acc, "final_test_accuracy_std": acc_std,
            "best_test_accuracy": best_acc, "best_test_accuracy_std": best_std,
            "best_epoch": int(best[0]["epoch"]) if len(best) == 1 else (
                round(statistics.fmean(b["epoch"] for b in best), 1) if best else None),
            "best_epochs": (int(min(b["epoch"] for b in best)), int(max(b["epoch"] for b in best))) if best else None,
            "seconds_per_epoch": _mean_std([r["seconds"] for o in runs for r in o.history])[0],
            "status": _statuses([o.status for o in runs] + [NOT_STARTED] * missing),
        })
    return sorted(rows, key=lambda r: -r["final_test_accuracy"] if math.isfinite(r["final_test_accuracy"])
                  else math.inf)


def _best_of(outcome: VariantOutcome) -> dict | None:
    """The run's own best epoch (summary.json's `best`): chosen on its validation split when it has one (the
    epoch early stopping restores), else its highest test accuracy; the history's highest test accuracy for a
    summary without one."""
    best = outcome.summary.get("best") if isinstance(outcome.summary, dict) else None
    if isinstance(best, dict) and "epoch" in best and "test_accuracy" in best:
        return best
    return max(outcome.history, key=lambda r: r["test_accuracy"]) if outcome.history else None


def _status_note(row: dict, outcomes: list[VariantOutcome]) -> str:
    """What the status of a row's runs means, said of as many of them as it concerns."""
    runs = [o for o in outcomes if o.name == row["optimizer"]]
    diverged = sum(o.status == st.DIVERGED for o in runs)
    failed = [o for o in runs if o.status == st.FAILED_TO_LEARN]
    parts = []
    if diverged:
        parts.append(("the loss became non-finite and the run stopped early" if row["runs"] == 1 else
                      f"in {diverged} of its {row['runs']} runs the loss became non-finite and they stopped early")
                     + " (summary.json has the epoch and step)")
    if failed:
        accuracy = statistics.fmean(o.summary["final"]["test_accuracy"] or 0.0 for o in failed)
        parts.append((f"final test accuracy {_pct(accuracy)} is" if len(failed) == row["runs"] else
                      f"{len(failed)} of its {row['runs']} runs ended at {_pct(accuracy)} on average,")
                     + f" within {FAILED_MARGIN * 100:g} percentage points of chance ({CHANCE:.0%}): the network "
                       "did not learn")
    stopped = sum(o.status == st.INTERRUPTED for o in runs)
    if stopped:
        parts.append(f"{stopped} of its {row['runs']} runs were interrupted (--resume continues them)")
    missing = row["runs"] - len(runs)
    if missing:
        parts.append(f"{missing} of its {row['runs']} runs did not start (--resume trains them)")
    return "; ".join(parts) + "." if parts else ""


def first_column(kind: str) -> str:
    """What the table's first column holds: the variant of an optimizer comparison, or a seeds study's config."""
    return "optimizer" if kind == "compare" else "config"


def unfinished(outcomes: list[VariantOutcome], name: str, runs: int = 0) -> str:
    """How the runs of `name` that did not reach their end ended, e.g. "diverged (1), interrupted (1)"; of
    `runs` planned, those with no outcome are "not started"."""
    mine = [o for o in outcomes if o.name == name]
    counts = Counter(o.status for o in mine if o.status not in FINISHED)
    if runs > len(mine):
        counts[NOT_STARTED] = runs - len(mine)
    return _counted(counts)


def _counted(counts: Counter) -> str:
    return ", ".join(f"{status} ({count})" for status, count in sorted(counts.items()))


def _statuses(statuses: list[str]) -> str:
    """The runs' status: one word when they agree, else each with its count, e.g. "completed (2), diverged (1)"."""
    counts = Counter(statuses)
    return statuses[0] if len(counts) == 1 else _counted(counts)


def _pct(value: float | None, std: float | None = None, n: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2%}" + (f" ± {std:.2%}" if n > 1 and std is not None and math.isfinite(std) else "")


def _epochs(row: dict) -> str:
    """The epoch(s) of the row's best test accuracies: '19', or '14-20' over seeds (not a mean epoch: '19.7')."""
    low_high = row.get("best_epochs")
    if low_high is None:
        return "-" if row.get("best_epoch") is None else f"{row['best_epoch']:g}"
    low, high = low_high
    return f"{low}" if low == high else f"{low}-{high}"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else loss_text(value, digits)


def table_rows(rows: list[dict], first: str = "optimizer") -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the summary table (shared by summary.md and the terminal); `first` names the
    first column (a study of seeds lists its config there). The means are over each row's n finished runs:
    the header says n when every row has the same, else each cell does."""
    counts = {r["n"] for r in rows if r["n"]}  # a row with no finished run shows "-", not a count
    common = counts.pop() if len(counts) == 1 else None
    most = max((r["n"] for r in rows), default=1)
    spread = "" if most <= 1 else f" (mean ± std, n={common})" if common is not None else " (mean ± std)"
    header = [first, "lr", "momentum", "final train loss", "final test loss", "final test acc" + spread,
              "best test acc (epoch)", "s/epoch", "status"]
    cells = []
    for r in rows:
        n = "" if common is not None or not r["n"] else f" (n={r['n']})"
        cells.append([r["optimizer"], f"{r['lr']:g}", "-" if r["momentum"] is None else f"{r['momentum']:g}",
                      _num(r["final_train_loss"]), _num(r["final_test_loss"]),
                      _pct(r["final_test_accuracy"], r["final_test_accuracy_std"], r["n"]) + n,
                      f"{_pct(r['best_test_accuracy'], r['best_test_accuracy_std'], r['n'])} ({_epochs(r)})",
                      _num(r["seconds_per_epoch"], 2), r["status"]])
    return header, cells


def markdown_table(rows: list[dict], first: str = "optimizer") -> str:
    header, cells = table_rows(rows, first)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def _best_note(base) -> list[str]:
    """What the table's best test accuracy is: the epoch validation chose, or the highest test accuracy."""
    if base.data.val_size:
        return [f"- best test acc: each run's test accuracy at the epoch its validation split ({base.data.val_size:,} "
                "images) chose" + (" (the epoch early stopping restored)" if base.train.patience is not None else "")]
    return ["- best test acc: each run's highest test accuracy over its epochs (no validation split: chosen on "
            "the test set, so optimistic; the final column is the honest one)"]


def _trained_how(outcomes: list[VariantOutcome], engine: str) -> str:
    """How the runs trained, from their summaries: a run of a population study continued alone with `train
    --resume` says `engine: single`, where the study's summary.md said every run trained at once."""
    alone = [o.run_dir.name for o in outcomes if o.summary.get("engine") == "single"]
    if engine != "population" or len(alone) == len(outcomes):
        return "Trained one run after another."
    together = (f"Trained on the population engine, {plural(len(outcomes) - len(alone), 'model')} at once: s/epoch "
                "is each model's share of the population's epoch")
    if not alone:
        return together + "."
    each = "each " if len(alone) > 1 else ""
    return together + f"; {', '.join(alone)} last trained alone (train --resume), {each}at its own s/epoch."


def write_report(study_dir: Path, study: Study, outcomes: list[VariantOutcome], rows: list[dict],
                 engine: str = "sequential") -> None:
    """summary.md, summary.csv, comparison.png and the TensorBoard margins of the study folder."""
    base = study.base
    seeds = sorted({o.seed for o in outcomes})
    notes = [f"- **{r['optimizer']}** {r['status']}: {_status_note(r, outcomes)}"
             for r in rows if r["status"] != st.COMPLETED]
    # what the runs' summaries note (a teacher that may have seen the validation images, fewer threads), once
    notes += [f"- note: {n}" for n in dict.fromkeys(n for o in outcomes for n in o.summary.get("notes", []))]
    how = ("every optimizer starts from the same initial weights and sees the same batches (per seed)"
           if study.kind == "compare" else f"the config {base.run_name}, once with each seed")
    trained = _trained_how(outcomes, engine)
    if base.distill.teacher is not None:
        trained += (f" Taught by {Path(base.distill.teacher).name} (T={base.distill.temperature:g}, "
                    f"alpha={base.distill.alpha:g}): the train loss is the distillation loss, the test loss the "
                    "cross-entropy.")
    images = outcomes[0].summary["data"]["train_size"] if outcomes else None  # the subset less validation
    subset = f", {images:,} training images (data.subset)" if base.data.subset and images else ""
    heading = (f"# Optimizer comparison: {base.model.name}" if study.kind == "compare"
               else f"# {base.run_name}: {plural(len(seeds), 'seed')}")
    text = "\n".join([
        heading, "",
        f"{plural(base.train.epochs, 'epoch')}, batch {base.train.batch_size}{subset}, "
        f"{plural(len(seeds), 'seed')} {seeds}; {how}. {trained}", "",
        markdown_table(rows, first_column(study.kind)), "", *notes, *_best_note(base), "",
        "![comparison](comparison.png)", ""])
    atomic_write(study_dir / "summary.md", lambda fh: fh.write(text), mode="w")
    # a mean over no finished run (n = 0: every run diverged or stopped) is no value: an empty cell, as a missing std
    first = first_column(study.kind)  # a seeds study's rows are its config, as summary.md's first column says
    write_csv(study_dir / "summary.csv", [first, *SUMMARY_COLUMNS[1:]],
              [{first if k == "optimizer" else k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in r.items()} for r in rows])
    series = curves(study, outcomes, rows)
    kind = "optimizer comparison" if study.kind == "compare" else base.run_name
    title = (f"{base.model.name.upper()} on Fashion-MNIST: {kind} ({plural(base.train.epochs, 'epoch')}, "
             f"batch {base.train.batch_size}, {plural(len(seeds), 'seed')}"
             + (f", {images:,} training images)" if subset else ")"))
    configs = [base, *study.variants.values()]  # smoothing and distillation are the base's; keep it general
    loss = ("training loss (distillation loss, log scale)" if base.distill.teacher is not None else
            "training loss (cross-entropy with label smoothing, log scale)"
            if any(c.train.label_smoothing for c in configs) else "training loss (cross-entropy, log scale)")
    save_figure(comparison(series, title, loss), study_dir / "comparison.png", dpi=110)
    if outcomes:  # optimizer steps per epoch, from the shape all runs share
        tensorboard_margins(study_dir, series, steps_per_epoch(base, images)[1])


def curves(study: Study, outcomes: list[VariantOutcome], rows: list[dict]) -> dict[str, dict]:
    """Per variant (in the config's order: stable colors), its runs' train loss and test accuracy per epoch as
    (seeds, epochs) arrays, nan where a run stopped early."""
    series = {}
    by_name = {r["optimizer"]: r for r in rows}
    for r in (by_name[name] for name in study.variants if name in by_name):
        runs = [o for o in outcomes if o.name == r["optimizer"]]
        epochs = max(study.base.train.epochs, 1)
        grid = {key: np.full((len(runs), epochs), np.nan) for key in ("train_loss", "test_accuracy")}
        for i, o in enumerate(runs):
            for row in o.history:
                for key in grid:
                    grid[key][i, int(row["epoch"]) - 1] = row[key]
        last = max((len(o.history) for o in runs), default=0)
        series[r["optimizer"]] = {"epochs": list(range(1, max(last, 1) + 1)), "status": r["status"],
                                  **{k: v[:, :max(last, 1)] for k, v in grid.items()}}
    return series


def _margin_title(name: str, values: np.ndarray, mean_minus_std: np.ndarray, low: np.ndarray) -> str:
    """What a Margin chart's band is, as comparison.png's legend says it: over how many seeds (fewer at the epochs
    after a run stopped early or diverged), and where a loss band stops at the lowest seed."""
    counts = np.isfinite(values).sum(axis=0)
    reached = counts[counts > 0]  # a chart is drawn only where some seed reached an epoch
    with np.errstate(invalid="ignore"):
        cut = bool(np.any(low > mean_minus_std))
    return (f"{name}: mean ± std over {seeds_over(int(reached.max()), bool(reached.min() != reached.max()))}"
            + (f"; {CUT_BAND}" if cut else ""))


def tensorboard_margins(study_dir: Path, series: dict[str, dict], per_epoch: int) -> None:
    """Per variant, its mean curve with a ± one (sample) standard deviation band over the seeds, as TensorBoard's
    custom-scalars Margin charts, in the study folder's own log: beside the member runs' curves when
    `tensorboard --logdir` is the study folder. The x axis is the optimizer step (`per_epoch` per epoch), as in
    every run."""
    from torch.utils.tensorboard import SummaryWriter

    steps = {epoch: epoch * per_epoch for s in series.values() for epoch in s["epochs"]}  # an epoch's last step
    for old in study_dir.glob("events.out.tfevents.*"):
        old.unlink()  # a fresh log each time the report is written (a resumed study rewrites it)
    writer = SummaryWriter(log_dir=str(study_dir))
    try:
        layout: dict[str, dict] = {}
        for name, s in series.items():
            for key, label, scale in (("test_accuracy", "test accuracy", 1.0), ("train_loss", "train loss", 1.0)):
                values = np.asarray(s[key], dtype=np.float64) * scale
                mean, std = seed_spread(values)
                spread = np.where(np.isfinite(std), std, 0.0)  # one seed at an epoch: no width
                with np.errstate(invalid="ignore"):  # epochs no seed reached: nan, not written
                    low = band_low(mean, spread, values, key == "train_loss")  # as in comparison.png
                tags = [f"{name}/{key}/{part}" for part in ("mean", "lower", "upper")]
                written = 0
                for epoch, m, d, lo in zip(s["epochs"], mean, spread, low):
                    if np.isfinite(m) and epoch in steps:
                        for tag, value in zip(tags, (m, lo, m + d)):
                            writer.add_scalar(tag, value, steps[epoch])
                        written += 1
                if written:  # a variant whose every run diverged in its first epoch has no curve: no empty chart
                    layout.setdefault(label, {})[_margin_title(name, values, mean - spread, low)] = ["Margin", tags]
        writer.add_custom_scalars(layout)
    finally:
        writer.close()
