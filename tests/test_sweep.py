"""`fashionmlp sweep` on the tiny data set: grids, reproducibility, workers, pruning, kills, bad configs,
and a real PostgreSQL server when its binaries are on the machine."""

from __future__ import annotations

import csv
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from helpers import cli, summary, tiny_config

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
VAL = 64  # validation images held out of the 320 tiny training images


@pytest.fixture
def sweep_config(tmp_path, tiny_data):
    """sweep_config(sweep={...}, **sections) -> path of a sweep YAML on the tiny data set."""

    def write(name: str = "sweep.yaml", sweep: dict | None = None, **sections) -> Path:
        sections = {"data": {"val_size": VAL}, **sections}
        cfg = tiny_config(tiny_data, **sections)
        cfg["train"] = {"threads": 1, **cfg["train"]}  # one thread: tiny steps are slower on two
        cfg["sweep"] = {"trials": 4, "pruner": "none",
                        "space": {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}}, **(sweep or {})}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


@pytest.fixture
def quick_pictures(monkeypatch):
    """Blank end-of-run pictures: drawing the real ones takes ~90% of a tiny trial's time, and the sweep tests
    check trials, not pictures (test_grid_sweep_gives_exactly_its_grid keeps the real ones)."""
    from matplotlib.figure import Figure

    from fashionmlp import recorder

    monkeypatch.setattr(recorder, "loss_curve", lambda *args, **kwargs: Figure(figsize=(1, 1)))
    monkeypatch.setattr(recorder, "confusion_matrix", lambda *args, **kwargs: Figure(figsize=(1, 1)))


def sweep_dir(runs: Path) -> Path:
    (folder,) = [p for p in runs.iterdir() if p.name.startswith("sweep-")]
    return folder


def trials_csv(folder: Path) -> list[dict]:
    with open(folder / "trials.csv") as fh:
        return list(csv.DictReader(fh))


def load_study(folder: Path, name: str = "tiny"):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(folder / "optuna.journal"))))


def finished(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


# ---------------------------------------------------------------- samplers


def test_grid_sweep_gives_exactly_its_grid(sweep_config, tmp_path):
    grid = {"optimizer.lr": [0.01, 0.03], "model.hidden": [[16], [32, 32]]}
    path = sweep_config(sweep={"sampler": "grid", "trials": 10, "space": grid})
    import matplotlib

    style = {k: v for k, v in matplotlib.rcParams.items() if k != "backend"}
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    # Optuna's plots switched the process to ggplot for good: a run's pictures drawn after them came out grey
    assert {k: v for k, v in matplotlib.rcParams.items() if k != "backend"} == style
    assert "the grid has 4 points: 4 trials, not 10" in result.stdout
    for number in range(4):  # progress while a trial trains: a line per epoch
        assert [line.split()[3] for line in result.stdout.splitlines()
                if line.startswith(f"trial   {number} epoch")] == ["1/2", "2/2"]
    folder = sweep_dir(tmp_path / "runs")
    assert Path(result.stdout.strip().splitlines()[-1]) == folder
    rows = trials_csv(folder)
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3] and {r["state"] for r in rows} == {"complete"}
    points = sorted((float(r["optimizer.lr"]), r["model.hidden"]) for r in rows)
    assert points == [(0.01, "[16]"), (0.01, "[32, 32]"), (0.03, "[16]"), (0.03, "[32, 32]")]
    for r in rows:  # each trial is an ordinary run folder trained with exactly its values
        run = folder / f"trial-{int(r['number']):04d}"
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["optimizer"]["lr"] == float(r["optimizer.lr"])
        assert saved["model"]["hidden"] == json.loads(r["model.hidden"])
        assert saved["data"]["val_size"] == VAL and saved["seed"] == 0
        s = summary(run)
        assert s["status"] == "completed" and s["epochs"] == 2
        assert float(r["val_accuracy"]) == pytest.approx(s["final"]["val_accuracy"])
        assert (run / "checkpoints" / "best.pt").is_file() and list(run.glob("events.out.tfevents.*"))
    best = max(rows, key=lambda r: (float(r["val_accuracy"]), -int(r["number"])))
    best_cfg = yaml.safe_load((folder / "best.yaml").read_text())
    assert best_cfg["optimizer"]["lr"] == float(best["optimizer.lr"])
    assert best_cfg["model"]["hidden"] == json.loads(best["model.hidden"])
    assert best_cfg["train"]["threads"] == 1  # the config's own, not a worker's
    test_acc = summary(folder / f"trial-{int(best['number']):04d}")["final"]["test_accuracy"]
    assert f"test accuracy {test_acc:.2%}" in result.stdout
    assert result.stdout.count("test accuracy") == 1  # reported once, for the best trial only
    header = (folder / "trials.csv").read_text().splitlines()[0]  # keys in the file's order (sorted by safe_dump)
    assert header == "number,model.hidden,optimizer.lr,state,val_accuracy,epochs,seconds,note"
    assert "test" not in header
    for name in ("summary.md", "sweep.yaml", "optimization_history.png", "parallel_coordinate.png"):
        assert (folder / name).is_file(), name
    # best.yaml is ready for `fashionmlp train`
    trained = cli("train", "--config", folder / "best.yaml", "--runs-dir", tmp_path / "again")
    assert trained.exit_code == 0, trained.output


def test_tpe_sweep_with_a_seed_is_reproducible(sweep_config, tmp_path, quick_pictures):
    space = {"optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}, "train.batch_size": [16, 32, 64]}
    # two random start-up trials, then three drawn from TPE's model of the trials so far
    tpe = {"trials": 5, "sampler": "tpe", "seed": 3, "sampler_startup_trials": 2, "space": space}
    path = sweep_config(train={"epochs": 1}, sweep=tpe)
    other = sweep_config("other.yaml", train={"epochs": 1}, sweep={**tpe, "seed": 4})
    runs = []
    for k, config in enumerate([path, path, other]):
        result = cli("sweep", "--config", config, "--runs-dir", tmp_path / f"runs{k}")
        assert result.exit_code == 0, result.output
        runs.append([{key: r[key] for key in ("number", "optimizer.lr", "train.batch_size", "state", "val_accuracy")}
                     for r in trials_csv(sweep_dir(tmp_path / f"runs{k}"))])
    assert runs[0] == runs[1] and len(runs[0]) == 5
    assert len({r["optimizer.lr"] for r in runs[0]}) == 5  # drawn, not repeated
    assert [r["optimizer.lr"] for r in runs[2]] != [r["optimizer.lr"] for r in runs[0]]  # the seed matters


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_trials_draws_depend_on_its_number_not_on_which_process_asks(sweep_config, sampler):
    """Each process's sampler was seeded by (sweep seed, worker index, study size at its start): two commands
    started at once on one study (the docs' many-machines recipe) drew the same values, trial for trial. Each
    trial's draws now come from the sweep's seed and its own number."""
    from fashionmlp.sweep.sampler import PerTrialSeed
    from fashionmlp.sweep.space import load_sweep_file

    spec = load_sweep_file(sweep_config(optimizer={"name": "sgd"}, sweep={"trials": 6, "sampler": sampler, "seed": 0,
                                               "sampler_startup_trials": 2, "space": {
        "optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}, "optimizer.momentum": {"low": 0.0, "high": 0.9}}}))

    def draws(askers: int) -> list[tuple]:
        storage = optuna.storages.InMemoryStorage()
        optuna.create_study(study_name="s", storage=storage)
        # `askers` processes started at once: each its own sampler, made when the study was empty
        studies = [optuna.load_study(study_name="s", storage=storage, sampler=PerTrialSeed(spec, 4))
                   for _ in range(askers)]
        drawn = []
        for number in range(4):
            trial = studies[number % askers].ask()
            assert trial.number == number
            drawn.append(tuple(p.suggest(trial) for p in spec.params))
        return drawn

    alone, together = draws(1), draws(2)
    assert len(set(together)) == 4  # the old seeds: trials 0 and 1 (and 2 and 3) drew alike
    assert together == alone  # and a trial draws the same whoever asks: a fresh sweep is reproducible


# ---------------------------------------------------------------- pruning


def test_each_trial_of_a_population_reports_its_own_seconds(sweep_config, tmp_path, quick_pictures):
    """trials.csv's seconds are each run's own (summary.json's), not the whole population's: a pruned member
    ends before the others."""
    path = sweep_config(train={"epochs": 3}, sweep={
        "trials": 6, "sampler": "random", "seed": 0, "pruner": "median", "pruner_startup_trials": 2,
        "pruner_from_epoch": 1, "space": {"optimizer.lr": {"low": 1e-5, "high": 0.05, "log": True}}})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--population", 4)
    assert result.exit_code == 0, result.output
    folder = sweep_dir(tmp_path / "runs")
    rows = trials_csv(folder)
    for row in rows:
        own = summary(folder / f"trial-{int(row['number']):04d}")["seconds"]
        assert float(row["seconds"]) == round(own, 1)


def test_no_more_unprunable_trials_are_asked_than_the_pruner_needs_to_start(sweep_config, tmp_path, quick_pictures):
    """With pruner_startup_trials 2 and populations of 4, the first population has 2 members (a third asked at
    once could never be pruned); the next ones are full."""
    path = sweep_config(train={"epochs": 2}, sweep={
        "trials": 6, "sampler": "random", "seed": 0, "pruner": "median", "pruner_startup_trials": 2,
        "pruner_from_epoch": 1})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--population", 4)
    assert result.exit_code == 0, result.output
    trials = sorted(load_study(sweep_dir(tmp_path / "runs")).get_trials(), key=lambda t: t.number)
    first_done = max(t.datetime_complete for t in trials[:2])
    assert all(t.datetime_start >= first_done for t in trials[2:])
    assert trials[1].datetime_start < min(t.datetime_complete for t in trials[:2])  # 0 and 1 trained together


def test_later_trials_join_the_running_population_in_the_places_of_those_that_ended(sweep_config, tmp_path,
                                                                                     quick_pictures, monkeypatch):
    """A space that keeps every shape: one population trains the whole sweep, the study's next trials taking
    the places of those that ended (pruned or finished), each told to the study as it ends."""
    from fashionmlp.sweep import trials as trials_module
    from fashionmlp.sweep import workers

    calls, checks, stale = [], [], []
    real = trials_module.train_population
    monkeypatch.setattr(trials_module, "train_population",
                        lambda specs, **kw: calls.append(len(specs)) or real(specs, **kw))
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    real_check, real_stale = workers.fail_dead_trials, workers.fail_stale_trials
    monkeypatch.setattr(workers, "fail_dead_trials",
                        lambda books, folder: checks.append(len(books.get_trials(states=done))) or real_check(books, folder))
    monkeypatch.setattr(workers, "fail_stale_trials",
                        lambda books: stale.append(len(books.get_trials(states=done))) or real_stale(books))
    path = sweep_config(train={"epochs": 3}, sweep={
        "trials": 8, "sampler": "random", "seed": 0, "pruner": "median", "pruner_startup_trials": 2,
        "pruner_from_epoch": 1, "space": {"optimizer.lr": {"low": 1e-5, "high": 0.05, "log": True}}})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--population", 3)
    assert result.exit_code == 0, result.output
    assert calls == [2]  # one population, started with the pruner's 2 startup trials; 6 more joined it
    # other machines' lost trials (database heartbeats) are found while it runs; this machine's between
    # populations, where their retries continue their runs (a place in a running population starts at epoch 1)
    assert any(0 < n < 8 for n in stale) and all(n in (0, 8) for n in checks)
    trials = sorted(load_study(sweep_dir(tmp_path / "runs")).get_trials(), key=lambda t: t.number)
    assert len(trials) == 8 and all(t.state.is_finished() for t in trials)
    assert max(t.datetime_complete for t in trials[:2]) < min(t.datetime_start for t in trials[2:])
    assert trials[2].datetime_complete < trials[-1].datetime_start  # told as it ended, not with the population
    for t in trials:
        run = summary(sweep_dir(tmp_path / "runs") / f"trial-{t.number:04d}")
        assert run["engine"] == "population" and run["status"] == t.user_attrs["status"]


@pytest.mark.parametrize("population", [1, 2])
def test_pruning_stops_hopeless_trials_and_marks_their_runs(sweep_config, tmp_path, quick_pictures, population):
    """Alone, or as members of a population of 2 (trials 0-1 train together, then 2-3, ...: the pruner judges a
    member against the trials completed before its population started)."""
    path = sweep_config(train={"epochs": 3}, sweep={
        "trials": 8, "sampler": "random", "seed": 0, "pruner": "median", "pruner_startup_trials": 2,
        "pruner_from_epoch": 1, "space": {"optimizer.lr": {"low": 1e-5, "high": 0.05, "log": True}}})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--population", population)
    assert result.exit_code == 0, result.output
    folder = sweep_dir(tmp_path / "runs")
    study = load_study(folder)
    pruned = [t for t in study.get_trials() if t.state.name == "PRUNED"]
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert pruned and len(pruned) + len(complete) == 8
    for t in pruned:
        run = folder / f"trial-{t.number:04d}"
        s = summary(run)
        assert s["status"] == "pruned" and "resume_command" not in s
        assert 1 <= s["epochs"] < 3 and t.user_attrs["epochs"] == s["epochs"]
        assert len((run / "metrics.csv").read_text().splitlines()) == 1 + s["epochs"]  # the stopped epoch is dropped
        assert (run / "loss_curve.png").is_file()  # a pruned run gets its outputs, unlike an interrupted one
        assert s["engine"] == ("single" if population == 1 else "population")
        # MedianPruner's rule: worse than the median of the earlier complete trials at that epoch
        epoch = s["epochs"]
        started = t.number // population * population  # the first trial of its population
        earlier = sorted(c.intermediate_values[epoch] for c in complete if c.number < started)
        median = (earlier[(len(earlier) - 1) // 2] + earlier[len(earlier) // 2]) / 2
        assert len(earlier) >= 2 and t.intermediate_values[epoch] < median
    for t in complete:
        assert summary(folder / f"trial-{t.number:04d}")["status"] == "completed"
    run = folder / f"trial-{pruned[0].number:04d}"
    before = (run / "metrics.csv").read_text()  # trained on alone, it read 'completed' and the study 'pruned'
    refused = cli("train", "--resume", run)
    assert refused.exit_code == 2 and "is a trial of the sweep" in refused.stderr and refused.stderr.count("\n") == 1
    import os

    here = os.getcwd()
    os.chdir(run)
    try:  # from inside the trial ('.' has no parent of its own)
        inside = cli("train", "--resume", ".", "--epochs", 4)
    finally:
        os.chdir(here)
    assert inside.exit_code == 2 and "is a trial of the sweep" in inside.stderr
    assert (run / "metrics.csv").read_text() == before and summary(run)["status"] == "pruned"
    rows = {int(r["number"]): r for r in trials_csv(folder)}
    assert {rows[t.number]["state"] for t in pruned} == {"pruned"}
    assert (folder / "intermediate_values.png").is_file()


def test_a_rejected_combination_fails_its_trial_and_the_sweep_goes_on(sweep_config, tmp_path, quick_pictures):
    # nesterov needs momentum > 0: each value is valid alone, the pair is not
    space = {"optimizer.name": ["sgd", "nesterov"], "optimizer.momentum": [0.0, 0.9]}
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 4, "sampler": "random", "seed": 1, "space": space})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    folder = sweep_dir(tmp_path / "runs")
    rows = trials_csv(folder)
    rejected = [r for r in rows if r["state"] == "fail"]
    assert rejected, "seed 1 draws nesterov with momentum 0 at least once"
    for r in rows:
        bad = r["optimizer.name"] == "nesterov" and float(r["optimizer.momentum"]) == 0.0
        assert (r["state"] == "fail") == bad
        assert (folder / f"trial-{int(r['number']):04d}").exists() == (not bad)
    assert all("config rejected: optimizer.momentum" in r["note"] for r in rejected)
    assert sum(r["state"] == "complete" for r in rows) == 4  # failed trials do not count


def test_a_space_whose_trials_keep_being_rejected_ends_the_sweep_in_one_line(sweep_config, tmp_path, monkeypatch):
    """A space whose values rarely go together (beyond what is checked up front) failed trials for ever, and a
    stop request was not heard between them."""
    from fashionmlp.sweep import workers

    def rejected(trial, *args):
        trial.set_user_attr("error", "optimizer.momentum: nesterov needs momentum > 0")
        return None

    monkeypatch.setattr(workers, "configure", rejected)
    result = cli("sweep", "--config", sweep_config(), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: sweep.space: {workers.REJECTED_IN_A_ROW} trials in a row drew values no config accepts (the last: "
        "optimizer.momentum: nesterov needs momentum > 0); narrow the space to values that go together")


def test_rejections_count_in_a_row_and_a_refill_refused_lets_the_population_finish(sweep_config, tmp_path,
                                                                                   monkeypatch, quick_pictures):
    """The count of rejected trials was never reset by a good one (a space rejecting 3 of 4 ended a worker), and
    the error raised while a population refilled marked its training members crashed."""
    from fashionmlp.sweep import workers

    real, drawn = workers.configure, []

    def every_fourth(trial, *args):
        drawn.append(trial.number)
        if len(drawn) % 4 == 0:
            return real(trial, *args)
        trial.set_user_attr("error", "rejected")
        return None

    monkeypatch.setattr(workers, "configure", every_fourth)
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 3, "sampler": "random"})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--population", 3)
    assert result.exit_code == 0 and len(drawn) == 12, result.output

    def two_then_none(trial, *args):
        drawn.append(trial.number)
        if len(drawn) <= 2:
            return real(trial, *args)
        trial.set_user_attr("error", "rejected")
        return None

    drawn.clear()
    monkeypatch.setattr(workers, "configure", two_then_none)
    path = sweep_config("s2.yaml", train={"epochs": 2}, sweep={"trials": 6, "sampler": "random"})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "two", "--population", 2)
    assert result.exit_code == 2 and "trials in a row drew values no config accepts" in result.stderr
    runs = sorted((sweep_dir(tmp_path / "two")).glob("trial-*"))
    assert len(runs) == 2 and {summary(r)["status"] for r in runs} == {"completed"}  # not crashed
    study = load_study(sweep_dir(tmp_path / "two"))
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_a_space_rejected_in_every_worker_is_one_error_line(sweep_config, tmp_path):
    """With --jobs 2 each worker printed the error, then 'worker lost' lines, 'incomplete ... run the same command
    again' and exit 1. 2**14 mixes are beyond the up-front check: the workers find the space out."""
    space = {key: values for key, values in (
        ("optimizer.lr", [0.01, 0.02]), ("optimizer.weight_decay", [0.0, 1e-4]), ("optimizer.warmup", [0.0, 0.1]),
        ("optimizer.schedule", ["constant", "cosine"]), ("train.label_smoothing", [0.0, 0.1]),
        ("train.ema", [0.0, 0.9]), ("train.tta", ["none", "flip"]), ("optimizer.decay_params", ["all", "weights"]),
        ("train.batch_size", [16, 32]), ("model.activation", ["relu", "tanh"]), ("model.hidden", [[32], [16]]),
        ("model.dropout", [0.0, 0.1]), ("optimizer.betas", [[0.9, 0.999], [0.8, 0.99]]),
        ("train.epochs", [1, 2]), ("optimizer.name", ["nesterov"]), ("optimizer.momentum", [0.0]))}
    path = sweep_config(optimizer={"name": "sgd", "momentum": 0.9}, sweep={"sampler": "random", "space": space})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--jobs", 2)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: sweep.space: 20 trials in a row drew values no config accepts")


# ---------------------------------------------------------------- continuing a study


def test_a_read_only_sweep_folder_is_refused_in_one_line(sweep_config, tmp_path, quick_pictures, monkeypatch):
    """It was Optuna's traceback (PermissionError making the journal's lock), after the data had loaded."""
    import errno

    path = sweep_config(train={"epochs": 1}, sweep={"trials": 1})
    assert cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs").exit_code == 0
    folder = sweep_dir(tmp_path / "runs")
    journal = (folder / "optuna.journal").read_bytes()

    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):  # the sweep folder only (its runs folder is writable)
        if dir is not None and Path(dir) == folder:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    more = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--trials", 2)
    assert more.exit_code == 2 and more.stderr.strip().splitlines() == [
        f"error: study 'tiny': its sweep folder {str(folder)!r} cannot be written (Read-only file system); its "
        "trials and their run folders are written there; copy the runs folder somewhere writable and give that as "
        "--runs-dir"]
    assert (folder / "optuna.journal").read_bytes() == journal and len(trials_csv(folder)) == 1


def test_the_same_command_continues_the_study(sweep_config, tmp_path, quick_pictures):
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 2})
    first = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert first.exit_code == 0, first.output
    again = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert again.exit_code == 0 and "2 of 2 trials finished" in again.stdout and "running" not in again.stdout
    more = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--trials", 3)
    assert more.exit_code == 0, more.output
    folder = sweep_dir(tmp_path / "runs")  # still one folder
    assert [r["number"] for r in trials_csv(folder)] == ["0", "1", "2"]
    assert len({r["optimizer.lr"] for r in trials_csv(folder)}) == 3  # the continued sampler draws anew
    fewer = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--trials", 2)
    assert fewer.exit_code == 0, fewer.output
    assert "3 trials finished, more than the 2 asked for (nothing to run)" in fewer.stdout  # as it starts
    # the report's: it said "nothing to run" too, under the table of trials a worker had run (several machines)
    assert "Sweep tiny: 3 trials finished, more than the 2 asked for; best first" in fewer.stdout, fewer.stdout
    assert "3 of 2" not in fewer.stdout and "3 of 2" not in (folder / "summary.md").read_text()
    changed = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--set", "train.batch_size=16")
    assert changed.exit_code == 2
    assert changed.stderr.strip().splitlines() == [
        f"error: --study 'tiny' in {folder / 'optuna.journal'} was started from a different sweep config: "
        "train.batch_size 16 (the study has 32); continue it with the same config, or start a new study with "
        "--study NEW_NAME"]
    # a searched key's value in the config is not used (each trial sets its own): changed, the study continues;
    # given with --set it is refused (the trials' values replaced it without a word)
    searched = yaml.safe_load(path.read_text())
    searched["optimizer"]["lr"] = 0.5
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(searched))
    continued = cli("sweep", "--config", edited, "--runs-dir", tmp_path / "runs", "--study", "tiny")
    assert continued.exit_code == 0 and "3 trials finished, more than the 2 asked for" in continued.stdout, \
        continued.output
    given = cli("sweep", "--config", path, "--runs-dir", tmp_path / "other", "--set", "optimizer.lr=0.5")
    assert given.exit_code == 2 and not (tmp_path / "other").exists()
    assert given.stderr == ("error: --set optimizer.lr=0.5: optimizer.lr is searched (sweep.space): each trial "
                            "sets its own value, so this one would not be used; change its range in sweep.space, or "
                            "remove it from the space to fix it\n")
    # a search space of long lists: both sides were the whole space cut at the same place, hiding the difference
    space = {"optimizer.lr": {"low": 1e-3, "high": 0.1, "log": True}, "train.label_smoothing": [0.0, 0.5]}
    other = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--set", f"sweep.space={space}")
    assert other.exit_code == 2 and (
        "sweep.space['train.label_smoothing'] [0.0, 0.5] (not in the study's)") in other.stderr, other.stderr


