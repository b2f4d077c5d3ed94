"""Hyperparameter search: a thin layer over Optuna.

A sweep config is a training config plus a `sweep:` section (see configs/sweep_mlp.yaml). The keys of its
`space` are the dotted keys `--set` accepts; a trial is the base config with the trial's values applied as
those overrides, trained by `run.train` into an ordinary run folder and scored on the validation split.
Storage, samplers, pruners, the worker protocol and the figures are Optuna's; what is ours is the mapping
from YAML to trials, the run folders and the report:

    runs/sweep-<study>-<YYYYmmdd-HHMMSS>/
      sweep.yaml, sweep.json    the resolved sweep config; which study and storage this folder belongs to
      optuna.journal            the study itself (the embedded default; with --storage it is in that database)
      trial-0000/ ...           one run folder per trial run on this machine
      trials.csv, summary.md, best.yaml, *.png
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fashionmlp import status as st
from fashionmlp.config import RunConfig, config_from_dict, read_yaml
from fashionmlp.data import load_data
from fashionmlp.device import check_memory, resolve_device
from fashionmlp.engine import Progress, StopFlag
from fashionmlp.errors import ConfigError, UserError
from fashionmlp.run import train
from fashionmlp.tracking import atomic_write, check_writable, create_run_dir, write_config, write_json

METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}  # validation only: no tuning on the test set
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DEFAULT_VAL_SIZE = 5000  # training images held out when the config has no validation split
SWEEP_DEFAULTS: dict[str, Any] = {"metric": "val_accuracy", "trials": 20, "sampler": "tpe", "seed": None,
                                  "sampler_startup_trials": 10, "pruner": "median", "pruner_startup_trials": 5,
                                  "pruner_from_epoch": 1, "space": None}
RANGE_KEYS = ("low", "high", "log", "step")
# Keys a trial may not change: the data and its validation split (drawn by `seed`) must be the same for every
# trial, or their scores are not comparable; threads are set per worker by --jobs.
FIXED_KEYS = ("seed", "name", "device", "train.threads")
FIXED_PREFIXES = ("data.",)
INSTALL = 'pip install "fashionmlp[sweep]" (or: pip install optuna)'
JOURNAL = "optuna.journal"
OWNER = "worker"  # trial user attribute: the process that runs it {host, pid, started, trial}
HEARTBEAT_SECONDS = 60  # database storages: a worker's running trial is failed after
GRACE_SECONDS = 180  # ... this long without its heartbeat (another machine, killed)
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
           "MySQLdb": "mysqlclient"}  # the module SQLAlchemy imports -> the package to install
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def require_optuna():
    """The optuna module, or a UserError saying what to install."""
    try:
        import optuna
    except ImportError:
        raise UserError(f"fashionmlp sweep needs Optuna, which is not installed: {INSTALL}") from None
    return optuna


# ---------------------------------------------------------------- the sweep config


@dataclass(frozen=True)
class Param:
    """One key of the search space: an int or float range, or a list of choices."""

    key: str
    kind: str  # int | float | choice (range: while the schema has not yet said int or float)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()  # the values as written (lists as lists)

    @property
    def encoded(self) -> tuple:
        """Choices as Optuna stores them: scalars as they are, lists as JSON text."""
        return tuple(_encode(c) for c in self.choices)

    def suggest(self, trial) -> Any:
        """This key's value for `trial`, drawn by the study's sampler."""
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        return self.decode(trial.suggest_categorical(self.key, list(self.encoded)))

    def decode(self, value: Any) -> Any:
        """An Optuna parameter value -> the config value."""
        if self.kind != "choice":
            return value
        return self.choices[self.encoded.index(value)]


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base training config and how to search around it."""

    base: RunConfig
    params: tuple[Param, ...]
    metric: str = "val_accuracy"
    trials: int = 20
    sampler: str = "tpe"
    seed: int = 0  # the samplers' seeds are drawn from it, the worker's index and the study's size at start
    sampler_startup_trials: int = 10  # tpe: trials drawn at random before its model of them takes over
    pruner: str = "median"
    pruner_startup_trials: int = 5
    pruner_from_epoch: int = 1
    val_size_added: bool = False  # the config had no validation split: DEFAULT_VAL_SIZE images were held out

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def grid(self) -> dict[str, list]:
        return {p.key: list(p.encoded) for p in self.params}

    @property
    def grid_size(self) -> int | None:
        return math.prod(len(p.choices) for p in self.params) if self.sampler == "grid" else None

    @property
    def target(self) -> int:
        """Finished trials (complete or pruned) that end the sweep: `trials`, or the grid if it is smaller."""
        return min(self.trials, self.grid_size) if self.sampler == "grid" else self.trials

    def section(self) -> dict[str, Any]:
        """The `sweep:` section this spec was made from, resolved."""
        space = {}
        for p in self.params:
            if p.kind == "choice":
                space[p.key] = list(p.choices)
            else:
                space[p.key] = {"low": p.low, "high": p.high, "log": p.log,
                                **({"step": p.step} if p.step is not None else {})}
        return {"metric": self.metric, "trials": self.trials, "sampler": self.sampler, "seed": self.seed,
                "sampler_startup_trials": self.sampler_startup_trials,
                "pruner": self.pruner, "pruner_startup_trials": self.pruner_startup_trials,
                "pruner_from_epoch": self.pruner_from_epoch, "space": space}

    def definition(self) -> dict[str, Any]:
        """What every worker of one study must agree on: all but `trials` and the per-machine settings."""
        cfg = self.base.to_dict()
        cfg["data"].pop("dir")
        cfg["train"].pop("threads")
        cfg.pop("device")
        section = self.section()
        section.pop("trials")
        return json.loads(json.dumps({"config": cfg, "sweep": section}))  # plain JSON types, for comparison


