"""The optimizer study: the same network, the same initial weights and the same batches, one run per optimizer.

A study config is a training config plus `variants`, a mapping of name -> optimizer section:

    model: {name: mlp}
    variants:
      sgd: {name: sgd, lr: 0.01}
      adam_lr1: {name: adam, lr: 1.0}

Each variant (and seed) becomes a full run folder inside one study folder; the study writes comparison.png,
summary.md and summary.csv beside them.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashionmlp import status as st
from fashionmlp.config import RunConfig, apply_overrides, config_from_dict, read_yaml
from fashionmlp.data import check_trainable, load_data
from fashionmlp.device import prepare_model, resolve_device
from fashionmlp.engine import Progress, seed_everything
from fashionmlp.errors import ConfigError, UserError
from fashionmlp.plots import comparison, plural
from fashionmlp.run import train
from fashionmlp.tracking import atomic_write, check_writable, create_run_dir, read_metrics, write_csv

# The study this tool exists for; configs/compare_<model>.yaml spell out the same thing.
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.01},
    "nesterov": {"name": "nesterov", "lr": 0.01, "momentum": 0.9},
    "adam": {"name": "adam", "lr": 0.01},
    "adam_lr1": {"name": "adam", "lr": 1.0},
}
CHANCE = 0.10  # 10 balanced classes
FAILED_MARGIN = 0.02  # final accuracy within 2 points of chance: "failed to learn"
SUMMARY_COLUMNS = ["optimizer", "lr", "momentum", "n", "final_train_loss", "final_test_loss",
                   "final_test_accuracy", "final_test_accuracy_std", "best_test_accuracy", "best_epoch",
                   "seconds_per_epoch", "status"]


@dataclass(frozen=True)
class Study:
    base: RunConfig
    variants: dict[str, RunConfig]  # name -> the base with that variant's optimizer section


def default_study_dict(model: str) -> dict[str, Any]:
    return {"name": f"compare_{model}", "model": {"name": model},
            "variants": copy.deepcopy(DEFAULT_VARIANTS)}


def load_study(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
               only: list[str] | None = None) -> Study:
    """Validate a study dict: `variants.<name>.<key>=v` overrides edit a variant, the rest edit the base."""
    raw = copy.deepcopy(raw)
    variants_raw = raw.pop("variants", None)
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ConfigError("variants: a study needs a mapping of variant name -> optimizer section, "
                          "e.g. variants: {sgd: {name: sgd, lr: 0.01}}")
    base_overrides = []
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key.startswith("variants."):
            _, name, rest = (key.split(".", 2) + ["", ""])[:3]
            if name not in variants_raw:
                raise ConfigError(f"--set {text!r}: no variant {name!r}; variants: {', '.join(variants_raw)}")
            if not rest:
                raise ConfigError(f"--set {text!r}: expected variants.<name>.<optimizer key>=VALUE")
            variants_raw[name] = apply_overrides({"optimizer": variants_raw[name] or {}},
                                                 [f"optimizer.{rest}={text.partition('=')[2]}"])["optimizer"]
        else:
            base_overrides.append(text)
    base = config_from_dict(raw, base_overrides)
    names = list(variants_raw)
    if only:
        unknown = [n for n in only if n not in variants_raw]
        if unknown:
            raise ConfigError(f"--optimizers: unknown variant {unknown[0]!r}; variants: {', '.join(names)}")
        names = only
    variants = {}
    for name in names:
        section = variants_raw[name]
        if not isinstance(section, dict):
            raise ConfigError(f"variants.{name}: expected an optimizer section such as {{name: adam, lr: 0.01}}")
        try:
            variants[name] = config_from_dict({**base.to_dict(), "optimizer": section, "name": name})
        except ConfigError as exc:
            raise ConfigError(f"variants.{name}: {exc}") from None
    return Study(base, variants)


def study_from_options(model: str | None, config: Path | None, overrides: list[str], only: list[str] | None
                       ) -> Study:
    if config is not None:
        raw = read_yaml(config)
        if model is not None:
            section = raw.get("model")
            if section is None:
                section = raw["model"] = {}
            if not isinstance(section, dict):
                raise ConfigError(f"model: expected a mapping of keys to values, got {section!r}")
            if section.get("name", model) != model:
                raise UserError(f"--model {model} contradicts model.name {section['name']!r} in {config}")
            section["name"] = model
    else:
        raw = default_study_dict(model or "mlp")
    return load_study(raw, overrides, only)


@dataclass
class VariantOutcome:
    name: str
    seed: int
    run_dir: Path
    status: str  # status.COMPLETED | DIVERGED | FAILED_TO_LEARN | INTERRUPTED
    history: list[dict]
    summary: dict


@dataclass
class StudyResult:
    study_dir: Path
    rows: list[dict]  # the summary table, sorted
    outcomes: list[VariantOutcome] = field(default_factory=list)
    interrupted: bool = False


def classify(run_status: str, final_accuracy: float | None) -> str:
    if run_status != st.COMPLETED:
        return run_status
    if final_accuracy is None or final_accuracy <= CHANCE + FAILED_MARGIN:
        return st.FAILED_TO_LEARN
    return st.COMPLETED


def run_study(study: Study, *, seeds: list[int], runs_dir: Path = Path("runs"), data_dir: str | Path | None = None,
              make_progress: Callable[[str], Progress] = lambda label: Progress(),
              should_stop: Callable[[], bool] = lambda: False, command: str | None = None) -> StudyResult:
    """Train every variant for every seed from one shared initialization per seed, then write the report.

    Each run is exactly what `fashionmlp train` with its saved config.yaml would do: the same initial weights,
    batches and (the seed draws it) validation split.
    """
    base = study.base
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:  # two runs of one seed would need one folder, and add nothing to the mean
        raise UserError(f"--seeds {','.join(map(str, seeds))}: seed {repeated[0]} is listed more than once; "
                        "give each seed once")
    try:  # every seed's every run validated before the first one trains
        runs = {seed: {name: config_from_dict(cfg.to_dict(), [f"seed={seed}"]) for name, cfg in study.variants.items()}
                for seed in seeds}
    except ConfigError as exc:
        raise ConfigError(f"--seeds: {exc}") from None
    device = resolve_device(base.device)
    check_writable(runs_dir)
    data = load_data(config_from_dict(base.to_dict(), [f"seed={seeds[0]}"]), data_dir)  # data errors come first
    for cfg in runs[seeds[0]].values():
        check_trainable(cfg, len(data.train.labels))
    study_dir = create_run_dir(runs_dir, f"compare-{base.model.name}")
    outcomes: list[VariantOutcome] = []
    interrupted = False
    for seed in seeds:
        seeded = config_from_dict(base.to_dict(), [f"seed={seed}"])
        if seeded.data.val_size and seed != seeds[0]:
            data = load_data(seeded, data_dir)  # the validation split is drawn with the run's seed, as in train
        seed_everything(seed)
        initial = copy.deepcopy(prepare_model(seeded, device).state_dict())  # one init per seed, shared
        for name, cfg in runs[seed].items():
            folder = study_dir / (name if len(seeds) == 1 else f"{name}-seed{seed}")
            label = f"{name} " + (f"seed {seed} " if len(seeds) > 1 else "")
            result = train(cfg, run_dir=folder, data=data, initial_state=initial, progress=make_progress(label),
                           should_stop=should_stop, command=command)
            history = read_metrics(folder / "metrics.csv")
            status = classify(result.status, result.summary["final"]["test_accuracy"])
            outcomes.append(VariantOutcome(name, seed, folder, status, history, result.summary))
            if result.status == st.INTERRUPTED:
                interrupted = True
                break
        if interrupted:
            break
    rows = summarize(outcomes, study)
    write_report(study_dir, study, outcomes, rows)
    return StudyResult(study_dir, rows, outcomes, interrupted)


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarize(outcomes: list[VariantOutcome], study: Study) -> list[dict]:
    """One row per variant (mean over seeds), sorted by final test accuracy, best first."""
    rows = []
    for name, cfg in study.variants.items():
        runs = [o for o in outcomes if o.name == name]
        if not runs:
            continue
        finals = [o.summary["final"] for o in runs]
        acc, acc_std = _mean_std([f["test_accuracy"] for f in finals])
        best = [max(o.history, key=lambda r: r["test_accuracy"]) for o in runs if o.history]
        statuses = sorted({o.status for o in runs})
        rows.append({
            "optimizer": name, "lr": cfg.optimizer.lr,
            "momentum": cfg.optimizer.momentum if cfg.optimizer.name in ("sgd", "nesterov") else None,
            "n": len(runs),
            "final_train_loss": _mean_std([f["train_loss"] for f in finals])[0],
            "final_test_loss": _mean_std([f["test_loss"] for f in finals])[0],
            "final_test_accuracy": acc, "final_test_accuracy_std": acc_std,
            "best_test_accuracy": _mean_std([b["test_accuracy"] for b in best])[0],
            "best_epoch": int(best[0]["epoch"]) if len(best) == 1 else (
                round(statistics.fmean(b["epoch"] for b in best), 1) if best else None),
            "seconds_per_epoch": _mean_std([r["seconds"] for o in runs for r in o.history])[0],
            "status": statuses[0] if len(statuses) == 1 else ", ".join(statuses),
        })
    return sorted(rows, key=lambda r: -r["final_test_accuracy"] if math.isfinite(r["final_test_accuracy"])
                  else math.inf)


def _pct(value: float | None, std: float | None = None, n: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2%}" + (f" ± {std:.2%}" if n > 1 and std is not None and math.isfinite(std) else "")


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the summary table (shared by summary.md and the terminal)."""
    n = max((r["n"] for r in rows), default=1)
    header = ["optimizer", "lr", "momentum", "final train loss", "final test loss",
              "final test acc" + (f" (mean ± std, n={n})" if n > 1 else ""), "best test acc (epoch)",
              "s/epoch", "status"]
    cells = []
    for r in rows:
        cells.append([r["optimizer"], f"{r['lr']:g}", "-" if r["momentum"] is None else f"{r['momentum']:g}",
                      _num(r["final_train_loss"]), _num(r["final_test_loss"]),
                      _pct(r["final_test_accuracy"], r["final_test_accuracy_std"], r["n"]),
                      f"{_pct(r['best_test_accuracy'])} ({r['best_epoch'] if r['best_epoch'] is not None else '-'})",
                      _num(r["seconds_per_epoch"], 2), r["status"]])
    return header, cells