def test_a_sweep_pins_its_teacher_notes_what_it_saw_and_refuses_another(sweep_config, tmp_path, tiny_data,
                                                                          quick_pictures):
    """A study continued after its teacher's weights changed mixed trials of two teachers in one table, best.yaml
    had no fingerprint (it trained with any teacher), and the note that the teacher saw the validation images
    the sweep is scored on reached only each trial's summary.json."""
    import shutil

    from fashionmlp.config import config_from_dict
    from fashionmlp.run import train

    teachers = [train(config_from_dict(tiny_config(tiny_data, name=f"teacher{seed}", seed=seed)),
                      runs_dir=tmp_path / "teachers").run_dir for seed in (0, 1)]
    teacher = tmp_path / "teacher"
    shutil.copytree(teachers[0], teacher)
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 1}, distill={"teacher": str(teacher)})
    runs = tmp_path / "runs"
    first = cli("sweep", "--config", path, "--runs-dir", runs)
    assert first.exit_code == 0, first.output
    note = "did not hold out this run's validation images"
    folder = sweep_dir(runs)
    assert note in first.stdout and note in (folder / "summary.md").read_text()
    best = yaml.safe_load((folder / "best.yaml").read_text())
    trial = yaml.safe_load(next(folder.glob("trial-*/config.yaml")).read_text())
    assert best["distill"]["fingerprint"] == trial["distill"]["fingerprint"] is not None
    moved = tmp_path / "elsewhere" / "teacher"  # the same weights at another path (another machine): it continues
    shutil.copytree(teacher, moved)
    there = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", 2, "--set", f"distill.teacher={moved}")
    assert there.exit_code == 0, there.output
    assert len(trials_csv(folder)) == 2
    shutil.rmtree(teacher)
    shutil.copytree(teachers[1], teacher)  # the same folder, other weights
    again = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", 3)
    assert again.exit_code == 2 and again.stderr.startswith(
        "error: --study 'tiny' in ") and "the teacher's weights changed since the study started" in again.stderr
    assert len(trials_csv(folder)) == 2
    refused = cli("train", "--config", folder / "best.yaml", "--runs-dir", runs, "--set", f"distill.teacher={teacher}")
    assert refused.exit_code == 2 and "are not the ones distill.fingerprint names" in refused.stderr
    # a study made before sweeps pinned the teacher (its path as given, no fingerprint) still continues
    study = load_study(folder)
    legacy = study.user_attrs["fashionmlp_sweep"]
    legacy["config"]["distill"] = {**legacy["config"]["distill"], "teacher": str(teacher), "fingerprint": None}
    study.set_user_attr("fashionmlp_sweep", legacy)
    old = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", 3)
    assert old.exit_code == 0, old.output


def test_best_yaml_names_the_thread_count_of_its_trial(sweep_config, tmp_path, quick_pictures):
    """best.yaml said train.threads: 0 where its trial trained on 1 (two workers, or a busy machine): trained
    again on 2 threads it scored 84.80% against the trial's 84.00%, with nothing to say why. It keeps the config's
    count (pinning 2 of 16 cores would slow "train the winner longer") and names the trial's."""
    path = sweep_config(train={"epochs": 1, "threads": 0}, sweep={"trials": 2})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--population", 1)
    assert result.exit_code == 0, result.output
    folder = sweep_dir(tmp_path / "runs")
    best = max(trials_csv(folder), key=lambda r: (float(r["val_accuracy"]), -int(r["number"])))
    threads = summary(folder / f"trial-{int(best['number']):04d}")["threads"]
    text = (folder / "best.yaml").read_text()
    assert yaml.safe_load(text)["train"]["threads"] == 0 and threads >= 1
    assert (f"# The trial trained on {threads} CPU thread(s): a float32 run's numbers depend on the count; --set "
            f"train.threads={threads} repeats them") in text
    # trained with another trial, batched: a run of its own does not repeat its float32 numbers bit for bit
    for population in (1, 2):
        runs = tmp_path / f"population{population}"
        assert cli("sweep", "--config", path, "--runs-dir", runs, "--population", population).exit_code == 0
        sweep = sweep_dir(runs)
        best = max(trials_csv(sweep), key=lambda r: (float(r["val_accuracy"]), -int(r["number"])))
        engine = summary(sweep / f"trial-{int(best['number']):04d}")["engine"]
        text = (sweep / "best.yaml").read_text()
        said = "# It trained in a population (with other trials, batched)" in text
        assert said == (engine == "population") == (population == 2), engine
        assert ("repeats them" in text) == (not said)  # it promised a repeat bit for bit no run of its own gives


def test_a_space_with_fewer_points_than_trials_says_points_train_again(sweep_config, tmp_path, quick_pictures):
    """12 random trials of a 3-point space trained each point 3-5 times, with equal scores, and said nothing."""
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 3, "sampler": "random",
                                                     "space": {"optimizer.lr": [0.01, 0.02]}})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert ("note: the space has 2 points and the sweep asks for 3 trials: the random sampler trains points more than "
            "once (alike, with one seed); sampler: grid trains each once") in result.stdout
    wide = cli("sweep", "--config", path, "--runs-dir", tmp_path / "wide", "--trials", 2)
    assert wide.exit_code == 0 and "note: the space has" not in wide.stdout


def test_best_yaml_says_which_epoch_scored_with_early_stopping():
    """It said 'after 8 epochs' of a trial that stopped after 4 with epoch 3's weights (and score)."""
    from fashionmlp.sweep.report import _when

    assert _when({"epochs": 8, "restored": None}, 8) == " after 8 epochs"
    assert _when({"epochs": 8, "restored": 8}, 8) == " after 8 epochs"
    assert _when({"epochs": 4, "restored": 3}, 8) == ", its epoch 3 (early stopping: it trained 4 of its 8 epochs)"
    assert _when({"epochs": 8, "restored": 6}, 8) == ", its epoch 6 (early stopping: it trained 8 of its 8 epochs)"
    assert _when({"epochs": 5, "restored": None}, 8) == " after 5 of its 8 epochs"  # on another machine
    assert _when({"epochs": None, "restored": None}, 8) == " after 8 epochs"


def test_a_sweep_whose_trials_all_diverged_says_there_is_no_best(sweep_config, tmp_path, quick_pictures):
    """Every trial diverged: exit 0 with no word of a best trial, and no best.yaml, summary.md silent too."""
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 2, "sampler": "random",
                                                     "space": {"optimizer.lr": {"low": 1e20, "high": 1e30}}})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0 and result.stdout.count(" diverged ") >= 2, result.output
    said = "no trial has completed, so there is no best trial and no best.yaml"
    assert f"best: {said}" in result.stdout
    folder = sweep_dir(tmp_path / "runs")
    assert f"Best: {said}." in (folder / "summary.md").read_text() and not (folder / "best.yaml").exists()


def test_the_report_names_a_best_trial_of_another_runs_folder_by_its_path(sweep_config, tmp_path, quick_pictures):
    """Two commands sharing one study (a database, or one journal) keep their trials in their own runs folders:
    each report named the best trial's folder by its name alone, as if it were beside it. Early stopping: best.yaml
    said the trial's result came after its planned epochs."""
    path = sweep_config(train={"epochs": 3, "patience": 1}, sweep={"trials": 2, "sampler": "random", "seed": 0})
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = cli("sweep", "--config", path, "--runs-dir", tmp_path / "a", "--storage", url, "--trials", 1)
    assert first.exit_code == 0, first.output
    second = cli("sweep", "--config", path, "--runs-dir", tmp_path / "b", "--storage", url)
    assert second.exit_code == 0, second.output
    again = cli("sweep", "--config", path, "--runs-dir", tmp_path / "a", "--storage", url)  # the report, in a
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="tiny", storage=url)
    best = max(finished(study), key=lambda t: t.value)
    run_dir = Path(best.user_attrs["run_dir"])
    for runs, result in (("a", again), ("b", second)):  # one of the two holds it
        shown = run_dir.name if run_dir.parent == sweep_dir(tmp_path / runs) else str(run_dir)
        assert f"best: trial {best.number} (run folder {shown}), val_accuracy" in result.stdout
    text = (sweep_dir(tmp_path / "b") / "best.yaml").read_text()
    trained, restored = best.user_attrs["epochs"], summary(run_dir)["early_stopping"]["restored_epoch"]
    assert (f"its epoch {restored} (early stopping: it trained {trained} of its 3 epochs)." if restored != 3 else
            " after 3 epochs.") in text, text.splitlines()[0]