def _check_int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: {value!r} is not a whole number")
    if value < minimum:
        raise ConfigError(f"{key}: {value!r} is out of range; allowed: >= {minimum}")
    return value


def _check_choice(key: str, value: Any, allowed) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def _unknown(key: str, allowed) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(allowed), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _value_at(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: numbers, strings, lists and booleans keep their type


def _parse_param(key: Any, spec: Any) -> Param:
    """The shape of one space entry (a list, or a range whose kind the schema decides later)."""
    where = f"sweep.space.{key}"
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"sweep.space: {key!r} is not a dotted config key such as optimizer.lr")
    if key in FIXED_KEYS or key.startswith(FIXED_PREFIXES) or key == "data":
        raise ConfigError(f"{where}: cannot be searched (every trial keeps the config's {key}: the same data, "
                          "validation split and threads per worker make trials comparable)")
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: the list of values is empty; give at least one")
        encoded = [_encode(v) for v in spec]
        for i, value in enumerate(spec):
            if encoded.index(encoded[i]) != i:
                raise ConfigError(f"{where}: {_show(value)} is listed twice")
        return Param(key, "choice", choices=tuple(spec))
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a list of values, e.g. [64, 128, 256], or a range, e.g. "
                          "{low: 1.0e-4, high: 0.1, log: true}; got " + _show(spec))
    for name in spec:
        if name not in RANGE_KEYS:
            raise ConfigError(f"{where}: {_unknown(str(name), RANGE_KEYS)}")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs both low and high, e.g. {{low: 1.0e-4, high: 0.1, log: true}}")
    low, high = _number(where, "low", spec["low"]), _number(where, "high", spec["high"])
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log {_show(log)} is not a boolean; allowed: true or false")
    if low >= high:
        raise ConfigError(f"{where}: low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got low {low!r}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
            raise ConfigError(f"{where}: step {_show(step)} must be a number > 0")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined (Optuna samples either on a grid or in log)")
    return Param(key, "range", low, high, log, step)


def _ends(p: Param) -> tuple:
    """The values of a space entry that stand for all of it in validation: its choices, or its two bounds."""
    return p.choices if p.kind == "choice" else (p.low, p.high)


def _check_space(params: tuple[Param, ...], base_raw: dict) -> tuple[Param, ...]:
    """Each value of each entry must make a valid config with the base, or with some values of the other
    entries (nesterov needs momentum > 0: that momentum may be in the space). Ranges become int or float
    ranges after their key's type in the schema."""
    checked = []
    for p in params:
        others = [q for q in params if q is not p]
        resolved = None
        for what, value in [("value", v) for v in p.choices] or [("low", p.low), ("high", p.high)]:
            cfg = _valid_with(p, value, others, base_raw, what)
            if _is_section(_value_at(cfg, p.key)):
                raise ConfigError(f"sweep.space.{p.key}: names a section, not a value; search its keys, e.g. "
                                  f"{p.key}.<name>")
            resolved = resolved or cfg
        if p.kind == "choice":
            checked.append(p)
            continue
        kind = type(_value_at(resolved, p.key))
        where = f"sweep.space.{p.key}"
        if kind not in (int, float):
            raise ConfigError(f"{where}: a range needs a numeric key ({p.key} is {kind.__name__}); give a list of "
                              "values")
        if kind is int:
            if p.step is not None and not isinstance(p.step, int):
                raise ConfigError(f"{where}: step {_show(p.step)} must be a whole number for a whole-number key")
            checked.append(Param(p.key, "int", int(p.low), int(p.high), p.log, p.step))
        else:
            checked.append(Param(p.key, "float", float(p.low), float(p.high), p.log,
                                 None if p.step is None else float(p.step)))
    return tuple(checked)


def _valid_with(p: Param, value: Any, others: list[Param], base_raw: dict, what: str) -> RunConfig:
    """The config of the base with p = value, alone or with the first valid mix of the others' values."""
    try:
        return config_from_dict(base_raw, [_override(p.key, value)])
    except ConfigError as exc:
        first = exc
    for mix in itertools.islice(itertools.product(*(_ends(q) for q in others)), 256):
        try:
            overrides = [_override(p.key, value)] + [_override(q.key, v) for q, v in zip(others, mix)]
            return config_from_dict(base_raw, overrides)
        except ConfigError:
            continue
    raise ConfigError(f"sweep.space.{p.key}: {what} {_show(value)} is rejected: {first}") from None


def _is_section(value: Any) -> bool:
    return hasattr(value, "__dataclass_fields__")


def _number(where: str, name: str, value: Any) -> int | float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} {_show(value)} is not a finite number")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_sweep(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), trials: int | None = None
               ) -> SweepSpec:
    """Validate a sweep dict (a training config plus `sweep:`) into a SweepSpec; every mistake is a ConfigError."""
    raw = copy.deepcopy(raw)
    section = raw.pop("sweep", None)
    if not isinstance(section, dict):
        raise ConfigError("sweep: a sweep config needs a `sweep:` section with a `space:` mapping of dotted keys "
                          "to ranges or lists (see configs/sweep_mlp.yaml)")
    for key in section:
        if key not in SWEEP_DEFAULTS:
            raise ConfigError(f"sweep: {_unknown(str(key), SWEEP_DEFAULTS)}")
    s = {**SWEEP_DEFAULTS, **{k: v for k, v in section.items() if v is not None}}  # null: the default
    base = config_from_dict(raw, overrides)
    added = base.data.val_size == 0
    if added:
        base = config_from_dict(base.to_dict(), [f"data.val_size={DEFAULT_VAL_SIZE}"])
    metric = _check_choice("sweep.metric", s["metric"], tuple(METRICS))
    count = _check_int("sweep.trials", s["trials"], 1)
    if trials is not None:
        count = _check_int("--trials", trials, 1)
    sampler = _check_choice("sweep.sampler", s["sampler"], SAMPLERS)
    seed = base.seed if s["seed"] is None else _check_int("sweep.seed", s["seed"], 0)
    sampler_startup = _check_int("sweep.sampler_startup_trials", s["sampler_startup_trials"], 0)
    pruner = _check_choice("sweep.pruner", s["pruner"], PRUNERS)
    startup = _check_int("sweep.pruner_startup_trials", s["pruner_startup_trials"], 0)
    from_epoch = _check_int("sweep.pruner_from_epoch", s["pruner_from_epoch"], 1)
    space = s["space"]
    if not isinstance(space, dict) or not space:
        raise ConfigError("sweep.space: expected a mapping of dotted config keys to a range or a list of values, "
                          "e.g. {optimizer.lr: {low: 1.0e-4, high: 0.1, log: true}, train.batch_size: [64, 128]}")
    params = _check_space(tuple(_parse_param(key, value) for key, value in space.items()), base.to_dict())
    spec = SweepSpec(base, params, metric, count, sampler, seed, sampler_startup, pruner, startup, from_epoch, added)
    if sampler == "grid":
        _check_grid(spec)
    return spec


