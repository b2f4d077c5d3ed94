"""What a sweep reports: a row per trial, the best trial, the terminal lines, and the files in the sweep folder
(trials.csv, summary.md, best.yaml and Optuna's figures)."""

from __future__ import annotations

import csv
import io
import json
import math
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fashionmlp import status as st
from fashionmlp.plots.common import loss_text
from fashionmlp.plots.sweep import sweep_figures
from fashionmlp.sweep.backend import TrialState, finished_states
from fashionmlp.sweep.space import trial_config
from fashionmlp.sweep.spec import METRICS, SweepSpec
from fashionmlp.sweep.storage import OWNER
from fashionmlp.teacher import teacher_path_absolute
from fashionmlp.tracking import atomic_write

if TYPE_CHECKING:
    from fashionmlp.sweep.run import SweepResult


def finished_text(finished: int, target: int, at_start: bool = False) -> str:
    """'4 of 6 trials finished', or, for a study that has more than --trials asks for, say so: as a command
    starts, a lowered --trials (nothing to run); at its end also workers of several machines that asked for the
    last trials together (the report said "nothing to run" under a table of the trials it ran)."""
    if finished > target:
        return f"{finished} trials finished, more than the {target} asked for" + (" (nothing to run)" if at_start
                                                                                 else "")
    return f"{finished} of {target} trials finished"


def _attrs(t) -> dict[str, Any]:
    """The trial's user attributes, without those a retried trial inherited from the one it repeats."""
    owner = t.user_attrs.get(OWNER) or {}
    return t.user_attrs if owner.get("trial") == t.number else {}


def _note(t) -> str:
    attrs = _attrs(t)
    status = attrs.get("status")
    state = t.state.name.lower()
    notes = []
    if t.system_attrs.get("retry_history"):  # set by Optuna's retry callback: the trials this one repeats
        notes.append(f"retry of {t.system_attrs['retry_history'][-1]}")
        run = Path(attrs["run_dir"]).name if attrs.get("run_dir") else None
        if run is not None and run != f"trial-{t.number:04d}":  # it continued the stopped trial's run
            notes.append(f"continued its run {run}")
    if "skipped" in attrs:
        notes.append(attrs["skipped"])
    elif status == st.DIVERGED:
        notes.append(f"diverged in epoch {attrs.get('epochs', 0) + 1}")
    elif status == st.INTERRUPTED:
        notes.append("interrupted")
    elif "error" in attrs:
        notes.append(f"config rejected: {attrs['error']}")
    elif state == "fail":
        notes.append("worker lost (killed?)")
    return "; ".join(notes)


def trial_rows(study, spec: SweepSpec) -> list[dict]:
    """One row per trial: number, the value of each key, state, metric, epochs, seconds, note."""
    rows = []
    by_key = {p.key: p for p in spec.params}
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number}
        queued = t.system_attrs.get("fixed_params") or {}  # a grid point still waiting has no params yet
        for key, param in by_key.items():
            value = t.params.get(key, queued.get(key))
            row[key] = None if value is None else param.decode(value)
        state, attrs = t.state.name.lower(), _attrs(t)
        row.update({"state": st.DIVERGED if attrs.get("status") == st.DIVERGED else state,
                    spec.metric: t.value,
                    "epochs": _epochs(t, attrs),
                    "seconds": _seconds(t),
                    "note": _note(t)})
        rows.append(row)
    return rows


def _epochs(trial, attrs: dict) -> int | None:
    """The epochs a trial's run finished: recorded when it ends, else (its worker killed) the epochs it reported."""
    if attrs.get("epochs") is not None:
        return attrs["epochs"]
    if trial.state != TrialState.FAIL or not trial.intermediate_values:  # e.g. a grid point's skipped copy: none
        return None
    return max(trial.intermediate_values)


def _seconds(trial) -> float | None:
    """A trial's own seconds: its run's (summary.json's, recorded when it ends), else the time Optuna had it
    (a trial of a population was told when the whole population ended); none for a failed one without its
    own (its worker lost: the time until someone noticed is not the trial's)."""
    own = _attrs(trial).get("seconds")  # not the seconds of the trial a retry repeats
    if own is not None:
        return round(float(own), 1)
    if trial.duration is None or trial.state == TrialState.FAIL:
        return None
    return round(trial.duration.total_seconds(), 1)