def test_a_best_trial_whose_folder_was_deleted_is_not_pointed_at(sweep_config, tmp_path, quick_pictures):
    """The best trial's run folder deleted, the same command said its test accuracy was 'in <that folder>/
    summary.json' on this machine (summary.md: 'not on this machine'); the study still has its value and
    best.yaml still trains it."""
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 2, "sampler": "random", "seed": 0})
    runs = tmp_path / "runs"
    first = cli("sweep", "--config", path, "--runs-dir", runs)
    assert first.exit_code == 0 and "; its test accuracy " in first.stdout and "summary.json on" not in first.stdout
    folder = sweep_dir(runs)
    best = max(trials_csv(folder), key=lambda r: (float(r["val_accuracy"]), -int(r["number"])))
    shutil.rmtree(folder / f"trial-{int(best['number']):04d}")
    again = cli("sweep", "--config", path, "--runs-dir", runs)
    assert again.exit_code == 0, again.output
    assert "; its test accuracy unknown (its run folder is gone) (reported once" in again.stdout
    assert "its test accuracy unknown (its run folder is gone)" in (folder / "summary.md").read_text()
    assert (folder / "best.yaml").is_file()


def test_best_yaml_names_its_teacher_by_an_absolute_path(sweep_config, tmp_path, tiny_data, quick_pictures,
                                                         monkeypatch):
    """A teacher given as a relative path stayed relative in best.yaml and sweep.yaml: `train --config
    best.yaml` from another folder was refused (no such folder)."""
    from fashionmlp.config import config_from_dict
    from fashionmlp.run import train

    monkeypatch.chdir(tmp_path)
    teacher = train(config_from_dict(tiny_config(tiny_data, name="teacher")), runs_dir=Path("teachers")).run_dir
    assert not teacher.is_absolute()
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 1}, distill={"teacher": str(teacher)})
    first = cli("sweep", "--config", path, "--runs-dir", "runs")
    assert first.exit_code == 0, first.output
    folder = sweep_dir(tmp_path / "runs")
    for name in ("best.yaml", "sweep.yaml"):
        assert yaml.safe_load((folder / name).read_text())["distill"]["teacher"] == str(tmp_path / teacher), name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("train", "--config", folder / "best.yaml", "--epochs", 1)
    assert result.exit_code == 0, result.output