def _check_grid(spec: SweepSpec) -> None:
    """The grid sampler needs lists; and every point of the grid must be a valid config."""
    ranges = [p.key for p in spec.params if p.kind != "choice"]
    if ranges:
        raise ConfigError(f"sweep.sampler: grid needs a list of values for every key; {ranges[0]} is a range")
    if spec.grid_size > 10_000:
        raise ConfigError(f"sweep.space: the grid has {spec.grid_size:,} points; at most 10,000 are allowed")
    base_raw = spec.base.to_dict()
    for point in itertools.product(*(p.choices for p in spec.params)):
        try:
            config_from_dict(base_raw, [_override(p.key, v) for p, v in zip(spec.params, point)])
        except ConfigError as exc:
            shown = ", ".join(f"{p.key}={json.dumps(v)}" for p, v in zip(spec.params, point))
            raise ConfigError(f"sweep.space: the grid point {shown} is rejected: {exc}") from None


def load_sweep_file(path: str | Path, overrides: list[str] | tuple[str, ...] = (), trials: int | None = None
                    ) -> SweepSpec:
    return load_sweep(read_yaml(path), overrides, trials)


def trial_config(spec: SweepSpec, values: dict[str, Any], name: str, threads: int = 0) -> RunConfig:
    """The base config with one trial's values (and `threads`, when > 0) applied as dotted overrides."""
    overrides = [_override(k, v) for k, v in values.items()] + [_override("name", name)]
    if threads:
        overrides.append(f"train.threads={threads}")
    return config_from_dict(spec.base.to_dict(), overrides)


