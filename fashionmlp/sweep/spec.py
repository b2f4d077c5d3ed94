"""The sweep config: a training config plus a `sweep:` section, validated into a frozen SweepSpec of Params.

Its validation (space.py) uses config's own rules; nothing here imports Optuna except `Param.suggest`, which
is handed an Optuna trial.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from fashionmlp.config import Overrides, RunConfig, parse_override, unknown_key
from fashionmlp.config.files import NOT_SET, value_set
from fashionmlp.errors import ConfigError

METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}  # validation only: no tuning on the test set


SAMPLERS = ("tpe", "random", "grid")


PRUNERS = ("median", "none")


DEFAULT_VAL_SIZE = 5000  # training images held out when the config has no validation split


SWEEP_DEFAULTS: dict[str, Any] = {"metric": "val_accuracy", "trials": 20, "sampler": "tpe", "seed": None,
                                  "sampler_startup_trials": 10, "pruner": "median", "pruner_startup_trials": 5,
                                  "pruner_from_epoch": 1, "space": None}


RANGE_KEYS = ("low", "high", "log", "step")


# Keys a trial may not change: the data and its validation split (drawn by `seed`) must be the same for every
# trial, or their scores are not comparable; threads are set per worker by --jobs; the teacher is checked once,
# before the first trial (compare teachers with a sweep each).
FIXED_KEYS = ("seed", "name", "device", "train.threads", "distill.teacher", "distill.checkpoint",
              "distill.fingerprint")


FIXED_PREFIXES = ("data.",)


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
        return tuple(encode(c) for c in self.choices)

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


def encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base training config and how to search around it."""

    base: RunConfig
    params: tuple[Param, ...]
    metric: str = "val_accuracy"
    trials: int = 20
    sampler: str = "tpe"
    seed: int = 0  # with a trial's number, the seed of that trial's random draws (sampler.PerTrialSeed)
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

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of a grid, as Optuna stores its parameters (choices encoded), in the grid's order."""
        return [dict(zip((p.key for p in self.params), values))
                for values in itertools.product(*(p.encoded for p in self.params))]

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
        if cfg["distill"]["fingerprint"] is not None:  # the teacher's weights pinned: where it lies is per machine
            cfg["distill"].pop("teacher")
        section = self.section()
        section.pop("trials")
        return json.loads(json.dumps({"config": cfg, "sweep": section}))  # plain JSON types, for comparison


def refuse_searched_sets(overrides, params: tuple[Param, ...]) -> None:
    """A --set of a searched key: each trial's value replaced it without a word (`--set optimizer.lr=0.5` trained
    lr 0.0035)."""
    for text in overrides:  # the key itself, or its section as a mapping that holds it (`optimizer={lr: 0.5}`)
        key = next((p.key for p in params if value_set(text, p.key) is not NOT_SET), None)
        if key is not None:
            raise ConfigError(f"--set {text}: {key} is searched (sweep.space): each trial sets its own value, so "
                              "this one would not be used; change its range in sweep.space, or remove it from the "
                              "space to fix it")


def sweep_overrides(overrides: Overrides, section: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """`--set sweep.KEY=VALUE` edits the sweep section (`--set sweep.seed=1`, `--set 'sweep.space={...}'`
    replaces the space); the other overrides are left for the training config."""
    rest = []
    for text in overrides:
        path, value = parse_override(text)
        if path[0] != "sweep":
            rest.append(text)
            continue
        if len(path) != 2:
            raise ConfigError(f"--set {text!r}: expected sweep.KEY=VALUE with one of {', '.join(SWEEP_DEFAULTS)}")
        if path[1] not in SWEEP_DEFAULTS:
            raise ConfigError(f"--set {text!r}: {unknown_key(path[1], list(SWEEP_DEFAULTS), 'sweep key')}")
        section = {**section, path[1]: value}
    return rest, section