def _start(path: Path, runs: Path, *extra, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "fashionmlp", "sweep", "--config", str(path), "--runs-dir",
                             str(runs), *map(str, extra)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _running_trial(runs: Path, proc: subprocess.Popen, pids=None, timeout: float = 120) -> tuple[Path, int]:
    """A trial folder in the middle of its training (>= 1 epoch done) and the pid that trains it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for run in runs.glob("sweep-*/trial-*"):
            try:
                status = summary(run)["status"]
                epochs = len((run / "metrics.csv").read_text().splitlines()) - 1
                pid = int((run / ".lock").read_text())
            except (OSError, ValueError, KeyError):
                continue
            if status == "running" and epochs >= 1 and (pids is None or pid in pids):
                return run, pid
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no trial reached its first epoch in time")


@pytest.fixture
def slow_sweep(sweep_config):
    # batch 1: 256 steps per epoch, 20 epochs: a few seconds per trial, easy to catch mid-way
    return sweep_config("slow.yaml", train={"epochs": 20, "batch_size": 1},
                        sweep={"trials": 2, "space": {"optimizer.lr": {"low": 1e-3, "high": 1e-2, "log": True}}})


def test_two_workers_share_one_journal_and_a_kill_9_fails_only_its_trial(slow_sweep, tmp_path):
    runs = tmp_path / "runs"
    proc = _start(slow_sweep, runs, "--jobs", 2)
    run, pid = _running_trial(runs, proc)
    assert pid != proc.pid  # a worker process, not the command
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert "2 worker(s), 1 CPU thread(s) each" in out
    assert "worker lost: worker-" in err and "was killed by SIGKILL" in err and "Traceback" not in err
    # Usually the other worker fails the orphaned trial, runs its values again and finishes the study (exit 0);
    # if it had already stopped (the dead trial still counted as running), the command says so (exit 1).
    assert proc.returncode == 0 or (proc.returncode == 1 and "incomplete: 1 of 2" in err), err
    if proc.returncode == 1:  # then the same command completes it
        again = _start(slow_sweep, runs)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
    folder = sweep_dir(runs)
    study = load_study(folder)
    trials = study.get_trials()
    killed = int(run.name.split("-")[1])
    assert trials[killed].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == trials[killed].params
    # together the workers finished the requested count; nothing else was lost, and no number ran twice
    assert len(finished(study)) == 2 and len(trials) == 3
    # the retry continued the killed trial's run in its folder, from its last finished epoch
    assert retry[0].user_attrs["run_dir"] == str(run.resolve())
    assert sorted(p.name for p in folder.glob("trial-*")) == [f"trial-{t.number:04d}" for t in trials
                                                              if t.number != retry[0].number]
    assert summary(run)["status"] == "completed" and summary(run)["epochs"] == 20
    assert sorted(retry[0].intermediate_values) == list(range(1, 21))  # the epochs before the kill reported too
    owners = {t.number: t.user_attrs["worker"] for t in trials}
    assert all(o["trial"] == n for n, o in owners.items())
    assert len({o["pid"] for o in owners.values()}) >= 2 and pid in {o["pid"] for o in owners.values()}
    for t in trials:
        trained = Path(t.user_attrs["run_dir"])
        assert yaml.safe_load((trained / "config.yaml").read_text())["train"]["threads"] == 1
        if t.number != killed:  # the last to train in the folder holds its lock file
            assert (trained / ".lock").read_text().strip() == str(owners[t.number]["pid"])
    rows = {int(r["number"]): r for r in trials_csv(folder)}
    assert rows[killed]["state"] == "fail" and rows[killed]["note"] == "worker lost (killed?)"
    # the epochs it reported before the kill (the column was blank), and no seconds: the time until its loss was
    # noticed is not the trial's
    reported = trials[killed].intermediate_values  # none when the kill came between an epoch's files and its report
    assert rows[killed]["epochs"] == (str(max(reported)) if reported else "") and rows[killed]["seconds"] == ""
    assert rows[retry[0].number]["note"] == f"retry of {killed}; continued its run {run.name}"


def test_interrupt_or_kill_9_then_the_same_command_completes_the_study(slow_sweep, tmp_path):
    runs = tmp_path / "runs"
    # Ctrl-C: the trial stops after its step, is marked failed and queued again; exit 130
    proc = _start(slow_sweep, runs, "--population", 1)
    run, pid = _running_trial(runs, proc)
    assert pid == proc.pid  # one worker: the command itself
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    assert summary(run)["status"] == "interrupted"
    folder = sweep_dir(runs)
    interrupted = int(run.name.split("-")[1])
    rows = {int(r["number"]): r for r in trials_csv(folder)}
    assert rows[interrupted]["state"] == "fail" and rows[interrupted]["note"] == "interrupted"
    assert rows[interrupted + 1]["state"] == "waiting" and rows[interrupted + 1]["note"] == f"retry of {interrupted}"
    stopped_after = summary(run)["epochs"]
    # kill -9: nobody is left to notice; the next command finds the trial's worker gone
    proc = _start(slow_sweep, runs, "--population", 1)
    continued, pid = _running_trial(runs, proc)
    killed = interrupted + 1  # the queued retry ran first, continuing the interrupted trial's run in its folder
    assert continued == run and load_study(folder).get_trials()[killed].state.name == "RUNNING"
    deadline = time.time() + 120
    while summary(run)["epochs"] <= stopped_after:  # it goes on from there (not from its first epoch)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    # what the next command does first: it finds the trial's worker gone, fails it, queues its values again and
    # marks the folder "killed", naming the trial that trained there last (two trials share it)
    from fashionmlp.sweep.storage import fail_dead_trials

    assert fail_dead_trials(load_study(folder), folder) == [killed]
    killed_run = summary(run)  # its folder no longer says "running"
    assert killed_run["status"] == "killed" and f"trial {killed} was marked failed" in killed_run["killed"]
    again = _start(slow_sweep, runs, "--population", 1)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"trial {killed + 1:>3} continues {run.name} after its epoch" in out
    assert summary(run)["status"] == "completed" and summary(run)["epochs"] == 20
    study = load_study(folder)
    assert study.get_trials()[interrupted].state.name == study.get_trials()[killed].state.name == "FAIL"
    retried = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == interrupted]
    assert [t.system_attrs["retry_history"] for t in retried] == [[interrupted], [interrupted, killed]]
    assert retried[-1].state.name == "COMPLETE" and len(finished(study)) == 2
    rows = {int(r["number"]): r for r in trials_csv(folder)}
    assert rows[killed]["note"] == f"retry of {interrupted}; continued its run {run.name}; worker lost (killed?)"
    assert rows[killed + 1]["note"] == f"retry of {killed}; continued its run {run.name}"
    b = max(finished(study), key=lambda t: t.value)  # named with the folder it trained in (a retry's: another's)
    assert f"best: trial {b.number} (run folder {Path(b.user_attrs['run_dir']).name})" in out


def test_a_retry_continues_the_stopped_trials_run_exactly_where_it_stopped(sweep_config, tmp_path):
    """Ctrl-C used to cost the running trial every epoch it had finished: its retry trained from the start. The
    retry now continues the run folder from its last finished epoch, and ends exactly where the trial would have
    ended without the stop (threads 1: the same order of additions)."""
    path = sweep_config("one.yaml", train={"epochs": 12, "batch_size": 1},
                        sweep={"sampler": "grid", "trials": 1, "space": {"optimizer.lr": [0.005]}})
    whole = _start(path, tmp_path / "whole")
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    runs = tmp_path / "stopped"
    proc = _start(path, runs)
    run, _ = _running_trial(runs, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.communicate(timeout=120)[0] and proc.returncode == 130
    stopped_after = summary(run)["epochs"]
    assert summary(run)["status"] == "interrupted" and 1 <= stopped_after < 12
    again = _start(path, runs)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"trial   1 continues trial-0000 after its epoch {stopped_after}" in out
    assert sorted(p.name for p in sweep_dir(runs).glob("trial-*")) == ["trial-0000"]  # no second folder
    timing = ("seconds", "samples_per_second")
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in trials_csv_of(folder / "trial-0000")]
            for folder in (sweep_dir(tmp_path / "whole"), sweep_dir(runs))]
    assert len(rows[0]) == 12 and rows[1] == rows[0]
    study = load_study(sweep_dir(runs))
    first, retry = study.get_trials()
    assert first.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert retry.value == load_study(sweep_dir(tmp_path / "whole")).get_trials()[0].value
    assert sorted(retry.intermediate_values) == list(range(1, 13))


def _stopped_run(tiny_data, run_dir: Path, name: str, **sections):
    """A sweep trial's run stopped by Ctrl-C in its second epoch; its config."""
    from fashionmlp.config import config_from_dict
    from fashionmlp.progress import Progress, StopRequest
    from fashionmlp.run import train

    stop = StopRequest()

    class AfterOneEpoch(Progress):
        def end_epoch(self, result, epochs: int) -> None:
            stop.request()

    cfg = config_from_dict(tiny_config(tiny_data, name=name, data={"val_size": VAL}, **sections))
    assert train(cfg, run_dir=run_dir, stop=stop, progress=AfterOneEpoch()).status == "interrupted"
    return cfg


def test_which_stopped_runs_a_retry_continues(tiny_data, tmp_path, quick_pictures):
    """resumable: only a stopped run of this machine's sweep folder, with an epoch done and the trial's config (its
    name and thread count aside, and its teacher's path when its weights are pinned alike); anything else trains
    the retry from the start in a folder of its own."""
    import dataclasses

    from fashionmlp.config import config_from_dict, with_values
    from fashionmlp.run import train
    from fashionmlp.sweep.retries import _same_run, resumable

    sweep = tmp_path / "sweep"
    cfg = _stopped_run(tiny_data, sweep / "trial-0000", "s-trial-0000")
    retry = dataclasses.replace(cfg, name="s-trial-0005")
    stopped = resumable(sweep / "trial-0000", retry, sweep)
    assert [r["epoch"] for r in stopped.history] == [1] and stopped.cfg.name == "s-trial-0000"
    assert stopped.epoch == 1 and not stopped.finishing
    other_threads = dataclasses.replace(retry, train=dataclasses.replace(retry.train, threads=2))
    assert resumable(sweep / "trial-0000", other_threads, sweep).cfg.train.threads == 1  # as it started
    other_lr = dataclasses.replace(retry, optimizer=dataclasses.replace(retry.optimizer, lr=0.02))
    assert resumable(sweep / "trial-0000", other_lr, sweep) is None
    assert resumable(sweep / "trial-0000", retry, tmp_path / "elsewhere") is None  # not this sweep's folder
    assert resumable(sweep / "trial-0009", retry, sweep) is None  # no such folder
    train(cfg, run_dir=sweep / "trial-0001")  # finished: nothing to continue
    assert resumable(sweep / "trial-0001", retry, sweep) is None
    # a distilled trial: its run records the teacher's resolved path, the sweep's config the path as given
    taught = {"teacher": "runs/cnn", "fingerprint": "a" * 64}
    as_given = config_from_dict(tiny_config(tiny_data, distill=taught))
    resolved = config_from_dict(tiny_config(tiny_data, distill={**taught, "teacher": "/abs/runs/cnn"}))
    other = config_from_dict(tiny_config(tiny_data, distill={"teacher": "/abs/runs/cnn", "fingerprint": "b" * 64}))
    assert _same_run(resolved, as_given) and not _same_run(other, as_given)
    # its teacher moved (the sweep run again with distill.teacher naming the new folder): the retry continues
    # it, its config.yaml naming the new folder (it said "no such folder" and trained the trial from epoch 1)
    import shutil

    from fashionmlp.config import load_config
    from fashionmlp.resume import resume

    teacher = train(config_from_dict(tiny_config(tiny_data, name="teacher")), runs_dir=tmp_path / "teachers").run_dir
    taught = _stopped_run(tiny_data, sweep / "trial-0002", "s-trial-0002", distill={"teacher": str(teacher)})
    pinned = load_config(sweep / "trial-0002" / "config.yaml").distill.fingerprint
    moved = shutil.move(teacher, tmp_path / "moved")
    retry = with_values(taught, {"name": "s-trial-0006", "distill.teacher": os.path.relpath(moved),
                                 "distill.fingerprint": pinned})
    stopped = resumable(sweep / "trial-0002", retry, sweep)
    assert stopped is not None and stopped.cfg.distill.teacher == str(Path(moved).resolve())
    assert load_config(sweep / "trial-0002" / "config.yaml").distill.teacher == str(Path(moved).resolve())
    assert resume(sweep / "trial-0002").summary["epochs"] == taught.train.epochs


class _FakeTrial:
    """What train_batch asks of an optuna.Trial."""

    def __init__(self, number: int):
        self.number, self.reports, self.attrs = number, {}, {}

    def report(self, value, step):
        self.reports[step] = value

    def should_prune(self):
        return False

    def set_user_attr(self, key, value):
        self.attrs[key] = value


def test_retries_whose_runs_only_need_their_end_or_are_refused_do_not_stop_the_worker(tiny_data, tmp_path,
                                                                                      sweep_config, quick_pictures):
    """Two members killed after their last epoch (while drawing) made resume_population raise, killing the worker
    on every rerun; a run that --resume refuses after all (its folder held by another process a moment) did so
    too. The first only write their end; the second trains from the start in the retry's own folder."""
    import json as _json

    from fashionmlp.config import config_from_dict
    from fashionmlp.progress import StopRequest
    from fashionmlp.run import train
    from fashionmlp.runlock import lock_run_dir
    from fashionmlp.sweep.retries import resumable
    from fashionmlp.sweep.space import load_sweep_file
    from fashionmlp.sweep.trials import Asked, train_batch

    spec = load_sweep_file(sweep_config())
    sweep = tmp_path / "sweep"
    asked = []
    for n in (0, 1):  # finished, then marked killed: as a kill while the pictures were drawn leaves them
        cfg = config_from_dict(tiny_config(tiny_data, name=f"s-trial-{n:04d}", data={"val_size": VAL}))
        run = train(cfg, run_dir=sweep / f"trial-{n:04d}").run_dir
        summary_path = run / "summary.json"
        summary_path.write_text(_json.dumps({**_json.loads(summary_path.read_text()), "status": "killed"}))
        stopped = resumable(run, cfg, sweep)
        assert stopped.finishing
        asked.append(Asked(_FakeTrial(n + 4), cfg, sweep / f"trial-{n + 4:04d}", stopped))
    lines: list[str] = []
    ended: list[int] = []
    results = train_batch(asked, spec, 2, None, tiny_data, None, StopRequest(), lines.append, None,
                          ended=lambda a, result: ended.append(a.trial.number))
    assert {n: r.status for n, r in results.items()} == {4: "completed", 5: "completed"} and ended == [4, 5]
    metrics = trials_csv_of(sweep / "trial-0000")  # its epochs reported as the retry's own
    assert not (sweep / "trial-0004").exists() and asked[0].trial.reports == {
        int(r["epoch"]): pytest.approx(float(r["val_accuracy"])) for r in metrics}
    # refused after all: trains from the start, in its own folder
    cfg = _stopped_run(tiny_data, sweep / "trial-0002", "s-trial-0002")
    retry = Asked(_FakeTrial(6), cfg, sweep / "trial-0006", resumable(sweep / "trial-0002", cfg, sweep))
    with lock_run_dir(sweep / "trial-0002"):
        results = train_batch([retry], spec, 1, None, tiny_data, None, StopRequest(), lines.append, None)
    assert results[6].status == "completed" and results[6].run_dir == sweep / "trial-0006"
    assert any(line.startswith("trial   6 cannot continue trial-0002 (run folder") for line in lines), lines
    assert retry.trial.attrs["run_dir"] == str((sweep / "trial-0006").resolve())
    assert summary(sweep / "trial-0002")["status"] == "interrupted"  # left as it was


def trials_csv_of(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


GRID = {"optimizer.lr": [0.01, 0.1, 0.3], "train.batch_size": [16, 32]}  # the issue's 6-point grid, scaled down


def grid_points_trained(folder: Path) -> list[tuple]:
    rows = [r for r in trials_csv(folder) if r["state"] == "complete"]
    return sorted((float(r["optimizer.lr"]), int(r["train.batch_size"])) for r in rows)


def test_a_grid_is_covered_exactly_once_by_two_workers(sweep_config, tmp_path, quick_pictures):
    """Two workers used to race in GridSampler: (0.1, 128) trained twice, (0.01, 64) never. The points are now
    queued in the study once and handed out by the storage."""
    path = sweep_config(train={"epochs": 2, "threads": 64}, sweep={"sampler": "grid", "trials": 6, "space": GRID})
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--jobs", 2)
    assert result.exit_code == 0, result.output
    cores = len(os.sched_getaffinity(0))  # train.threads was replaced by the workers' share without a word
    assert f"note: train.threads 64 is not used: the 2 workers share the {cores} cores" in result.stdout
    folder = sweep_dir(tmp_path / "runs")
    assert grid_points_trained(folder) == sorted((lr, b) for lr in GRID["optimizer.lr"] for b in GRID["train.batch_size"])
    assert len(trials_csv(folder)) == 6 and "not complete" not in result.stdout
    again = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--jobs", 2)  # nothing left to do
    assert again.exit_code == 0 and "6 of 6 trials finished" in again.stdout and len(trials_csv(folder)) == 6


def test_an_interrupted_grid_says_which_points_are_missing(sweep_config, tmp_path, quick_pictures):
    from fashionmlp.sweep import load_sweep_file, run_sweep

    path = sweep_config(train={"epochs": 1}, sweep={"sampler": "grid", "trials": 6, "space": GRID})
    spec = load_sweep_file(path)

    class StopAfterFirstTrials:
        reason, asked = "interrupted", 0

        @property
        def requested(self) -> bool:
            self.asked += 1
            return self.asked > 40  # a few trials' steps, then stop

    lines: list[str] = []
    result = run_sweep(spec, study="tiny", runs_dir=tmp_path / "runs", population=1, echo=lines.append,
                       stop=StopAfterFirstTrials())
    assert result.interrupted and 0 < len(result.missing) < 6
    assert any(line.startswith(f"the grid is not complete: {len(result.missing)} point(s) not finished")
               for line in lines)
    assert "**The grid is not complete**" in (result.sweep_dir / "summary.md").read_text()
    done = set(grid_points_trained(result.sweep_dir))
    assert {(p["optimizer.lr"], p["train.batch_size"]) for p in result.missing} | done == {
        (lr, b) for lr in GRID["optimizer.lr"] for b in GRID["train.batch_size"]}
    waiting = [r for r in trials_csv(result.sweep_dir) if r["state"] == "waiting"]
    assert waiting and all(r["optimizer.lr"] and r["train.batch_size"] for r in waiting)  # the points left, shown


def test_a_grid_point_another_machine_is_training_is_not_called_missing(sweep_config, tmp_path, quick_pictures):
    """The command that ended first said "not complete: 1 point(s) not finished ... run the same command again"
    of a point another command was training."""
    from fashionmlp.sweep import load_sweep_file, run_sweep
    from fashionmlp.sweep.run import _open_study

    spec = load_sweep_file(sweep_config(train={"epochs": 1}, sweep={"sampler": "grid", "trials": 6, "space": GRID}))
    _, folder, storage = _open_study(spec, "tiny", None, tmp_path / "runs")
    elsewhere = optuna.load_study(study_name="tiny", storage=storage).ask()  # a point taken by another machine
    elsewhere.set_user_attr("worker", {"host": "another-machine", "pid": 1, "started": None,
                                       "trial": elsewhere.number})
    point = {p.key: p.decode(p.suggest(elsewhere)) for p in spec.params}
    lines: list[str] = []
    result = run_sweep(spec, study="tiny", runs_dir=tmp_path / "runs", population=1, echo=lines.append)
    assert result.finished == 5 and result.running == 1 and result.missing == []
    assert result.training == [point]
    assert not any("point(s) not finished" in line for line in lines)
    assert "the grid is not complete yet: 1 point(s) still training elsewhere" in "\n".join(lines)
    report = (folder / "summary.md").read_text()
    assert "**The grid is not complete yet**: 1 point(s) still training" in report and "never finished" not in report


def test_a_trial_asked_but_not_started_when_a_stop_came_is_noted_interrupted_not_lost():
    """A population's trial that a stop kept from starting was queued again, as the terminal said, while the
    table, summary.md and trials.csv called it `worker lost (killed?)`."""
    from fashionmlp.sweep.owners import _owner
    from fashionmlp.sweep.report import _note
    from fashionmlp.sweep.storage import OWNER
    from fashionmlp.sweep.workers import _tell_interrupted

    study = optuna.create_study(direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(OWNER, _owner(trial.number))  # as configure() leaves an asked trial
    trial.set_user_attr("status", "running")
    lines: list[str] = []
    assert _tell_interrupted(study, study, trial, None, lines.append) is True
    first, retry = study.get_trials()
    assert first.state == optuna.trial.TrialState.FAIL and _note(first) == "interrupted"
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == first.params
    assert lines == [f"trial {trial.number:>3} interrupted: marked failed and queued to run again"]
    # one stopped after 2 epochs keeps its run's seconds in the table (a failed trial's Optuna time is not shown)
    from types import SimpleNamespace

    from fashionmlp.sweep.report import _epochs, _seconds

    ran = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    ran.set_user_attr(OWNER, _owner(ran.number))
    _tell_interrupted(study, study, ran, SimpleNamespace(summary={"epochs": 2, "seconds": 3.44},
                                                         status="interrupted"), lines.append)
    stopped = study.get_trials()[ran.number]
    assert (_epochs(stopped, stopped.user_attrs), _seconds(stopped)) == (2, 3.4)
    retry = study.get_trials()[-1]  # queued, never run: not its parent's 3.4 s
    assert retry.state.name == "WAITING" and retry.user_attrs["seconds"] == 3.44 and _seconds(retry) is None


def test_heartbeats_keep_a_training_trial_alive_and_a_silent_one_is_retried(tmp_path, monkeypatch):
    """Study.optimize beats for its trial; the ask/tell workers beat themselves (heartbeats.heartbeats)."""
    from fashionmlp.sweep import heartbeats as sweep_heartbeats
    from fashionmlp.sweep import storage as sweep_storage

    monkeypatch.setattr(sweep_storage, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(sweep_storage, "GRACE_SECONDS", 2)
    store = sweep_storage.open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    study = optuna.create_study(study_name="hb", storage=store)
    with pytest.warns(UserWarning):
        trial, late = study.ask(), study.ask()

    def beaten() -> set[int]:
        with sqlite3.connect(tmp_path / "hb.db") as db:
            return {row[0] for row in db.execute("SELECT trial_id FROM trial_heartbeats")}

    with sweep_heartbeats.heartbeats(store, "hb", [trial.number]) as beats:
        assert beaten() == {trial._trial_id}
        beats.add([late.number])  # a trial that joins a running population: beaten at once
        assert beaten() == {trial._trial_id, late._trial_id}
        beats.drop(late.number)  # its run ended (a real one is told; this one is left silent)
        time.sleep(3.5)
        sweep_heartbeats.fail_stale_trials(study)
        states = [t.state.name for t in study.get_trials()]
        assert states[trial.number] == "RUNNING" and states[late.number] == "FAIL"  # beating: alive; dropped: not
    time.sleep(3.5)
    sweep_heartbeats.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[trial.number].state.name == "FAIL"  # silent past the grace period: failed ...
    assert trials[-1].state.name == "WAITING" and trials[-1].system_attrs["failed_trial"] == trial.number  # retried


def test_a_grid_whose_queueing_was_cut_short_trains_every_point_on_the_next_run(sweep_config, tmp_path, monkeypatch,
                                                                                quick_pictures):
    """The study's config was stored before its points were queued, and points were queued only for a new
    study: a process killed while queueing (10 of 60 queued) left the rest untrained by every later run, which
    said "run the same command again to train them" and exited 0."""
    grid = {"optimizer.lr": [0.01, 0.02, 0.03], "optimizer.momentum": [0.0, 0.5]}
    path = sweep_config(train={"epochs": 1}, optimizer={"name": "sgd"}, sweep={"sampler": "grid", "trials": 6,
                                                                             "space": grid})
    real, calls = optuna.Study.enqueue_trial, []

    def killed_after_two(study, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise SystemExit("killed")  # as a kill -9 while queueing: nothing after it runs
        return real(study, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", killed_after_two)
    assert cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs").exit_code != 0
    monkeypatch.setattr(optuna.Study, "enqueue_trial", real)
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "not complete" not in result.stdout
    study = load_study(sweep_dir(tmp_path / "runs"))
    done = sorted((t.params["optimizer.lr"], t.params["optimizer.momentum"]) for t in finished(study))
    assert done == sorted((lr, m) for lr in grid["optimizer.lr"] for m in grid["optimizer.momentum"])  # each once


OPEN_AT = """
import sys, time
from pathlib import Path
import fashionmlp.sweep.run as run
from fashionmlp.sweep.space import load_sweep_file
find = run._find_sweep_dir
def slow(*args):  # a second between looking for the folder and making it: without the lock both make one
    found = find(*args)
    time.sleep(1)
    return found
run._find_sweep_dir = slow
spec = load_sweep_file(Path(sys.argv[1]))
while time.time() < float(sys.argv[3]):
    pass
print(run._open_study(spec, "tiny", None, Path(sys.argv[2]))[1])
"""


def test_two_commands_started_together_share_one_study(sweep_config, tmp_path):
    """Each found no folder of the study and made its own (sweep-tiny-<time> and sweep-tiny-<time>-2), each
    with its own journal and study: every point of a grid was trained twice."""
    path = sweep_config(sweep={"sampler": "grid", "trials": 2, "space": {"optimizer.lr": [0.01, 0.03]}})
    at = time.time() + 6  # both have imported by then, and open the study at the same instant
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(path), str(tmp_path / "runs"), str(at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    folders = [out.splitlines()[-1] for out, _ in outs]  # the later one first said it waits for the other
    assert folders[0] == folders[1] and [p.name for p in (tmp_path / "runs").iterdir() if p.name != ".sweep.lock"] == [
        Path(folders[0]).name]
    assert len(load_study(sweep_dir(tmp_path / "runs")).get_trials()) == 2  # the grid queued once (or a copy failed)


def test_a_command_waiting_for_another_to_open_its_study_says_so_and_ctrl_c_ends_the_wait(tmp_path):
    """It waited in silence (~30 s behind a stale journal lock), and its first Ctrl-C was only noted."""
    import fcntl

    from fashionmlp.errors import StoppedBeforeStart
    from fashionmlp.progress import StopRequest
    from fashionmlp.sweep.run import _one_process_at_a_time

    (tmp_path / "runs").mkdir()
    stop, lines = StopRequest(), []

    def echo(line):  # the user presses Ctrl-C once the wait is said
        lines.append(line)
        stop.request()

    def hung(signum, frame):  # without the fix the wait never ends: fail instead of hanging the suite
        raise TimeoutError("still waiting for the lock 20 s after Ctrl-C")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with open(tmp_path / "runs" / ".sweep.lock", "a+") as other:  # another command holds it
            fcntl.flock(other.fileno(), fcntl.LOCK_EX)
            with pytest.raises(StoppedBeforeStart, match="interrupted before the sweep started: nothing was written"):
                with _one_process_at_a_time(tmp_path / "runs", echo, stop):
                    pytest.fail("entered while another command held the lock")
            fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert lines == [f"waiting for another sweep command to open its study in {tmp_path / 'runs'} (Ctrl-C to give up)"]
    lines.clear()
    with _one_process_at_a_time(tmp_path / "runs", lines.append, StopRequest()):
        pass
    assert lines == []  # free: no word


def test_a_runs_folder_that_cannot_be_locked_goes_on_unlocked_and_says_so(tmp_path, monkeypatch, capsys):
    """A file system without locks (ENOLCK) was a traceback; then, with the error passed over, no word."""
    import errno
    import fcntl

    from fashionmlp.sweep.run import _one_process_at_a_time

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with _one_process_at_a_time(tmp_path / "runs"):
        pass
    assert "cannot lock (No locks available); two sweep commands started at this moment" in capsys.readouterr().err


def test_a_study_whose_last_trials_were_lost_on_another_machine_continues(sweep_config, tmp_path, monkeypatch,
                                                                          quick_pictures):
    """The start checked only this machine's dead workers: a trial of another machine whose heartbeat had gone
    stale was found only by a running worker, and none ran when finished + running made the target ("1 running
    elsewhere", exit 0, training nothing, for ever)."""
    from fashionmlp.sweep import storage as sweep_storage

    monkeypatch.setattr(sweep_storage, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(sweep_storage, "GRACE_SECONDS", 2)
    url = f"sqlite:///{tmp_path / 'pg-stand-in.db'}"
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 2, "sampler": "random", "seed": 0})
    first = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--storage", url, "--trials", 1)
    assert first.exit_code == 0, first.output
    study = optuna.load_study(study_name="tiny", storage=sweep_storage.open_storage(url))
    with pytest.warns(UserWarning):  # heartbeats are experimental
        lost = study.ask()  # another machine's trial: it beat once, then its machine died
    study._storage.record_heartbeat(lost._trial_id)
    time.sleep(3.5)  # past the 2 s grace: SQLite's clock counts whole seconds
    again = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs", "--storage", url)
    assert again.exit_code == 0, again.output
    assert f"trial(s) {lost.number} had lost their worker (killed?): marked failed, queued again" in again.stdout, \
        again.stdout
    states = [t.state for t in study.get_trials()]
    assert states[lost.number] == optuna.trial.TrialState.FAIL and len(finished(study)) == 2


def _a_beating_study(tmp_path: Path, monkeypatch, grace: int):
    """(storage, study, a trial just asked) on an SQLite database beating every second, stale after `grace`."""
    from fashionmlp.sweep import storage as sweep_storage

    monkeypatch.setattr(sweep_storage, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(sweep_storage, "GRACE_SECONDS", grace)
    store = sweep_storage.open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    study = optuna.create_study(study_name="hb", storage=store)
    with pytest.warns(UserWarning):  # heartbeats are experimental
        trial = study.ask()
    return store, study, trial


def test_a_heartbeat_that_fails_once_beats_again(tmp_path, monkeypatch, capsys):
    """A database blip killed the heartbeat thread for good: 180 s later the live trial was failed as lost and
    trained a second time elsewhere, and its worker crashed on its next report."""
    import sqlalchemy.exc

    from fashionmlp.sweep import heartbeats as sweep_heartbeats

    store, study, trial = _a_beating_study(tmp_path, monkeypatch, grace=2)
    real, calls = sweep_heartbeats.Beats.beat, []

    def blip_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {}, Exception("server closed"))
        return real(self)

    monkeypatch.setattr(sweep_heartbeats.Beats, "beat", blip_once)
    with sweep_heartbeats.heartbeats(store, "hb", [trial.number]):
        time.sleep(3.5)  # past the grace period since the last beat, had the thread died at the first
        sweep_heartbeats.fail_stale_trials(study)
        assert study.get_trials()[trial.number].state.name == "RUNNING"
    assert len(calls) >= 2
    assert "warning: a heartbeat could not be recorded (OperationalError); trying again" in capsys.readouterr().err


def test_a_trial_asked_and_never_claimed_is_failed_and_queued_again(tmp_path, monkeypatch):
    """A worker killed between asking for a trial and writing its claim (and before its first heartbeat) left it
    RUNNING for ever: every later command said "1 still running elsewhere" and trained nothing. A retry asked
    so carries its dead predecessor's record (Optuna copies it), which it was taken for."""
    from fashionmlp.sweep import storage as sweep_storage

    study = optuna.create_study(direction="maximize")
    lost = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert sweep_storage.fail_dead_trials(study, tmp_path) == []  # just asked: its worker may be claiming it
    monkeypatch.setattr(sweep_storage, "GRACE_SECONDS", -1)  # as if asked long ago
    assert sweep_storage.fail_dead_trials(study, tmp_path) == [lost.number]
    first, retry = study.get_trials()
    assert first.state.name == "FAIL" and retry.state.name == "WAITING" and retry.params == first.params
    claimed = study.ask()  # claimed by a worker of this machine, which then died
    claimed.set_user_attr(sweep_storage.OWNER, {"trial": claimed.number, "host": socket.gethostname(),
                                                "pid": 2**22 + 1})  # past Linux's largest pid: not alive
    assert sweep_storage.fail_dead_trials(study, tmp_path) == [claimed.number]
    inherited = study.ask()  # its retry: asked, killed before its claim, with the dead worker's record
    assert inherited.number == claimed.number + 1
    assert study.get_trials()[inherited.number].user_attrs[sweep_storage.OWNER]["trial"] == claimed.number
    assert sweep_storage.fail_dead_trials(study, tmp_path) == [inherited.number]


@pytest.mark.parametrize("storage", ["journal", "database"])
def test_a_trial_of_another_container_on_this_host_is_not_failed_as_dead(tmp_path, monkeypatch, storage):
    """Workers in two containers of one host (host network: one host name) failed each other's live trials: each
    checked the other's pid in its own pid namespace, where it does not exist. The pid namespace and boot id
    now say whether the pid can be checked here. On a journal (no heartbeats) a trial of another pid namespace
    is dead when its run folder's lock is free (a container restarted: it stayed "running" for ever), and one of
    an earlier boot of this host is dead (rebooted); on a database the heartbeats decide those."""
    from fashionmlp.runlock import lock_run_dir
    from fashionmlp.sweep import owners as sweep_owners
    from fashionmlp.sweep import storage as sweep_storage

    if storage == "database":
        monkeypatch.setattr(sweep_storage, "beats_every", lambda storage: 60)
    study = optuna.create_study(direction="maximize")
    dead = {"host": socket.gethostname(), "pid": 2**22 + 1, "started": None}  # past Linux's largest pid
    here = sweep_owners._owner(0)
    assert here["boot"] and here["pidns"] and sweep_owners._here(here)
    kinds = {"container, its folder locked": {"pidns": "1", "boot": here["boot"]},
             "container, its folder free": {"pidns": "1", "boot": here["boot"]},
             "earlier boot": {"pidns": here["pidns"], "boot": "another-boot-id"},
             "this process's place": {"pidns": here["pidns"], "boot": here["boot"]},
             "another host": {"host": "elsewhere", "pidns": "1", "boot": "another-boot-id"}}
    trials = {}
    for kind, other in kinds.items():
        trial = trials[kind] = study.ask()
        run_dir = tmp_path / f"trial-{trial.number:04d}"
        run_dir.mkdir()
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr(sweep_storage.OWNER, {**dead, **other, "trial": trial.number})
    held = lock_run_dir(tmp_path / f"trial-{trials['container, its folder locked'].number:04d}")  # a live worker
    try:
        failed = sweep_storage.fail_dead_trials(study, tmp_path)
    finally:
        held.close()
    expected = ["this process's place"] + (["container, its folder free", "earlier boot"] if storage == "journal"
                                           else [])
    assert sorted(failed) == sorted(trials[kind].number for kind in expected)


def test_two_commands_creating_one_study_with_different_configs_at_once_are_not_both_accepted(sweep_config,
                                                                                              monkeypatch):
    """Two commands started together with one --study name and different sweep configs both saw a study without
    a config, both stored theirs and both trained: one study of two searches. Only the creator stores its config
    now; the other waits for it and is refused."""
    import threading

    from fashionmlp.errors import UserError
    from fashionmlp.sweep import load_sweep_file
    from fashionmlp.sweep import storage as sweep_storage

    first = load_sweep_file(sweep_config(train={"epochs": 2}))
    second = load_sweep_file(sweep_config("other.yaml", train={"epochs": 3}))
    storage = optuna.storages.InMemoryStorage()
    created, real = threading.Event(), optuna.study.Study.set_user_attr

    def slowly(study, key, value):  # the creator, between creating the study and storing its config
        created.set()
        time.sleep(0.5)
        real(study, key, value)

    monkeypatch.setattr(optuna.study.Study, "set_user_attr", slowly)
    creator = threading.Thread(target=sweep_storage._create_or_load, args=(storage, "s", first, "here"))
    creator.start()
    assert created.wait(10)
    with pytest.raises(UserError, match=r"started from a different sweep config: train.epochs 3 \(the study has 2\)"):
        sweep_storage._create_or_load(storage, "s", second, "here")
    creator.join()
    assert sweep_storage._create_or_load(storage, "s", first, "here").user_attrs["fashionmlp_sweep"]["config"][
        "train"]["epochs"] == 2


@pytest.mark.parametrize("rival_asks", [False, True])
def test_a_worker_that_asked_alongside_another_for_the_last_trial_does_not_run_it(sweep_config, tmp_path, rival_asks):
    """Three processes that all saw 11 of 12 trials taken all asked, and the study ran 13 of 12. Each checks
    after asking: the trials asked before its own that count (or will) towards the target come first."""
    from fashionmlp.sweep import load_sweep_file
    from fashionmlp.sweep.workers import _ask, _Job

    spec = load_sweep_file(sweep_config(sweep={"trials": 3, "sampler": "random"}))
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.5, 0.6):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), value)
    rival, real = optuna.load_study(study_name="s", storage=storage), study.ask

    def asked_alongside(*args, **kwargs):  # the other worker passed the same check and asked first
        if rival_asks:
            rival.ask()
        return real(*args, **kwargs)

    study.ask = asked_alongside
    job = _Job(spec, "s", None, tmp_path / "sweep", None, worker=0, threads=1)
    lines: list[str] = []
    asked = _ask(study, study, spec, job, lines.append)
    trials = study.get_trials()
    if not rival_asks:
        assert [a.trial.number for a in asked] == [2] and len(trials) == 3
        return
    assert asked == [] and [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "RUNNING", "FAIL"]
    assert trials[3].user_attrs["skipped"] == "not run: other workers took the study's 3 trials first"


def test_a_database_trial_beats_once_as_it_is_asked(tmp_path, monkeypatch):
    """A worker killed between asking and its first heartbeat left a trial that never beat, which Optuna's stale
    check skips for ever ("running elsewhere")."""
    from fashionmlp.sweep import heartbeats as sweep_heartbeats

    _, study, trial = _a_beating_study(tmp_path, monkeypatch, grace=1)
    sweep_heartbeats.beat_once(study, trial)  # as _ask does right after study.ask()
    time.sleep(2.5)  # past the grace period (SQLite counts whole seconds)
    assert sweep_heartbeats.fail_stale_trials(study) == [trial.number]
    sweep_heartbeats.beat_once(optuna.create_study(), trial)  # the journal (no heartbeats): nothing, no error


def test_a_journal_cut_short_or_gone_is_said_not_a_traceback(sweep_config, tmp_path, quick_pictures):
    """A journal whose last record a crash or a full disk cut short: the next command appended to that line and
    every later one ended in a JSONDecodeError traceback. A sweep folder whose journal is gone: FileExistsError's
    traceback (a trial's folder was there), after the new journal had been given trials marked running."""
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 2, "sampler": "random", "seed": 0})
    runs = tmp_path / "runs"
    assert cli("sweep", "--config", path, "--runs-dir", runs).exit_code == 0
    journal = sweep_dir(runs) / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole.splitlines(keepends=True)[-1][:40])  # a record's first 40 bytes
    more = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", "3")
    assert more.exit_code == 0, more.output
    assert f"warning: {journal}: its last record was cut short (a crash, or a full disk, while it was written): " \
           "dropped (40 bytes)" in more.stderr
    assert len(finished(load_study(sweep_dir(runs)))) == 3
    again = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", "3")  # readable: nothing more to do
    assert again.exit_code == 0 and "cut short" not in again.stderr, again.output
    journal.unlink()
    gone = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", "4")
    assert gone.exit_code == 2 and gone.stderr == (
        f"error: {journal}: missing, while its sweep folder has trial folders: the study's record (the trials' "
        "values and results) is gone; put the file back, or move the sweep folder away to begin the study again\n")
    assert not journal.exists()