# ---------------------------------------------------------------- storage, study, workers


def _storage_label(url: str | None) -> str:
    """What outputs say about the storage: the journal, or the URL without its password."""
    if url is None:
        return "journal"
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: it will be refused when opened; show no part of it
        return "<database URL>"


def open_storage(url: str | None, journal: Path | None = None):
    """Optuna's journal file storage at `journal` (url None), else its RDB storage with heartbeats."""
    optuna = require_optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(journal)))
    if "://" not in url:
        raise UserError(f"--storage {url!r} is not a database URL; e.g. postgresql://user:password@host/db, "
                        "mysql+pymysql://user:password@host/db or sqlite:///sweep.db (without --storage the study "
                        "is a journal file in the sweep folder)")
    try:
        import sqlalchemy.exc

        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # heartbeats and their retry callback are marked experimental
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_SECONDS,
                        grace_period=GRACE_SECONDS,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers starting together on an empty database race to create Optuna's tables, and
                # PostgreSQL's CREATE TABLE IF NOT EXISTS is not atomic: the loser finds them made on a retry.
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or str(exc)
        package = DRIVERS.get(missing, missing)
        raise UserError(f"--storage {_storage_label(url)}: its database driver is not installed (no module "
                        f"{missing!r}): pip install {package!r}") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError(f"--storage {_storage_label(url)}: cannot use the database: {first}") from None


def _create_or_load(storage, name: str, spec: SweepSpec, label: str):
    """The study `name` (created when new); a study made from a different sweep config is a UserError."""
    optuna = require_optuna()
    study = optuna.create_study(study_name=name, storage=storage, direction=spec.direction, load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler())
    mine = spec.definition()
    theirs = study.user_attrs.get("fashionmlp_sweep")
    if theirs is None:
        study.set_user_attr("fashionmlp_sweep", mine)
    elif theirs != mine:
        ours = {**_flat(mine["config"]), **_flat(mine["sweep"], "sweep.")}
        old = {**_flat(theirs.get("config", {})), **_flat(theirs.get("sweep", {}), "sweep.")}
        diff = [f"{k} {_show(ours.get(k))} (the study has {_show(old.get(k))})"
                for k in sorted(set(ours) | set(old)) if ours.get(k) != old.get(k)]
        raise UserError(f"--study {name!r} in {label} was started from a different sweep config: {'; '.join(diff[:3])}"
                        "; continue it with the same config, or start a new study with --study NEW_NAME")
    return study


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 5}} -> {"train.epochs": 5}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and prefix + key != "sweep.space":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc, clock ticks since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _owner(number: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid()),
            "trial": number}


def _alive(owner: dict[str, Any]) -> bool:
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    started = _process_start(int(owner["pid"]))
    return not (owner.get("started") and started and started != owner["started"])


def fail_dead_trials(study) -> list[int]:
    """Mark FAIL the running trials whose worker process on this machine is gone (e.g. `kill -9`) and queue
    their parameters again with Optuna's retry callback; returns their numbers.

    Database storages do the same for every machine through heartbeats; the journal file has none, so the
    worker's pid (and start time) recorded on the trial stand in for it on this machine.
    """
    optuna = require_optuna()
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        # a retried trial inherits the dead worker's record until its new worker writes its own: check "trial"
        if not owner or owner.get("trial") != t.number or owner.get("host") != host or _alive(owner):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process failed or finished it first
        _retry(study, t.number)
        failed.append(t.number)
    return failed


def _retry(study, number: int) -> None:
    """Queue the values of failed trial `number` to run again, with Optuna's own retry callback."""
    optuna = require_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # marked experimental
        # a copy: the callback appends to the trial's retry history in place
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.get_trials(deepcopy=True)[number])


@dataclass(frozen=True)
class _Job:
    """What a worker needs (picklable: spawned workers get it as their argument)."""

    spec: SweepSpec
    study: str
    storage: str | None  # database URL; None: the journal
    sweep_dir: Path
    data_dir: str | None
    worker: int  # 0..J-1: one of the three numbers its sampler's seed is drawn from
    threads: int  # train.threads of its trials (0: the config's)
    command: str | None = None  # the sweep's command line, recorded in each trial's summary.json