def _best(study, spec: SweepSpec) -> dict | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    pick = max if spec.direction == "maximize" else min
    t = pick(complete, key=lambda tr: tr.value)
    params = {p.key: p.decode(t.params[p.key]) for p in spec.params if p.key in t.params}
    run_dir = Path(t.user_attrs["run_dir"])
    test_accuracy = engine = restored = None
    here = t.user_attrs[OWNER]["host"] == socket.gethostname()
    if here:
        try:
            run = json.loads((run_dir / "summary.json").read_text())
            test_accuracy, engine = run["final"]["test_accuracy"], run.get("engine")
            restored = (run.get("early_stopping") or {}).get("restored_epoch")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return {"number": t.number, "value": t.value, "params": params, "run_dir": str(run_dir),
            "host": t.user_attrs.get(OWNER, {}).get("host"), "test_accuracy": test_accuracy,
            "threads": t.user_attrs.get("threads"), "engine": engine, "gone": here and not run_dir.is_dir(),
            "epochs": t.user_attrs.get("epochs"), "restored": restored}


def _when(best: dict, planned: int) -> str:
    """After which epoch the best trial scored what it did: with early stopping, the restored epoch's (best.yaml
    said 'after 8 epochs' of a trial that stopped after 4 with epoch 3's weights)."""
    trained, restored = best["epochs"], best["restored"]
    if not isinstance(trained, int) or trained == planned and restored in (None, trained):
        return f" after {planned} epochs"
    return (f", its epoch {restored} (early stopping: it trained {trained} of its {planned} epochs)"
            if isinstance(restored, int) else f" after {trained} of its {planned} epochs")


def best_line(best: dict | None, spec: SweepSpec, sweep_dir: Path) -> str:
    """The best trial as the terminal and summary.md name it: its run folder by name where this sweep folder
    holds it, else by its path and machine (commands sharing a study on PostgreSQL each keep their own trials'
    folders: a report named another command's trial-0000 as if it were beside it)."""
    if best is None:
        return "no trial has completed, so there is no best trial and no best.yaml"
    run_dir, host = Path(best["run_dir"]), best["host"]
    elsewhere = host is not None and host != socket.gethostname()
    where = (run_dir.name if not elsewhere and run_dir.parent.resolve() == sweep_dir.resolve() else
             f"{run_dir}" + (f" on {host}" if elsewhere else ""))
    return (f"trial {best['number']} (run folder {where}), {spec.metric} {best['value']:.4f}; its test accuracy "
            f"{best_test_text(best)} (reported once, never used for the search)")