def test_a_sweep_folder_whose_sweep_json_is_damaged_is_refused_not_replaced(sweep_config, tmp_path, quick_pictures):
    """A sweep folder whose sweep.json could not be read was passed over: the same command made a new folder and,
    on the journal, began the study again from trial 0 without a word (a list there was an AttributeError). A
    folder holding nothing else (cut short as it was made) is still passed over."""
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 1, "sampler": "random", "seed": 0})
    runs = tmp_path / "runs"
    assert cli("sweep", "--config", path, "--runs-dir", runs).exit_code == 0
    folder = sweep_dir(runs)
    for text in ('{"study": "tin', "[]"):
        (folder / "sweep.json").write_text(text)
        again = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", "2")
        assert again.exit_code == 2 and again.stderr == (
            f"error: {folder}: its sweep.json, which says the study and storage the folder is for, is missing or "
            "cannot be read; repair it, or move the folder out of the runs folder\n"), again.output
        assert [p.name for p in runs.iterdir() if p.name.startswith("sweep-")] == [folder.name]
    # the newest, looked at first: a folder cut short as it was made (its sweep.json's temporary file left), and
    # a file of a folder's name; the real one's sweep.json repaired
    empty = runs / "sweep-tiny-29991231-000000"
    empty.mkdir()
    (empty / ".sweep.json.abc123.tmp").write_text("{")
    (runs / "sweep-tiny-29991231-000001").write_text("not a folder")
    (folder / "sweep.json").write_text(json.dumps({"study": "tiny", "storage": "journal"}))
    more = cli("sweep", "--config", path, "--runs-dir", runs, "--trials", "2")
    assert more.exit_code == 0 and len(finished(load_study(folder))) == 2, more.output


def test_an_empty_sweep_key_names_null_as_its_default():
    """`--set sweep.trials=` offered `sweep.trials=null for none`, and null there is the key's default (20)."""
    from fashionmlp.config.files import parse_override
    from fashionmlp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"give one, or sweep.trials=null for its default$"):
        parse_override("sweep.trials=")
    with pytest.raises(ConfigError, match=r"give one, or train.patience=null for none$"):
        parse_override("train.patience=")


def test_a_first_heartbeat_during_a_database_blip_is_left_to_the_heartbeat_thread(tmp_path, monkeypatch):
    """The heartbeat of a trial just asked (beat_once), of one joining a population (Beats.add) and the one
    after an outage (on_back) were recorded unretried on the main thread: a blip there was a traceback that
    ended the worker. An unreachable database skips that beat (the thread beats when it answers); any other
    error still raises."""
    import sqlalchemy.exc

    from fashionmlp.sweep import heartbeats as sweep_heartbeats

    store, study, trial = _a_beating_study(tmp_path, monkeypatch, grace=60)

    def refused(trial_id):
        raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "record_heartbeat", refused)
    sweep_heartbeats.beat_once(study, trial)
    beats = sweep_heartbeats.Beats(store, study.study_name)
    beats.add([trial.number])
    assert beats.ids == {trial.number: trial._trial_id}  # beaten by the thread from its next interval on

    def broken(trial_id):
        raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("no such table: trial_heartbeats"))

    monkeypatch.setattr(store, "record_heartbeat", broken)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="no such table"):
        sweep_heartbeats.beat_once(study, trial)


def test_a_storage_without_heartbeats_announces_no_stale_trials(monkeypatch):
    """Its "stale" trials were those RUNNING before the check and FAIL after: with the journal (no heartbeats)
    a trial its own live worker failed meanwhile (interrupted, skipped) was announced as lost and queued again."""
    from fashionmlp.sweep import heartbeats as sweep_heartbeats

    study = optuna.create_study()
    trial = study.ask()
    monkeypatch.setattr(optuna.storages, "fail_stale_trials",
                        lambda s: s.tell(trial, state=optuna.trial.TrialState.FAIL))  # another worker, meanwhile
    assert sweep_heartbeats.fail_stale_trials(study) == []


def test_a_population_of_trials_is_interrupted_together_and_retried(slow_sweep, tmp_path):
    runs = tmp_path / "runs"
    proc = _start(slow_sweep, runs, "--population", 2)
    run, pid = _running_trial(runs, proc)
    assert pid == proc.pid
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    folder = sweep_dir(runs)
    rows = {int(r["number"]): r for r in trials_csv(folder)}
    assert [rows[n]["note"] for n in (0, 1)] == ["interrupted", "interrupted"]  # both members, stopped together
    assert [rows[n]["note"] for n in (2, 3)] == ["retry of 0", "retry of 1"]
    assert {summary(folder / f"trial-{n:04d}")["status"] for n in (0, 1)} == {"interrupted"}
    stopped_after = {summary(folder / f"trial-{n:04d}")["epochs"] for n in (0, 1)}
    assert len(stopped_after) == 1 and 1 <= min(stopped_after) < 20  # every member's last epoch checkpointed
    again = _start(slow_sweep, runs, "--population", 2)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study = load_study(folder)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    # the retries continued both runs together (engine: population; one alone would say single), from the epoch
    # they were stopped at, in their folders
    assert out.count("continues trial-000") == 2
    assert sorted(p.name for p in folder.glob("trial-*")) == ["trial-0000", "trial-0001"]
    for n in (0, 1):
        done = summary(folder / f"trial-{n:04d}")
        assert (done["status"], done["epochs"], done["engine"]) == ("completed", 20, "population")
        assert sorted(study.get_trials()[n + 2].intermediate_values) == list(range(1, 21))