class _Interrupted(Exception):
    def __init__(self, number: int):
        super().__init__(f"trial {number} interrupted")
        self.number = number


class _Rejected(Exception):
    """The trial's combination of values is not a valid config (each value alone is): the trial fails."""


class _TrialStop:
    """A trial's should_stop: the user's interrupt, or the pruner's verdict (the run then ends "pruned")."""

    def __init__(self, interrupt: Callable[[], bool]):
        self.interrupt = interrupt
        self.pruned = False

    def __call__(self) -> bool:
        return self.pruned or bool(self.interrupt())

    @property
    def reason(self) -> str:  # read by run.run_epochs when the run stops
        return st.INTERRUPTED if self.interrupt() else st.PRUNED


class _Report(Progress):
    """Reports the metric after each epoch to the trial (and a line to `echo`) and asks the pruner whether to
    go on."""

    def __init__(self, trial, spec: SweepSpec, stop: _TrialStop, echo: Callable[[str], None] = lambda line: None):
        self.trial, self.spec, self.stop, self.echo = trial, spec, stop, echo

    def end_epoch(self, result, epochs: int) -> None:
        value = result.metrics[self.spec.metric]
        self.echo(f"trial {self.trial.number:>3} epoch {result.epoch}/{epochs}  {self.spec.metric} {value:.4f}  "
                  f"{result.metrics['seconds']:.1f}s")
        self.trial.report(value, result.epoch)
        if result.epoch < epochs and self.trial.should_prune():
            self.stop.pruned = True  # the run stops after the next step; that unfinished epoch is dropped


def _make_sampler(spec: SweepSpec, worker: int, start: int):
    """The sampler of worker `worker`, started when the study had `start` trials: each (worker, start) gets its
    own seed, so workers and continued studies do not repeat the random draws of earlier ones."""
    optuna = require_optuna()
    seed = int(np.random.SeedSequence([spec.seed, worker, start]).generate_state(1)[0])
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler_startup_trials)


def _make_pruner(spec: SweepSpec):
    optuna = require_optuna()
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                       n_warmup_steps=spec.pruner_from_epoch)


def _finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def _work(job: _Job, data, echo: Callable[[str], None], should_stop: Callable[[], bool]) -> bool:
    """One worker: run trials until the study has its finished trials; True when interrupted."""
    optuna = require_optuna()
    from optuna.trial import TrialState

    storage = open_storage(job.storage, job.sweep_dir / JOURNAL)
    books = optuna.load_study(study_name=job.study, storage=storage, sampler=optuna.samplers.RandomSampler())
    sampler = _make_sampler(job.spec, job.worker, len(books.get_trials(deepcopy=False)))
    study = optuna.load_study(study_name=job.study, storage=storage, sampler=sampler, pruner=_make_pruner(job.spec))
    data = data if data is not None else load_data(job.spec.base, job.data_dir)
    spec = job.spec

    def objective(trial) -> float:
        trial.set_user_attr(OWNER, _owner(trial.number))
        trial.set_user_attr("status", st.RUNNING)  # replaces what a retried trial inherited
        trial.set_user_attr("epochs", None)  # known when the run ends
        values = {p.key: p.suggest(trial) for p in spec.params}
        name = f"trial-{trial.number:04d}"
        try:
            cfg = trial_config(spec, values, f"{job.study}-{name}", job.threads)
        except ConfigError as exc:
            trial.set_user_attr("error", str(exc))
            raise _Rejected(str(exc)) from None
        run_dir = job.sweep_dir / name
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        stop = _TrialStop(should_stop)
        result = train(cfg, run_dir=run_dir, data=data, progress=_Report(trial, spec, stop, echo), should_stop=stop,
                       command=job.command)
        trial.set_user_attr("epochs", result.summary["epochs"])
        trial.set_user_attr("status", result.status)
        if result.status == st.INTERRUPTED:
            raise _Interrupted(trial.number)
        if result.status in (st.PRUNED, st.DIVERGED):  # diverged: the pruner's outcome, reached by the loss itself
            raise optuna.TrialPruned(f"{result.status} after epoch {result.summary['epochs']}")
        return float(result.summary["final"][spec.metric])

    def after_trial(this_study, trial) -> None:
        fail_dead_trials(books)
        finished = len(books.get_trials(deepcopy=False, states=_finished_states()))
        echo(progress_line(spec, trial, finished))
        if should_stop():  # asked to stop between two trials: start no other
            this_study.stop()

    # Counting running trials too keeps concurrent workers from starting trials beyond the target.
    enough = optuna.study.MaxTrialsCallback(spec.target, states=(*_finished_states(), TrialState.RUNNING))
    try:
        study.optimize(objective, callbacks=[after_trial, enough], catch=(_Rejected,), gc_after_trial=False)
    except _Interrupted as exc:  # the trial is FAIL already (Optuna re-raised); run its values again later
        _retry(books, exc.number)
        echo(f"trial {exc.number:>3} interrupted: marked failed and queued to run again")
        return True
    return bool(should_stop())