def best_test_text(best: dict) -> str:
    """The best trial's test accuracy as the terminal and summary.md say it: from its run's summary.json when
    that is on this machine."""
    if best["test_accuracy"] is not None:
        return f"{best['test_accuracy']:.2%}"
    if best["gone"]:
        return "unknown (its run folder is gone)"
    return f"in {best['run_dir']}/summary.json on {best['host']}"


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key in METRICS:
            return loss_text(value)
        return f"{value:.1f}" if key == "seconds" else f"{value:.4g}"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def table_rows(rows: list[dict], spec: SweepSpec) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the trial table, best first (complete, then pruned, then the rest)."""
    keys = [p.key for p in spec.params]
    header = ["trial", *keys, "state", spec.metric, "epochs", "seconds", "note"]
    sign = -1 if spec.direction == "maximize" else 1
    order = {"complete": 0, "pruned": 1, "diverged": 2}

    def rank(r):
        value = r[spec.metric]
        return (order.get(r["state"], 3), sign * value if value is not None else math.inf, r["number"])

    cells = [[str(r["number"]), *[_fmt(r[k]) for k in keys], r["state"], _fmt(r[spec.metric], spec.metric),
              _fmt(r["epochs"]), _fmt(r["seconds"], "seconds"), r["note"] or ""] for r in sorted(rows, key=rank)]
    return header, cells


def progress_line(spec: SweepSpec, trial, finished: int) -> str:
    """The terminal line for a trial that has just ended."""
    status = trial.user_attrs.get("status")
    state = st.DIVERGED if status == st.DIVERGED else trial.state.name.lower()
    epochs = trial.user_attrs.get("epochs")
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    params = "  ".join(f"{p.key}={_fmt(p.decode(trial.params[p.key]))}" for p in spec.params if p.key in trial.params)
    own = _seconds(trial)
    seconds = "-" if own is None else f"{own:.1f}s"
    extra = f"  ({trial.user_attrs['error']})" if "error" in trial.user_attrs else ""
    planned = trial.params.get("train.epochs", spec.base.train.epochs)
    return (f"trial {trial.number:>3} {state:<8} {spec.metric} {value}  epochs {_fmt(epochs)}/{planned}"
            f"  {seconds:>7}  {params}  [{finished}/{spec.target} finished]{extra}")


def write_report(result: SweepResult, spec: SweepSpec, study) -> None:
    """trials.csv, summary.md, best.yaml and Optuna's figures in the sweep folder."""
    folder = result.sweep_dir
    keys = [p.key for p in spec.params]
    columns = ["number", *keys, "state", spec.metric, "epochs", "seconds", "note"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in result.rows)
    text = buffer.getvalue()
    atomic_write(folder / "trials.csv", lambda fh: fh.write(text), mode="w")
    best = result.best
    if best is not None:
        threads = best["threads"] if isinstance(best["threads"], int) and best["threads"] > 0 else 0
        cfg = teacher_path_absolute(trial_config(spec, best["params"], f"{result.study}-best"))
        header = (f"# Best trial of study {result.study!r}: trial {best['number']}, {spec.metric} {best['value']:.4f} "
                  f"on {cfg.data.val_size} validation images{_when(best, cfg.train.epochs)}.\n"
                  f"# Train it: fashionmlp train --config best.yaml [--epochs N]\n"
                  + ("# It trained in a population (with other trials, batched): a run of its own adds up in "
                     "another order, so its float32 numbers come close, not bit for bit, at any thread count\n"
                     if best.get("engine") == "population" else
                     f"# The trial trained on {threads} CPU thread(s): a float32 run's numbers depend on the count; "
                     f"--set train.threads={threads} repeats them\n" if threads else ""))
        body = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_write(folder / "best.yaml", lambda fh: fh.write(header + body), mode="w")
    figures, not_drawn = sweep_figures(study, spec, folder)
    head, cells = table_rows(result.rows, spec)
    lines = [f"# Sweep: {result.study}", "",
             f"Storage: {result.storage}. {spec.sampler} sampler (seed {spec.seed}), pruner {spec.pruner}; "
             f"{finished_text(result.finished, result.target)}; metric {spec.metric} "
             f"({spec.direction}d) on {spec.base.data.val_size} validation images; "
             + ("epochs per trial: searched." if any(p.key == "train.epochs" for p in spec.params) else
                f"{spec.base.train.epochs} epoch{'s' * (spec.base.train.epochs != 1)} per trial."), ""]
    lines += [f"Note: {note}" for note in result.notes] + ([""] if result.notes else [])
    if result.missing:
        lines += [f"**The grid is not complete**: {len(result.missing)} point(s) never finished (run the same command "
                  "again to train them): " + "; ".join(", ".join(f"{k} = {json.dumps(v)}" for k, v in p.items())
                                                      for p in result.missing), ""]
    if result.training:
        lines += [f"**The grid is not complete yet**: {len(result.training)} point(s) still training in another "
                  "command or on another machine (run the same command again when they end, to update this report).",
                  ""]
    if best is not None or result.rows:
        lines += [f"Best: {best_line(best, spec, folder)}." + (" Config: best.yaml." if best is not None else ""), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    lines += [""] + [f"![{name}]({name})" for name in figures] + [""]
    lines += [f"Not drawn: {', '.join(not_drawn)}.", ""] if not_drawn else []
    text = "\n".join(lines)
    atomic_write(folder / "summary.md", lambda fh: fh.write(text), mode="w")


def missing_points(books, spec: SweepSpec) -> tuple[list[dict], list[dict]]:
    """The points of a grid sweep that no finished trial (complete or pruned) covers: those no running trial
    holds, and those one does, with their values as in the config (none for other samplers, nor for a grid
    whose target is fewer trials than points)."""
    if spec.sampler != "grid" or spec.target < spec.grid_size:
        return [], []
    def points(states) -> set[str]:  # a trial just asked has its point in fixed_params, drawn a moment later
        return {json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True)
                for t in books.get_trials(deepcopy=False, states=states)}

    done, held = points(finished_states()), points((TrialState.RUNNING,))
    decode = {p.key: p.decode for p in spec.params}
    missing: list[dict] = []
    training: list[dict] = []
    for point in spec.grid_points():
        key = json.dumps(point, sort_keys=True)
        if key not in done:
            (training if key in held else missing).append({k: decode[k](v) for k, v in point.items()})
    return missing, training