# ---------------------------------------------------------------- bad sweeps: one line, exit 2, no folder


def _space(**space):
    return {"space": space}


BAD_SWEEPS = {
    "unknown key in space": ({"space": {"optimizer.lrr": [0.1]}},
                             "sweep.space.optimizer.lrr: unknown config key 'optimizer.lrr' (did you mean 'lr'?)"),
    "unknown section in space": ({"space": {"optimiser.lr": [0.1]}}, "unknown config key 'optimiser'"),
    "a section, not a value": ({"space": {"model": [{"name": "mlp"}]}}, "sweep.space.model: names a section"),
    "low >= high": ({"space": {"optimizer.lr": {"low": 0.1, "high": 0.1}}},
                    "sweep.space.optimizer.lr: low 0.1 must be below high 0.1"),
    "log with low <= 0": ({"space": {"optimizer.weight_decay": {"low": 0.0, "high": 0.1, "log": True}}},
                          "sweep.space.optimizer.weight_decay: a log range needs low > 0, got low 0.0"),
    "empty choice list": ({"space": {"train.batch_size": []}}, "sweep.space.train.batch_size: the list of values is "
                                                               "empty"),
    "choice the schema rejects": ({"space": {"optimizer.name": ["sgd", "rmsprop"]}},
                                  "sweep.space.optimizer.name: value 'rmsprop' is rejected: optimizer.name: 'rmsprop' "
                                  "is not allowed; allowed: sgd, nesterov, adam"),
    "bound the schema rejects": ({"space": {"optimizer.momentum": {"low": 0.5, "high": 1.0}}},
                                 "sweep.space.optimizer.momentum: high 1.0 is rejected: optimizer.momentum: 1.0 is out "
                                 "of range; allowed: >= 0.0 and < 1.0"),
    "float bound of a whole-number key": ({"space": {"train.batch_size": {"low": 8.5, "high": 64}}},
                                          "train.batch_size: 8.5 is not a whole number"),
    "range of a text key": ({"space": {"optimizer.name": {"low": 1, "high": 2}}}, "optimizer.name: 1 is not a string"),
    "duplicate choice": ({"space": {"train.batch_size": [32, 32]}}, "sweep.space.train.batch_size: 32 is listed twice"),
    # YAML 1.1 reads 1e-3 as text, which the config takes as 0.001: a grid trained that point twice
    "one value written two ways": ({"space": {"optimizer.lr": ["1e-3", 0.001]}},
                                   "sweep.space.optimizer.lr: '1e-3' and 0.001 are the same value (0.001); list it "
                                   "once"),
    "true and 1": ({"space": {"model.batchnorm": [True, 1]}},  # not "1 is listed twice" (1 == True in Python)
                   "sweep.space.model.batchnorm: value 1 is rejected: model.batchnorm: 1 is not a boolean"),
    # nesterov was checked with the base's momentum 0.9, which no trial has: 12 of 16 trials were rejected
    "a value no trial can use": ({"__base__": {"optimizer": {"momentum": 0.9}},
                                  "space": {"optimizer.name": ["sgd", "nesterov"], "optimizer.momentum": [0.0]}},
                                 "sweep.space.optimizer.name: value 'nesterov' goes with none of the other entries' "
                                 "values (e.g. optimizer.momentum: 0.0 with optimizer.name 'nesterov'"),
    "unknown range key": ({"space": {"optimizer.lr": {"low": 0.1, "high": 1, "scale": "log"}}},
                          "sweep.space.optimizer.lr: unknown key 'scale'"),
    "range without high": ({"space": {"optimizer.lr": {"low": 0.1}}}, "a range needs both low and high"),
    "step with log": ({"space": {"optimizer.lr": {"low": 0.1, "high": 1, "log": True, "step": 0.1}}},
                      "step and log cannot be combined"),
    "searching the data": ({"space": {"data.val_size": [10, 20]}}, "sweep.space.data.val_size: cannot be searched"),
    "searching the seed": ({"space": {"seed": [0, 1]}}, "sweep.space.seed: cannot be searched"),
    "searching teachers": ({"space": {"distill.teacher": ["runs/a", "runs/b"]}},
                           "sweep.space.distill.teacher: cannot be searched (every trial keeps the config's "
                           "distill.teacher: the teacher is checked once, before the first trial"),
    "empty space": ({"space": {}}, "sweep.space: expected a mapping"),
    "no sweep section": (None, "sweep: a sweep config needs a `sweep:` section"),
    "unknown sweep key": ({"trails": 3}, "sweep: unknown key 'trails' (did you mean 'trials'?)"),
    "unknown sampler": ({"sampler": "cmaes"}, "sweep.sampler: 'cmaes' is not allowed; allowed: tpe, random, grid"),
    "unknown pruner": ({"pruner": "hyperband"}, "sweep.pruner: 'hyperband' is not allowed; allowed: median, none"),
    "test metric": ({"metric": "test_accuracy"},
                    "sweep.metric: 'test_accuracy' is not allowed; allowed: val_accuracy, val_loss"),
    "trials < 1": ({"trials": 0}, "sweep.trials: 0 is out of range; allowed: >= 1"),
    "trials not a number": ({"trials": "many"}, "sweep.trials: 'many' is not a whole number"),
    "grid with a range": ({"sampler": "grid"}, "sweep.sampler: grid needs a list of values for every key; "
                                               "optimizer.lr is a range"),
    "pruning after the last epoch": ({"pruner": "median", "pruner_from_epoch": 3},
                                     "sweep.pruner_from_epoch: 3 is after the last epoch (train.epochs 2): no trial "
                                     "could ever be pruned"),
    "grid larger than trials": ({"sampler": "grid", "trials": 3, "space": {"optimizer.lr": [0.01, 0.1, 0.3],
                                                                            "train.batch_size": [16, 32]}},
                                "sweep.trials: 3 trials are fewer than the grid's 6 points, and a grid trains every "
                                "point once: set sweep.trials (or --trials) to 6"),
    "grid point the schema rejects": ({"sampler": "grid", "space": {"optimizer.name": ["sgd", "nesterov"],
                                                                    "optimizer.momentum": [0.0, 0.9]}},
                                      "sweep.space: the grid point optimizer.momentum=0.0, optimizer.name=\"nesterov\" "
                                      "is rejected"),  # (keys in the order of the YAML file: sorted by safe_dump)
    "no valid mix": ({"__base__": {"optimizer": {"momentum": 0.9}},  # each value is valid alone
                      "space": {"optimizer.name": ["nesterov"], "optimizer.momentum": [0.0]}},
                     "sweep.space: no mix of its values makes a valid config (e.g. optimizer.momentum=0.0, "
                     "optimizer.name='nesterov': optimizer.momentum: 0.0 with optimizer.name 'nesterov'"),
    # (every trial was rejected, for ever; keys in the order of the YAML file: sorted by safe_dump)
    "no valid mix in a space too large to pair each value": (
        {"__base__": {"optimizer": {"momentum": 0.9}},
         "space": {"optimizer.name": ["nesterov"], "optimizer.momentum": [0.0],
                   **{key: [0.001 * k for k in range(1, 8)] for key in ("optimizer.lr", "optimizer.weight_decay",
                                                                         "train.label_smoothing")}}},
        "sweep.space: no mix of its values makes a valid config (e.g. optimizer.lr=0.001, optimizer.momentum=0.0, "),
    "a key no trial reads": ({"space": {"optimizer.lr": [0.01, 0.1], "optimizer.momentum": [0.1, 0.9]}},
                             "sweep.space.optimizer.momentum: no trial would use it (adam uses its betas, not a "
                             "momentum), so its values would train alike; leave it out, or search it beside values "
                             "that use it"),  # its trials scored alike, with no word on the terminal
    "distillation without a teacher": ({"space": {"distill.temperature": [2.0, 4.0]}},
                                       "sweep.space.distill.temperature: no trial would use it (there is no "
                                       "distill.teacher)"),
    "bad base config": ({"__base__": {"optimizer": {"lr": -1}}}, "optimizer.lr: -1.0 is out of range"),
    "a width no memory holds": ({"space": {"model.hidden": [[32], [2**24]]}},
                                "sweep.space: model.hidden [16777216] at train.batch_size 32 need about"),
}


def test_a_key_some_trials_read_may_be_searched(sweep_config):
    from fashionmlp.sweep import load_sweep_file

    spec = load_sweep_file(sweep_config(sweep={"space": {"optimizer.name": ["sgd", "adam"],
                                                         "optimizer.momentum": [0.1, 0.9]}}))
    assert [p.key for p in spec.params] == ["optimizer.momentum", "optimizer.name"]
    # more mixes than are looked at (4096), the first ones all adam: not refused (the review's 8192-mix space)
    big = {"optimizer.name": ["adam", "sgd"], "optimizer.momentum": {"low": 0.0, "high": 0.9},
           "optimizer.lr": [0.001 * k for k in range(1, 17)], "train.batch_size": list(range(16, 32)),
           "train.label_smoothing": [0.01 * k for k in range(8)]}
    assert len(load_sweep_file(sweep_config(sweep={"space": big})).params) == 5


@pytest.mark.parametrize("case", list(BAD_SWEEPS), ids=list(BAD_SWEEPS))
def test_every_bad_sweep_config_gets_one_line_and_exit_2(sweep_config, tmp_path, case):
    section, message = BAD_SWEEPS[case]
    path = sweep_config()
    raw = yaml.safe_load(path.read_text())
    if section is None:
        del raw["sweep"]
    else:
        raw["optimizer"].update(section.get("__base__", {}).get("optimizer", {}))
        raw["sweep"].update({k: v for k, v in section.items() if k != "__base__"})
    path.write_text(yaml.safe_dump(raw))
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "runs").exists()


BAD_OPTIONS = {
    "--trials 0": (["--trials", 0], "--trials: 0 is out of range; allowed: >= 1"),
    "--jobs 0": (["--jobs", 0], "--jobs: 0 is out of range; allowed: 1 to "),
    "--jobs beyond the cores": (["--jobs", len(os.sched_getaffinity(0)) + 1], "(the CPU cores this process may use"),
    "bad study name": (["--study", "a/b"], "--study: 'a/b' is not allowed"),
    "empty study name": (["--study", ""], "--study: '' is not allowed"),
    "study name of dots": (["--study", ".."], "--study: '..' is not allowed; use letters, digits, '_', '.', '-', "
                                              "beginning with a letter or digit"),
    # its trials' runs, <study>-trial-0000, would pass 100 characters: the folder was made, every trial refused
    "study name too long for its trials": (["--study", "s" * 89], "(at most 88 characters: each trial's run is"),
    "storage not a URL": (["--storage", "study.db"], "--storage 'study.db' is not a database URL"),
    "postgres:// (Heroku's spelling)": (["--storage", "postgres://user:secret@127.0.0.1:9/x"],
                                        "SQLAlchemy names PostgreSQL postgresql://, not postgres://"),
    "sqlite file in a missing folder": (["--storage", "sqlite:///no/such/folder/x.db"],
                                        "unable to open database file (sqlite:///sweep.db is a path from the working "
                                        "directory, sqlite:////tmp/sweep.db an absolute one; its folder must exist)"),
    "storage driver missing": (["--storage", "mysql://user:secret@127.0.0.1:9/x"],
                               "--storage mysql://user:***@127.0.0.1:9/x: its database driver is not installed"),
    "password with @ : /": (["--storage", "postgresql://user:secret@x:y/z@127.0.0.1:9/x"],  # "invalid literal"
                            "is written percent-encoded: @ as %40, : as %3A, / as %2F"),
    "--set of a searched key": (["--set", "optimizer.lr=0.5"], "optimizer.lr is searched (sweep.space)"),
    "--set of a searched key in its section": (["--set", "optimizer={lr: 0.5}"], "optimizer.lr is searched"),
    "CUDA without CUDA": (["--set", "device=cuda"], "use cpu or auto (--device cpu, or --set device=cpu)"),
    "unknown --set key": (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
    "unknown --set sweep key": (["--set", "sweep.sed=3"], "unknown sweep key 'sed' (did you mean 'seed'?)"),
    "--set sweep value out of range": (["--set", "sweep.trials=0"], "sweep.trials: 0 is out of range"),
    "--set sweep too deep": (["--set", "sweep.space.lr=1"], "expected sweep.KEY=VALUE"),
    "missing config": (["--config", "nowhere.yaml"], "config file 'nowhere.yaml' does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS), ids=list(BAD_OPTIONS))
def test_every_bad_option_gets_one_line_and_exit_2(sweep_config, tmp_path, case, monkeypatch):
    args, message = BAD_OPTIONS[case]
    if case == "CUDA without CUDA" and __import__("torch").cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(tmp_path)
    if case == "storage driver missing":
        monkeypatch.setitem(sys.modules, "MySQLdb", None)  # whatever is installed: simulate it missing
    config = [] if "--config" in args else ["--config", sweep_config()]
    result = cli("sweep", *config, "--runs-dir", tmp_path / "runs", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "secret" not in result.output
    assert "population:" not in result.stdout  # said once the study is open, not before a refusal
    assert not (tmp_path / "runs").exists()


GENERATED = {  # mostly values that work, so that the generated commands get past the first check
    "--trials": hst.sampled_from([1, 2, 1, 0, -1, -(2**64)]),
    "--jobs": hst.sampled_from([1, 1, 0, len(os.sched_getaffinity(0)) + 1, 2**64]),
    "--study": hst.sampled_from(["ok.name_1", "tiny", "", "x" * 101, "x" * 88, "x" * 89, "../up", "a b", "é", "-x"]),
    "--storage": hst.sampled_from(["sqlite:///{tmp}/s.db", "sqlite:///{tmp}/s.db", "", "nowhere", "foo://x",
                                   "postgresql://", "mysql://u:p@127.0.0.1:9/x"]),
    "--set": hst.sampled_from(["train.epochs=1", "seed=3", "train.batch_size=16", "optimizer.name=sgd",
                               "seed=4294967296", "data.val_size=0", "data.subset=10", "model.hidden=[16777216]",
                               "name=../x", "bogus=1", "optimizer.lr=-1"]),
    "--data-dir": hst.sampled_from(["{data}", "{data}", "{tmp}/missing", "{config}"]),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=hst.data())
def test_generated_command_lines_run_or_get_one_line(sweep_config, tmp_path_factory, tiny_data, quick_pictures,
                                                     monkeypatch, data):
    """Whatever the options, `sweep` works (exit 0) or refuses with one `error:` line, exit 2 and no folder."""
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # the MySQL driver: missing, whatever is installed
    tmp = tmp_path_factory.mktemp("gen")
    config = sweep_config(train={"epochs": 1}, sweep={"trials": 1})
    args = []
    for option, values in GENERATED.items():
        if data.draw(hst.integers(0, 2)) == 0:  # each option in a third of the command lines
            value = str(data.draw(values)).format(tmp=tmp, data=tiny_data, config=config)
            args += [option, value]
    result = cli("sweep", "--config", config, "--runs-dir", tmp / "runs", *args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        err = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error: "), result.stderr
        assert not (tmp / "runs").exists(), "a refused command left a folder behind"
    else:
        assert result.exit_code == 0, result.output
        assert len(list((tmp / "runs").glob("sweep-*/trial-*"))) >= 1


def test_without_optuna_it_says_what_to_install(sweep_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    result = cli("sweep", "--config", sweep_config(), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip() == ('error: fashionmlp sweep needs Optuna, which is not installed: '
                                     'pip install "fashionmlp[sweep]" (or: pip install optuna)')
    assert not (tmp_path / "runs").exists()


def test_a_config_without_validation_split_gets_one(sweep_config, tmp_path, tiny_data):
    from fashionmlp.errors import ConfigError
    from fashionmlp.sweep import DEFAULT_VAL_SIZE, load_sweep_file

    path = sweep_config(data={"val_size": 0})
    spec = load_sweep_file(path)
    assert spec.val_size_added and spec.base.data.val_size == DEFAULT_VAL_SIZE == 5000
    # 5000 is more than the tiny set has: the data's own one-line error, before any folder
    result = cli("sweep", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "data.val_size: 5000 leaves no training images" in result.stderr
    assert not (tmp_path / "runs").exists()
    # early stopping watches the split the sweep adds: it was refused for want of one ("set data.val_size")
    spec = load_sweep_file(sweep_config(data={"val_size": 0}, train={"patience": 2}))
    assert spec.val_size_added and spec.base.train.patience == 2 and spec.base.data.val_size == 5000
    with pytest.raises(ConfigError, match="train.patience: 0 is out of range"):
        load_sweep_file(sweep_config(data={"val_size": 0}, train={"patience": 0}))


def test_a_subset_the_default_split_would_empty_is_refused_saying_what_to_set(sweep_config, tmp_path):
    """No validation split, data.subset 3000: the error names the default that was added, not only its value."""
    result = cli("sweep", "--config", sweep_config(data={"val_size": 0, "subset": 3000}), "--runs-dir",
                 tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "the default, 5000, leaves none of data.subset 3000 to train on: set data.val_size (e.g. 600)" in (
        result.stderr)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- a real PostgreSQL server


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
                      if p.parts[-3].isdigit() else 0)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (only), in a temporary folder; always stopped afterwards."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; on Debian/Ubuntu: apt-get install "
                    "postgresql (they go to /usr/lib/postgresql/<version>/bin)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install -e '.[dev]'")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="fashionmlp-pg-"))
    password = secrets.token_hex(12)
    (root / "password").write_text(password)
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as an unprivileged user
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None or shutil.which("runuser") is None:
            shutil.rmtree(root)
            pytest.skip("running as root without a 'postgres' or 'nobody' user and runuser to start PostgreSQL as")
        entry = pwd.getpwnam(user)
        for path in (root, root / "password"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        as_user = [shutil.which("runuser"), "-u", user, "--"]
    data, log = root / "data", root / "server.log"
    started = False
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "fashionmlp", "--pwfile",
                        str(root / "password"), "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        for _ in range(3):  # a free port can be taken between the probe and the start
            port = _free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
            start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                    "-w", "-t", "60", "start"], capture_output=True, timeout=120)
            if start.returncode == 0:
                started = True
                break
        assert started, log.read_text() if log.exists() else start.stderr

        def pause(seconds: float) -> None:  # a restart of the server: down for `seconds`
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           check=True, capture_output=True, timeout=120)
            time.sleep(seconds)
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                            "-t", "60", "start"], check=True, capture_output=True, timeout=120)

        yield Server(f"postgresql+psycopg://fashionmlp:{password}@127.0.0.1:{port}/postgres", pause)
    finally:
        if data.exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


class Server(str):
    """The database URL, and `pause(seconds)`: the server stopped and started again."""

    def __new__(cls, url: str, pause):
        made = super().__new__(cls, url)
        made.pause = pause
        return made


@pytest.mark.postgres
def test_a_database_restart_mid_sweep_is_waited_out(postgres, sweep_config, tmp_path):
    """A restart of PostgreSQL while a trial trained: its next report raised, the worker ended with 200 lines of
    tracebacks, its run folder said 'crashed' and a rerun trained the trial from its first epoch."""
    path = sweep_config(train={"epochs": 150}, sweep={"trials": 2, "sampler": "random"})
    proc = _start(path, tmp_path / "runs", "--storage", postgres, "--study", "restart", "--population", 1)
    try:
        run, _ = _running_trial(tmp_path / "runs", proc)
        postgres.pause(3)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "cannot be reached" in err and "answers again after" in err and "Traceback" not in err, err
    study = optuna.load_study(study_name="restart", storage=postgres)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]
    for n in (0, 1):  # each trained once, to its end
        s = summary(sweep_dir(tmp_path / "runs") / f"trial-{n:04d}")
        assert (s["status"], s["epochs"]) == ("completed", 150)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.postgres