def markdown_table(rows: list[dict]) -> str:
    header, cells = table_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def write_report(study_dir: Path, study: Study, outcomes: list[VariantOutcome], rows: list[dict]) -> None:
    base = study.base
    seeds = sorted({o.seed for o in outcomes})
    notes = [f"- **{r['optimizer']}** {r['status']}: " + (
        "the loss became non-finite; the run stopped early (see its summary.json for the epoch and step)."
        if st.DIVERGED in r["status"] else
        f"final test accuracy {_pct(r['final_test_accuracy'])} is within {FAILED_MARGIN:.0%} of chance "
        f"({CHANCE:.0%}): the network did not learn." if st.FAILED_TO_LEARN in r["status"] else "")
        for r in rows if r["status"] != st.COMPLETED]
    text = "\n".join([
        f"# Optimizer comparison: {base.model.name}",
        "",
        f"{plural(base.train.epochs, 'epoch')}, batch {base.train.batch_size}, {plural(len(seeds), 'seed')} "
        f"{seeds}; every optimizer starts from the same initial weights and sees the same batches (per seed).",
        "",
        markdown_table(rows),
        "",
        *notes,
        "",
        "![comparison](comparison.png)",
        "",
    ])
    atomic_write(study_dir / "summary.md", lambda fh: fh.write(text), mode="w")
    write_csv(study_dir / "summary.csv", SUMMARY_COLUMNS, rows)
    series = {}
    by_name = {r["optimizer"]: r for r in rows}
    for r in (by_name[name] for name in study.variants if name in by_name):  # config order: stable colors
        runs = [o for o in outcomes if o.name == r["optimizer"]]
        epochs = max(base.train.epochs, 1)
        grid = {key: np.full((len(runs), epochs), np.nan) for key in ("train_loss", "test_accuracy")}
        for i, o in enumerate(runs):
            for row in o.history:
                for key in grid:
                    grid[key][i, int(row["epoch"]) - 1] = row[key]
        last = max((len(o.history) for o in runs), default=0)
        series[r["optimizer"]] = {"epochs": list(range(1, max(last, 1) + 1)), "status": r["status"],
                                  **{k: v[:, :max(last, 1)] for k, v in grid.items()}}
    title = (f"{base.model.name.upper()} on Fashion-MNIST: optimizer comparison "
             f"({plural(base.train.epochs, 'epoch')}, batch {base.train.batch_size}, {plural(len(seeds), 'seed')})")
    comparison(series, title).savefig(study_dir / "comparison.png", dpi=110)