def _spawned(job: _Job, parent: int) -> None:
    """Entry point of a worker process: SIGTERM (from the parent) stops it gracefully; so does the parent's death."""
    flag = StopFlag()

    def on_term(signum, frame):
        if flag.requested:
            os._exit(130)
        flag.requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which forwards SIGTERM once
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line per trial of our own replaces Optuna's log

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        flag.requested = True

    threading.Thread(target=watch, daemon=True).start()
    interrupted = _work(job, None, lambda line: print(line, flush=True), flag)
    raise SystemExit(130 if interrupted else 0)


def _run_workers(jobs: list[_Job], should_stop: Callable[[], bool], echo: Callable[[str], None]) -> list[str]:
    """Run each job in its own spawned process; forward a stop request once; return what went wrong."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks
    procs = [ctx.Process(target=_spawned, args=(job, os.getpid()), name=f"worker-{job.worker + 1}") for job in jobs]
    for p in procs:
        p.start()
    echo("workers: " + ", ".join(f"{p.name} pid {p.pid}" for p in procs))
    forwarded = False
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.2)
        if should_stop() and not forwarded:
            for p in procs:
                if p.is_alive():
                    p.terminate()  # SIGTERM: finish the step, fail and requeue the trial, exit
            forwarded = True
    problems = []
    for p in procs:
        if p.exitcode and p.exitcode < 0:
            problems.append(f"{p.name} (pid {p.pid}) was killed by {signal.Signals(-p.exitcode).name}")
        elif p.exitcode not in (0, 130):
            problems.append(f"{p.name} (pid {p.pid}) exited with code {p.exitcode}")
    return problems


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    sweep_dir: Path
    study: str
    storage: str  # "journal" or the URL without password
    target: int
    rows: list[dict]  # one per trial, in trial-number order
    best: dict | None  # number, value, params, run_dir, test_accuracy (None when its folder is not here)
    finished: int = 0
    running: int = 0
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)  # workers that died


def default_study_name(spec: SweepSpec, config_path: str | Path | None = None) -> str:
    if spec.base.name:
        return spec.base.name
    return Path(config_path).stem if config_path else f"sweep_{spec.base.model.name}"


def _find_sweep_dir(runs_dir: Path, study: str, label: str) -> Path | None:
    """The newest sweep folder under runs_dir made for this study and storage."""
    pattern = re.compile(rf"sweep-{re.escape(study)}-\d{{8}}-\d{{6}}(-\d+)?")
    if not runs_dir.is_dir():
        return None
    for path in sorted((p for p in runs_dir.iterdir() if pattern.fullmatch(p.name)), reverse=True):
        try:
            meta = json.loads((path / "sweep.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("study") == study and meta.get("storage") == label:
            return path
    return None


def _new_sweep_dir(runs_dir: Path, study: str, label: str, spec: SweepSpec) -> Path:
    path = create_run_dir(runs_dir, f"sweep-{study}")
    write_json(path / "sweep.json", {"study": study, "storage": label})
    write_config(path / "sweep.yaml", {**spec.base.to_dict(), "sweep": spec.section()})
    return path


def run_sweep(spec: SweepSpec, *, study: str, jobs: int = 1, storage: str | None = None,
              runs_dir: Path = Path("runs"), data_dir: str | Path | None = None,
              echo: Callable[[str], None] = print, should_stop: Callable[[], bool] = lambda: False,
              command: str | None = None) -> SweepResult:
    """Run (or continue) the study until it has `spec.target` finished trials, with `jobs` worker processes
    on this machine, then write the report. Every user mistake is raised before a folder is made; `command`
    is recorded in each trial's summary.json."""
    optuna = require_optuna()
    cores = len(os.sched_getaffinity(0))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= cores:
        raise UserError(f"--jobs: {jobs!r} is out of range; allowed: 1 to {cores} (the CPU cores this process may "
                        "use: each worker needs one)")
    if not STUDY_NAME.fullmatch(study):
        raise UserError(f"--study: {study!r} is not allowed; use letters, digits, '_', '.', '-' (at most 100)")
    device = resolve_device(spec.base.device)
    check_writable(runs_dir)
    data = load_data(spec.base, data_dir)  # the data's own mistakes, before any folder
    _check_memory(spec, device, data)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line per trial of our own replaces Optuna's log
    try:
        return _run(spec, study, jobs, storage, runs_dir, data_dir, data, echo, should_stop, command)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run(spec: SweepSpec, study: str, jobs: int, storage: str | None, runs_dir: Path, data_dir, data,
         echo: Callable[[str], None], should_stop: Callable[[], bool], command: str | None) -> SweepResult:
    label = _storage_label(storage)
    if storage is not None:
        store = open_storage(storage)
        _create_or_load(store, study, spec, label)
        sweep_dir = _find_sweep_dir(runs_dir, study, label) or _new_sweep_dir(runs_dir, study, label, spec)
    else:
        sweep_dir = _find_sweep_dir(runs_dir, study, label)
        if sweep_dir is None:
            sweep_dir = _new_sweep_dir(runs_dir, study, label, spec)
        store = open_storage(None, sweep_dir / JOURNAL)
        _create_or_load(store, study, spec, f"{sweep_dir / JOURNAL}")
    optuna = require_optuna()
    from optuna.trial import TrialState

    books = optuna.load_study(study_name=study, storage=store, sampler=optuna.samplers.RandomSampler())
    revived = fail_dead_trials(books)
    if revived:
        echo(f"trial(s) {', '.join(map(str, revived))} had lost their worker (killed?): marked failed, queued again")
    finished = len(books.get_trials(deepcopy=False, states=_finished_states()))
    running = len(books.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    remaining = spec.target - finished - running
    workers = max(0, min(jobs, remaining))
    cores = len(os.sched_getaffinity(0))  # (jobs <= cores: checked)
    threads = max(1, cores // workers) if workers > 1 else spec.base.train.threads
    echo(f"study {study!r} ({label}): {finished_text(finished, spec.target)}"
         + (f", {running} running elsewhere" if running else "") + f"; folder {sweep_dir}")
    if spec.grid_size is not None and spec.grid_size < spec.trials:
        echo(f"the grid has {spec.grid_size} points: {spec.grid_size} trials, not {spec.trials}")
    if spec.val_size_added:
        echo(f"validation: the config has no validation split, so data.val_size = {DEFAULT_VAL_SIZE} training images "
             f"are held out (drawn by seed {spec.base.seed}, the same for every trial); trials are scored on "
             f"{spec.metric}")
    else:
        echo(f"validation: {spec.base.data.val_size} training images held out (seed {spec.base.seed}, the same for "
             f"every trial); trials are scored on {spec.metric}")
    interrupted, problems = False, []
    if workers >= 1:
        echo(f"running {remaining} more trial(s) with {workers} worker(s)"
             + (f", {threads} CPU thread(s) each" if workers > 1 else ""))
        job = _Job(spec, study, storage, sweep_dir, None if data_dir is None else str(data_dir), 0,
                   threads if workers > 1 else 0, command)
        if workers == 1:
            interrupted = _work(job, data, echo, should_stop)
        else:
            del data  # each worker loads its own copy
            problems = _run_workers([_replace_worker(job, k) for k in range(workers)], should_stop, echo)
            interrupted = bool(should_stop())
        revived = fail_dead_trials(books)
        if revived:
            echo(f"trial(s) {', '.join(map(str, revived))} lost their worker: marked failed, queued to run again")
    rows = trial_rows(books, spec)
    best = _best(books, spec)
    finished = len(books.get_trials(deepcopy=False, states=_finished_states()))
    running = len(books.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    result = SweepResult(sweep_dir, study, label, spec.target, rows, best, finished, running, interrupted, problems)
    write_report(result, spec, books)
    return result


def finished_text(finished: int, target: int) -> str:
    """'4 of 6 trials finished', or, for a study that has more than a lowered --trials asks for, say so."""
    if finished > target:
        return f"{finished} trials finished, more than the {target} asked for (nothing to run)"
    return f"{finished} of {target} trials finished"


def _check_memory(spec: SweepSpec, device, data) -> None:
    """Every mix of the space's ends (choices, range bounds; up to 256 mixes) must fit in memory, before any
    folder is made: the widest layers with the largest batch are among them."""
    n_train = len(data.train.labels)
    n_images = n_train + len(data.test.labels) + (0 if data.val is None else len(data.val.labels))
    base_raw = spec.base.to_dict()
    for mix in itertools.islice(itertools.product(*(_ends(p) for p in spec.params)), 256):
        try:
            cfg = config_from_dict(base_raw, [_override(p.key, v) for p, v in zip(spec.params, mix)])
        except ConfigError:
            continue  # a rejected mix never trains
        try:
            check_memory(cfg, device, n_images, n_train)
        except UserError as exc:
            raise UserError(f"sweep.space: {exc}") from None


def _replace_worker(job: _Job, worker: int) -> _Job:
    return dataclasses.replace(job, worker=worker)


# ---------------------------------------------------------------- the report


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
    if status == st.DIVERGED:
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
        for key, param in by_key.items():
            row[key] = param.decode(t.params[key]) if key in t.params else None
        state, attrs = t.state.name.lower(), _attrs(t)
        row.update({"state": st.DIVERGED if attrs.get("status") == st.DIVERGED else state,
                    spec.metric: t.value,
                    "epochs": attrs.get("epochs"),
                    "seconds": round(t.duration.total_seconds(), 1) if t.duration is not None else None,
                    "note": _note(t)})
        rows.append(row)
    return rows


def _best(study, spec: SweepSpec) -> dict | None:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    pick = max if spec.direction == "maximize" else min
    t = pick(complete, key=lambda tr: tr.value)
    params = {p.key: p.decode(t.params[p.key]) for p in spec.params if p.key in t.params}
    run_dir = Path(t.user_attrs["run_dir"])
    test_accuracy = None
    if t.user_attrs[OWNER]["host"] == socket.gethostname():
        try:
            test_accuracy = json.loads((run_dir / "summary.json").read_text())["final"]["test_accuracy"]
        except (OSError, ValueError, KeyError):
            pass
    return {"number": t.number, "value": t.value, "params": params, "run_dir": str(run_dir),
            "host": t.user_attrs.get(OWNER, {}).get("host"), "test_accuracy": test_accuracy}


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key in METRICS:
            return f"{value:.4f}"
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
    seconds = f"{trial.duration.total_seconds():.1f}s" if trial.duration is not None else "-"
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
        cfg = trial_config(spec, best["params"], f"{result.study}-best")
        header = (f"# Best trial of study {result.study!r}: trial {best['number']}, {spec.metric} {best['value']:.4f} "
                  f"on {cfg.data.val_size} validation images after {cfg.train.epochs} epochs.\n"
                  f"# Train it: fashionmlp train --config best.yaml [--epochs N]\n")
        body = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_write(folder / "best.yaml", lambda fh: fh.write(header + body), mode="w")
    figures = _figures(study, spec, folder)
    head, cells = table_rows(result.rows, spec)
    lines = [f"# Sweep: {result.study}", "",
             f"Storage: {result.storage}. {spec.sampler} sampler (seed {spec.seed}), pruner {spec.pruner}; "
             f"{finished_text(result.finished, result.target)}; metric {spec.metric} "
             f"({spec.direction}d) on {spec.base.data.val_size} validation images; "
             f"{spec.base.train.epochs} epochs per trial.", ""]
    if best is not None:
        test = "not on this machine" if best["test_accuracy"] is None else f"{best['test_accuracy']:.2%}"
        lines += [f"Best: trial {best['number']}, {spec.metric} {best['value']:.4f}; its test accuracy {test} "
                  "(reported once, never used for the search). Config: best.yaml.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    lines += [""] + [f"![{name}]({name})" for name in figures] + [""]
    text = "\n".join(lines)
    atomic_write(folder / "summary.md", lambda fh: fh.write(text), mode="w")


def _figures(study, spec: SweepSpec, folder: Path) -> list[str]:
    """Optuna's matplotlib figures, where there are enough trials to draw them; returns the file names."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    name = spec.metric
    plots = []  # (file, draw, x label or None); Optuna's plots show complete trials, except the epoch curves
    if complete >= 1:
        plots.append(("optimization_history.png", lambda: vis.plot_optimization_history(study, target_name=name),
                      "trial"))
    if reported:  # every trial's metric per epoch: pruned ones stop early
        plots.append(("intermediate_values.png", lambda: vis.plot_intermediate_values(study), "epoch"))
    if complete >= 2:
        plots.append(("parallel_coordinate.png", lambda: vis.plot_parallel_coordinate(study, target_name=name),
                      None))
    if complete >= 5 and len(spec.params) >= 2:  # fewer: the importances are noise
        plots.append(("param_importances.png", lambda: vis.plot_param_importances(study, target_name=name), None))
    made = []
    for file, draw, xlabel in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ax = draw()
        if xlabel is not None:  # trials and epochs are whole numbers
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if file == "intermediate_values.png":
            ax.set_ylabel(f"{name} after the epoch")
        ax.set_title(f"{ax.get_title()}: study {study.study_name}")
        fig = ax.figure
        fig.set_size_inches(9, 5)
        fig.tight_layout()
        fig.savefig(folder / file, dpi=110)
        plt.close(fig)
        made.append(file)
    return made