def test_two_machines_cover_a_grid_exactly_once_in_postgresql(postgres, sweep_config, tmp_path, quick_pictures):
    path = sweep_config(train={"epochs": 2}, sweep={"sampler": "grid", "trials": 6, "space": GRID})
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    procs = [_start(path, runs, "--storage", postgres, "--study", "grid", "--population", 2) for runs in machines]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="grid", storage=postgres)
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    points = sorted((t.params["optimizer.lr"], t.params["train.batch_size"]) for t in done)
    assert points == sorted((lr, b) for lr in GRID["optimizer.lr"] for b in GRID["train.batch_size"])


@pytest.mark.postgres
def test_two_machines_share_a_study_in_postgresql(postgres, sweep_config, tmp_path):
    path = sweep_config(train={"epochs": 1}, sweep={"trials": 4, "sampler": "random"})
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]  # each its own runs folder, as on two hosts
    procs = [_start(path, runs, "--storage", postgres, "--study", "pg", "--population", 2) for runs in machines]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert postgres.split("@")[0].split(":")[-1] not in out + err  # the password is never shown
        assert "postgresql+psycopg://fashionmlp:***@127.0.0.1" in out
    study = optuna.load_study(study_name="pg", storage=postgres)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))
    done = {t.number for t in finished(study)}
    assert len(done) == 4  # not 5 when both machines asked for the last trial at once
    # the one that asked second does not run it: failed at once, saying why
    assert all(t.user_attrs["skipped"].startswith("not run: other workers took") for t in trials
               if t.number not in done)
    here = {runs: {int(p.name.split("-")[1]) for p in runs.glob("sweep-pg-*/trial-*")} for runs in machines}
    assert here[machines[0]] and here[machines[1]], "both machines ran trials"
    assert not here[machines[0]] & here[machines[1]]  # no trial number ran twice
    assert here[machines[0]] | here[machines[1]] == done
    for runs in machines:  # each machine's report covers the whole study
        folder = sweep_dir(runs)
        assert len(trials_csv(folder)) == len(trials)
        assert json.loads((folder / "sweep.json").read_text())["storage"].startswith("postgresql+psycopg://fashionmlp:***@")
        for n in here[runs]:
            assert summary(folder / f"trial-{n:04d}")["status"] == "completed"
    password = postgres.split("@")[0].split(":")[-1]
    written = [p for runs in machines for p in runs.rglob("*") if p.is_file()]
    assert written and not [p for p in written if password.encode() in p.read_bytes()]  # summary.json's command had it
    # the password through PGPASSWORD instead (docs/sweep.md): the same study, the same folder
    again = _start(path, machines[0], "--storage", postgres.replace(f":{password}@", "@"), "--study", "pg",
                   env={"PGPASSWORD": password})
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert len(list(machines[0].glob("sweep-pg-*"))) == 1, out


def test_the_shipped_sweep_config_validates():
    from fashionmlp.sweep import load_sweep_file

    spec = load_sweep_file(ROOT / "configs" / "sweep_mlp.yaml")
    assert (spec.metric, spec.direction, spec.trials, spec.sampler, spec.pruner) == (
        "val_accuracy", "maximize", 20, "tpe", "median")
    assert spec.base.data.val_size == 5000 and not spec.val_size_added and spec.seed == spec.base.seed == 0
    assert {p.key: p.kind for p in spec.params} == {"optimizer.name": "choice", "optimizer.lr": "float",
                                                    "train.batch_size": "choice", "model.hidden": "choice"}
    lr = next(p for p in spec.params if p.key == "optimizer.lr")
    assert (lr.low, lr.high, lr.log) == (1e-4, 1.0, True)


def test_the_shipped_optimizer_sweep_keeps_one_shape():
    """configs/sweep_mlp_optim.yaml searches only what keeps the network's shapes: every mix of its space's ends
    trains in one population."""
    import itertools

    from fashionmlp.config import config_from_dict
    from fashionmlp.errors import ConfigError
    from fashionmlp.sweep import load_sweep_file
    from fashionmlp.sweep.space import ends
    from fashionmlp.sweep.trials import shape

    spec = load_sweep_file(ROOT / "configs" / "sweep_mlp_optim.yaml")
    assert spec.target == 20 and spec.sampler == "tpe" and spec.pruner == "median" and spec.base.train.epochs == 5
    shapes = set()
    for mix in itertools.product(*(ends(p) for p in spec.params)):
        try:
            cfg = config_from_dict(spec.base.to_dict(), values={p.key: v for p, v in zip(spec.params, mix)})
        except ConfigError:
            continue
        shapes.add(shape(cfg))
    assert len(shapes) == 1


def test_set_edits_the_sweep_section_and_the_training_config(sweep_config):
    from fashionmlp.sweep import load_sweep_file

    spec = load_sweep_file(sweep_config(), ["sweep.seed=7", "sweep.trials=3", "optimizer.momentum=0.5",
                                            "sweep.space={optimizer.lr: [0.1, 0.2]}", "sweep.sampler=grid"])
    assert (spec.seed, spec.trials, spec.sampler) == (7, 3, "grid")
    assert spec.target == 2  # a grid of two points is done after two trials
    assert [p.key for p in spec.params] == ["optimizer.lr"] and spec.grid_size == 2
    assert spec.base.optimizer.momentum == 0.5


def test_a_stop_after_the_last_trial_ended_is_a_finished_sweep(tmp_path, capsys):
    """Ctrl-C as the last trial ended said "interrupted: 16 of 16 trials finished; run the same command again"
    and exited 130."""
    from types import SimpleNamespace

    from fashionmlp.cli.studies import _sweep_exit

    done = SimpleNamespace(interrupted=True, finished=16, target=16, running=0, problems=[], sweep_dir=tmp_path)
    assert _sweep_exit(done) == 0 and "interrupted" not in capsys.readouterr().err
    assert _sweep_exit(SimpleNamespace(**{**vars(done), "finished": 15})) == 130
    assert "interrupted: 15 of 16 trials finished" in capsys.readouterr().err


def test_stopped_trials_are_drawn_over_their_retries_and_diverged_ones_named():
    """A stopped trial's curve lay under the retry that continued its run (the same points), and trials pruned
    by a diverging loss were counted as pruned."""
    import matplotlib.pyplot as plt

    from fashionmlp.plots.sweep import intermediate_values

    study = optuna.create_study(direction="maximize")
    x = optuna.distributions.FloatDistribution(0, 1)
    stopped = study.ask({"x": x})
    stopped.report(0.5, 1)
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    retry = study.ask({"x": x})
    for epoch, value in ((1, 0.5), (2, 0.7)):
        retry.report(value, epoch)
    study.tell(retry, 0.7)
    diverged = study.ask({"x": x})
    diverged.report(0.1, 1)
    diverged.set_user_attr("status", "diverged")
    study.tell(diverged, state=optuna.trial.TrialState.PRUNED)
    at_once = study.ask({"x": x})  # diverged in its first epoch: nothing to draw, and it was not counted
    at_once.set_user_attr("status", "diverged")
    study.tell(at_once, state=optuna.trial.TrialState.PRUNED)
    ax = intermediate_values(study, "val_accuracy")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "diverged (1)", "stopped (failed or interrupted) (1)", "best: trial 1"]
    assert ax.get_xlabel() == "epoch (not drawn, no epoch finished: 1 diverged)"
    from fashionmlp.plots.sweep import _readable_parallel

    ax.set_xticks([])
    _readable_parallel(ax, study)  # "2 pruned not drawn" counted the diverged trials as pruned
    assert ax.get_xlabel() == "complete trials only: 2 diverged not drawn"
    orange = [line for line in ax.lines if line.get_color() == "tab:orange"]
    assert len(orange) == 1 and orange[0].get_linestyle() == "--"
    assert ax.lines.index(orange[0]) == len(ax.lines) - 2  # over everything but the best
    plt.close(ax.figure)


def test_the_sweep_figures_stay_readable_with_many_trials():
    """intermediate_values.png had a legend entry per trial, cut off past ~25 trials; param_importances.png had
    its title drawn over by the study's name."""
    import matplotlib.pyplot as plt

    from fashionmlp.plots.sweep import intermediate_values, titled

    study = optuna.create_study(direction="maximize")
    x = optuna.distributions.FloatDistribution(0, 1)
    for i in range(34):
        trial = study.ask({"x": x, "y": x})
        trial.report(0.5 + i / 100, 1)
        if i % 3 == 0:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.report(0.6 + i / 100, 2)
            study.tell(trial, 0.6 + i / 100)
    ax = intermediate_values(study, "val_accuracy")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pruned (12)", "complete (22)", "best: trial 32"]
    plt.close(ax.figure)
    first = optuna.create_study(direction="minimize")  # the best trial is the first: "complete" was left out
    for i in range(3):
        trial = first.ask({"x": x})
        trial.report(0.5 + i, 1)
        first.tell(trial, 0.5 + i)
    ax = intermediate_values(first, "val_loss")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["complete (3)", "best: trial 0"]
    plt.close(ax.figure)
    from fashionmlp.plots.sweep import whole_ticks

    ax = intermediate_values(first, "val_loss")  # every trial at epoch 1 only
    whole_ticks(ax)
    ax.figure.canvas.draw()
    assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1]  # not 0.945-1.05
    plt.close(ax.figure)
    import matplotlib

    with warnings.catch_warnings(), matplotlib.rc_context():  # Optuna's plots switch the process to ggplot for good
        warnings.simplefilter("ignore")  # (sweep_figures draws them so too): a later picture test came out other
        ax = optuna.visualization.matplotlib.plot_param_importances(study)
    titled(ax, ": study s")
    titles = [ax.get_title(loc) for loc in ("left", "center", "right")]
    assert [t for t in titles if t] == ["Hyperparameter Importances: study s"]
    plt.close(ax.figure)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_parallel_coordinate_plot_shows_every_trial_and_whole_names(direction):
    """Optuna colours the lines from Blues' white end on a grey background: the worst trial was invisible (or
    ran along the frame at its axis's end); a key past 20 characters was cut ("train.label_smoot..."), and the
    pruned trials it leaves out were not counted."""
    import matplotlib.pyplot as plt

    from fashionmlp.plots.sweep import _readable_parallel

    study = optuna.create_study(direction=direction)
    x, long = optuna.distributions.FloatDistribution(0, 1), optuna.distributions.FloatDistribution(1e-4, 1, log=True)
    for i in range(6):
        trial = study.ask({"x": x, "train.label_smoothing": long})
        study.tell(trial, i / 5)
    study.tell(study.ask({"x": x}), state=optuna.trial.TrialState.PRUNED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study)
    (lines,) = ax.collections
    ax.figure.canvas.draw()
    assert max(lines.get_edgecolor()[:, :3].min(axis=1)) > 0.95  # Optuna's own: one line (nearly) white
    assert "train.label_smoot..." in [t.get_text() for t in ax.get_xticklabels()]
    before = {id(a): a.get_ylim() for a in ax.figure.axes}
    _readable_parallel(ax, study)
    ax.figure.canvas.draw()
    assert max(lines.get_edgecolor()[:, :3].min(axis=1)) < 0.75  # the lightest line is a visible blue
    assert ax.get_facecolor()[:3] == (1.0, 1.0, 1.0)
    assert "train.label_smoothing" in [t.get_text() for t in ax.get_xticklabels()]
    assert ax.get_xlabel() == "complete trials only: 1 pruned not drawn"
    low, high = before[id(ax)]
    assert ax.get_ylim() == pytest.approx((low - 0.05 * (high - low), high + 0.05 * (high - low)))  # room at the ends
    logs = [a for a in ax.figure.axes if a.get_yscale() == "log"]
    assert logs and all(a.get_ylim()[0] < before[id(a)][0] for a in logs)
    labels = [t for a in ax.figure.axes[1:] if a.get_ylabel() != "Objective Value" for t in a.get_yticklabels()
              if t.get_text()]  # the axes' values on a white ground above the lines ("nesterov" was struck through)
    assert labels and all(t.get_bbox_patch() is not None and t.get_bbox_patch().get_facecolor()[:3] == (1, 1, 1)
                          and t.get_zorder() > lines.get_zorder() for t in labels)
    plt.close(ax.figure)


def test_param_importances_wait_for_enough_trials_and_compare_at_least_three(sweep_config, tmp_path):
    """PED-ANOVA's default compares the top 10% of the trials: 8 grid trials got 0.33 per key whatever their
    scores. Importances are drawn from 10 complete trials, comparing the best 3 (or 10%) with all."""
    from fashionmlp.plots.sweep import sweep_figures
    from fashionmlp.sweep.space import load_sweep_file

    spec = load_sweep_file(sweep_config(optimizer={"name": "sgd"}, sweep={"trials": 12, "space": {
        "optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}, "optimizer.momentum": {"low": 0.0, "high": 0.9}}}))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    lr, momentum = (optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
                    optuna.distributions.FloatDistribution(0.0, 0.9))
    for i in range(12):
        trial = study.ask({"optimizer.lr": lr, "optimizer.momentum": momentum})
        trial.report(trial.params["optimizer.lr"], 1)
        study.tell(trial, trial.params["optimizer.lr"])
        made, _ = sweep_figures(study, spec, tmp_path)
        assert ("param_importances.png" in made) == (i + 1 >= 10)
    from fashionmlp.plots.sweep import importance_quantile

    assert [importance_quantile(n) for n in (10, 12, 30, 100)] == [0.3, 0.25, 0.1, 0.1]  # the best 3 at least


def test_a_killed_trial_is_marked_only_in_this_sweep_folder(tmp_path):
    """The storage's run_dir is data (a copied sweep folder, a journal from someone else): only run folders
    inside the sweep folder are rewritten as killed, never a summary.json elsewhere, nor one linked out."""
    from fashionmlp.sweep.storage import OWNER, mark_killed_runs

    sweep, outside = tmp_path / "runs" / "sweep-s", tmp_path / "victim"
    linked = sweep / "trial-0002"
    study = optuna.create_study()
    for folder in (sweep / "trial-0000", outside, linked):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text('{"status": "running"}')
        trial = study.ask()
        trial.set_user_attr(OWNER, {"trial": trial.number, "host": socket.gethostname(), "pid": 1})
        trial.set_user_attr("run_dir", str(folder))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (linked / "summary.json").unlink()
    (linked / "summary.json").symlink_to(outside / "summary.json")
    mark_killed_runs(study, sweep)
    assert json.loads((sweep / "trial-0000" / "summary.json").read_text())["status"] == "killed"
    assert json.loads((outside / "summary.json").read_text()) == {"status": "running"}


def test_a_trial_killed_before_its_run_wrote_a_file_leaves_no_empty_folder(tmp_path):
    """Killed before its first epoch, a trial's folder held its .lock alone, for ever: no status, and evaluate
    called it "not a fashionmlp run". Removed once the trial is failed; a folder with anything else is kept, and
    so is one a process holds."""
    from fashionmlp.runlock import lock_run_dir
    from fashionmlp.sweep.storage import OWNER, mark_killed_runs

    sweep = tmp_path / "runs" / "sweep-s"
    study = optuna.create_study()
    folders = [sweep / f"trial-000{k}" for k in range(4)]
    for folder in folders:
        (folder / "checkpoints").mkdir(parents=True)
        (folder / ".lock").write_text("12345\n")
        trial = study.ask()
        trial.set_user_attr(OWNER, {"trial": trial.number, "host": socket.gethostname(), "pid": 1})
        trial.set_user_attr("run_dir", str(folder))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (folders[1] / "checkpoints" / "last.pt").write_bytes(b"x")  # something of the run: kept
    (folders[2] / "notes.txt").write_text("mine")  # something of someone's: kept
    held = lock_run_dir(folders[3])  # a process in it
    try:
        mark_killed_runs(study, sweep)
    finally:
        held.close()
    assert [f.exists() for f in folders] == [False, True, True, True]


def test_the_journal_lock_points_at_an_absolute_path_and_a_dangling_old_one_is_dropped(tmp_path, monkeypatch):
    """Optuna's journal lock is a link to the journal that it breaks after its grace period; made with a
    relative path (the default runs folder is one) it pointed nowhere, Optuna could not age it, and a worker
    killed while holding it left every later sweep spinning without end."""
    import threading
    import time

    from fashionmlp.sweep.storage import JOURNAL_LOCK_GRACE, open_storage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()
    lock = tmp_path / "s" / "optuna.journal.lock"
    lock.symlink_to("s/optuna.journal")  # as an older fashionmlp left it: relative to the cwd, dangling here
    old = time.time() - JOURNAL_LOCK_GRACE - 5
    os.utime(lock, (old, old), follow_symlinks=False)
    targets = []
    real_symlink = os.symlink
    monkeypatch.setattr(os, "symlink", lambda src, dst, *a, **k: targets.append(src) or real_symlink(src, dst, *a, **k))
    storage = open_storage(None, Path("s") / "optuna.journal")
    done = threading.Event()
    worker = threading.Thread(target=lambda: optuna.create_study(storage=storage, study_name="x") and done.set(),
                              daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert done.is_set()  # it did not spin on the dangling lock
    assert targets and all(Path(t).is_absolute() and Path(t) == tmp_path / "s" / "optuna.journal" for t in targets)
    assert not lock.is_symlink()  # released


def test_a_figure_that_cannot_be_drawn_is_named_not_raised(tmp_path):
    """An lr range near 1e-300 is a valid space, but a log axis cannot show it: the sweep's report crashed after
    every trial had trained (and again on every re-run); the figure is left out and named instead."""
    from types import SimpleNamespace

    from fashionmlp.plots.sweep import sweep_figures

    study = optuna.create_study(direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-300, 1e-290, log=True)
    for i in range(3):
        trial = study.ask({"optimizer.lr": lr})
        trial.report(0.5, 1)
        study.tell(trial, 0.5 + i / 10)
    made, not_drawn = sweep_figures(study, SimpleNamespace(metric="val_accuracy", params=[lr]), tmp_path)
    assert not_drawn and all(name.startswith("parallel_coordinate.png (") for name in not_drawn), not_drawn
    assert made == ["optimization_history.png", "intermediate_values.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(made)


def test_a_step_that_needs_many_digits_is_checked_exactly():
    """(high - low) / step past 28 digits raised decimal's DivisionImpossible (a traceback)."""
    from fashionmlp.errors import ConfigError
    from fashionmlp.sweep.space import _parse_param

    assert _parse_param("optimizer.lr", {"low": 0.0, "high": 1.0e-17, "step": 1.0e-28}).step == 1.0e-28
    with pytest.raises(ConfigError, match="step 3e-28 does not divide high - low"):
        _parse_param("optimizer.lr", {"low": 0.0, "high": 1.0e-17, "step": 3.0e-28})
    # more points than that (1e28 of them here) are refused: at 1e-300, Optuna's grid arithmetic raised a traceback
    with pytest.raises(ConfigError, match="step 1e-28 makes more than 1,000,000,000,000 points of 0.0 to 1.0"):
        _parse_param("optimizer.lr", {"low": 0.0, "high": 1.0, "step": 1.0e-28})
    # a whole bound with no float form: (high - low) / step was OverflowError's traceback
    with pytest.raises(ConfigError, match="step 1 makes more than 1,000,000,000,000 points of 1 to 1000"):
        _parse_param("train.patience", {"low": 1, "high": 10**400, "step": 1})


@pytest.mark.parametrize("trials, fits, said", [(20, 100, "up to 8 trials of one shape at once per worker (the default;"),
                                               (20, 3, "up to 3 trials of one shape at once per worker (memory holds 3;"),
                                               (3, 100, "up to 3 trials of one shape at once per worker (the sweep has 3 "
                                                        "trials;")])
def test_the_default_population_says_why_it_is_what_it_is(trials, fits, said):
    """With 3 trials it said 'the default' while taking 3, not 8."""
    import dataclasses

    from fashionmlp.sweep import load_sweep_file
    from fashionmlp.sweep.run import choose_population

    spec = dataclasses.replace(load_sweep_file(ROOT / "configs" / "sweep_mlp.yaml"), trials=trials)
    lines: list[str] = []
    assert choose_population(None, spec, "cpu", fits, lines.append) == min(8, trials, fits)
    assert lines == [f"population: {said} --population K sets it, 1 trains one at a time)"]


def test_the_calls_optunas_cache_makes_of_a_database_wait_out_an_outage(tmp_path):
    """Only the storage's public methods waited: Optuna's cache (every study on a database) calls private ones
    for get_trials, ask and suggest, and an outage there was still a traceback."""
    from fashionmlp.sweep.outage import PRIVATE
    from fashionmlp.sweep.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'sweep.db'}")
    study = optuna.create_study(storage=storage)
    backend = study._storage._backend
    assert backend is storage
    for name in (*PRIVATE, "get_trial", "set_trial_state_values", "set_trial_intermediate_value"):
        assert getattr(backend, name).__qualname__.endswith("_waiting.<locals>.call"), name
    assert not backend.record_heartbeat.__qualname__.endswith("call")  # its thread retries it
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)  # ask, suggest, tell through the wrapper
    assert len(study.trials) == 2


def test_a_database_outage_is_waited_out_not_a_traceback(capsys):
    """A database restart that met a trial's report (or tell, or the next ask) ended every worker with a
    traceback, their run folders 'crashed' and their finished epochs trained again; each call now waits."""
    import sqlalchemy.exc

    from fashionmlp.errors import UserError
    from fashionmlp.progress import StopRequest
    from fashionmlp.sweep.outage import OUTAGE_SECONDS, patient

    def error(kind, words: str) -> Exception:
        return kind("SELECT 1", {}, Exception(words))

    class Flaky:  # a storage whose calls fail `fails` times with `raised`
        def __init__(self, fails: int, raised: Exception):
            self.fails, self.raised, self.calls = fails, raised, 0

        def _answer(self, value):
            self.calls += 1
            if self.calls <= self.fails:
                raise optuna.exceptions.StorageInternalError("commit") from self.raised
            return value

        def _get_trials(self, study_id, states, included, excluded):  # what Optuna's cache calls: get_trials, ask
            return self._answer(["trial"])

        def set_trial_state_values(self, trial_id, state, values=None):
            return self._answer(True)

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def flaky(fails: int, words: str, stop=None, kind=sqlalchemy.exc.OperationalError):
        return patient(Flaky(fails, error(kind, words)), "postgresql://u:***@h/db", stop, sleep, lambda: now[0])

    assert flaky(3, "connection failed: Connection refused")._get_trials(1, None, None, None) == ["trial"]
    assert now[0] == 1 + 2 + 4
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: the database (postgresql://u:***@h/db) cannot be reached (connection failed: Connection "
                   f"refused); trying again for up to {OUTAGE_SECONDS // 60} min (Ctrl-C stops)",
                   "the database (postgresql://u:***@h/db) answers again after 7 s; going on"]
    # a call that would do its work twice is tried again only where nothing was sent (a refused connection)
    assert flaky(1, "could not connect to server").set_trial_state_values(0, None) is True
    with pytest.raises(optuna.exceptions.StorageInternalError):
        flaky(1, "server closed the connection unexpectedly").set_trial_state_values(0, None)
    for words, kind in (("password authentication failed for user u", sqlalchemy.exc.OperationalError),
                        ("database is locked", sqlalchemy.exc.OperationalError),
                        ("no such table: trials", sqlalchemy.exc.ProgrammingError)):
        with pytest.raises(optuna.exceptions.StorageInternalError):  # not an outage: raised at once
            flaky(1, words, kind=kind)._get_trials(1, None, None, None)
    with pytest.raises(optuna.exceptions.StorageInternalError):  # an empty message: not an outage (an IndexError)
        flaky(1, "")._get_trials(1, None, None, None)
    stop = StopRequest()
    stop.request()
    with pytest.raises(UserError, match=r"^--storage postgresql://u:\*\*\*@h/db: the database could not be reached "
                                        r"\(Connection refused\), stopped while waiting for it; the trials' finished "
                                        r"epochs are kept: run the same command again") as stopped:
        flaky(10**6, "Connection refused", stop)._get_trials(1, None, None, None)
    assert stopped.value.exit_code == 130  # a stop, as Ctrl-C anywhere else (it was 2, a mistake)
    with pytest.raises(UserError, match=f"could not be reached \\(Connection refused\\), for {OUTAGE_SECONDS} s"):
        flaky(10**6, "Connection refused")._get_trials(1, None, None, None)


def test_a_trial_another_worker_failed_meanwhile_stops_without_a_traceback():
    """A worker silent past the heartbeat grace (suspended, cut off) found its trial failed and queued again by
    another machine: its next report or tell was UpdateFinishedTrialError's traceback, its other trials unrun."""
    from fashionmlp.progress import EpochResult
    from fashionmlp.sweep.trials import judge
    from fashionmlp.sweep.workers import _told

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # as the other machine's stale-trial check does
    said: list[str] = []
    spec = type("Spec", (), {"metric": "val_accuracy"})()
    result = EpochResult(1, {"val_accuracy": 0.5, "seconds": 1.0}, [], 0.0)
    assert judge(trial, spec, result, 3, said.append) == "taken"  # the run stops, as interrupted
    assert said[-1].startswith("trial   0: it was failed meanwhile (its heartbeats were not recorded")
    assert _told(study, trial, said.append, {"epochs": 1}, values=0.5) is None
    assert said[-1] == "trial   0: not told to the study: it was failed meanwhile and its values queued again"
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and "epochs" not in study.trials[0].user_attrs
    # a population's member so taken ends interrupted (continuable), as a single trial does; it said "pruned"
    from types import SimpleNamespace

    from fashionmlp.sweep.trials import _Judged

    member = SimpleNamespace(recorder=SimpleNamespace(run_dir=Path("t")), cfg=SimpleNamespace(
        train=SimpleNamespace(epochs=3)))
    judged = _Judged({Path("t"): SimpleNamespace(trial=trial)}, spec, said.append, None)
    assert judged.prune(member, result) == "interrupted"
    from fashionmlp.sweep.workers import _tell_interrupted  # not a stop of this worker: it goes on with others

    run = SimpleNamespace(summary={"epochs": 1, "seconds": 1.0}, status="interrupted")
    assert _tell_interrupted(study, study, trial, run, said.append) is False  # (it ended the worker, exit 130)
    assert len(study.trials) == 1  # not queued a second time
    live = study.ask()
    judged.trials[Path("t")] = SimpleNamespace(trial=live)
    assert judged.prune(member, result) is None  # the pruner has nothing to compare with: it goes on


def test_one_database_spelled_with_or_without_its_driver_or_password_is_one_sweep_folder():
    """postgresql:// and then postgresql+psycopg:// (docs/sweep.md gives both) made a second sweep folder; the
    first folder's killed trial then said 'running' for ever."""
    from fashionmlp.sweep.run import _without_password

    same = {_without_password(label) for label in ("postgresql://u:***@h:5432/db", "postgresql+psycopg://u@h:5432/db",
                                                   "postgresql+psycopg2://u:***@h:5432/db")}
    assert same == {"postgresql://u@h:5432/db"}
    assert _without_password("postgresql://u@h:5432/other") != "postgresql://u@h:5432/db"
    assert _without_password("journal") == "journal" and _without_password(None) is None
