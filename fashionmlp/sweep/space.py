"""Reading a sweep config: the `sweep:` section and its search space, checked entry by entry against the
training config's own schema and rules, so a trial can only fail for a combination of values."""

from __future__ import annotations

import copy
import dataclasses
import decimal
import itertools
import json
import math
from pathlib import Path
from typing import Any

from fashionmlp.config import (
    Overrides,
    RunConfig,
    apply_overrides,
    check_choice,
    check_int,
    check_shortcut,
    config_from_dict,
    number,
    read_yaml,
    show,
    unknown_key,
    with_values,
)
from fashionmlp.config.rules import keys_not_used
from fashionmlp.errors import ConfigError
from fashionmlp.sweep.spec import (
    DEFAULT_VAL_SIZE,
    FIXED_KEYS,
    FIXED_PREFIXES,
    METRICS,
    PRUNERS,
    RANGE_KEYS,
    SAMPLERS,
    SWEEP_DEFAULTS,
    Param,
    SweepSpec,
    encode,
    refuse_searched_sets,
    sweep_overrides,
)


def value_at(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _check_step(where: str, low: float, high: float, step: float) -> None:
    """A step must divide high - low: Optuna would lower high to the grid's last point with only a warning (its
    own test, in decimals of the numbers as written)."""
    d_low, d_high, d_step = (decimal.Decimal(str(v)) for v in (low, high, step))
    with decimal.localcontext() as exact:
        exact.prec = 2000  # enough digits for any (high - low) / step of 64-bit floats
        divides = (d_high - d_low) % d_step == 0
    if divides:
        return
    if d_step > d_high - d_low:
        raise ConfigError(f"{where}: step {step!r} is larger than the range {low!r} to {high!r}")
    last = (d_high - d_low) // d_step * d_step + d_low
    raise ConfigError(f"{where}: step {step!r} does not divide high - low ({high!r} - {low!r}): the grid would end "
                      f"at {last}, not {high!r}; give a high on the grid, e.g. {last} or {last + d_step}")


MAX_ITEMS = 10_000  # items in one space entry's list, nested lists counted in full
MAX_GRID_POINTS = 10**12  # of a range with a step
EXACT_INT = 2**53  # Optuna keeps a trial's values as 64-bit floats: whole numbers are exact up to this


def _too_big(value: Any) -> bool:
    """Whether `value` holds more than MAX_ITEMS items, counted as far as MAX_ITEMS (a 380-byte file of nested
    aliases expands to billions: walking it whole took 860 MB and 6.5 s at 8 levels, a MemoryError at 9)."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_ITEMS:
            return True
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def _parse_param(key: Any, spec: Any) -> Param:
    """The shape of one space entry (a list, or a range whose kind the schema decides later)."""
    where = f"sweep.space.{key}"
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"sweep.space: {key!r} is not a dotted config key such as optimizer.lr")
    if key in FIXED_KEYS or key.startswith(FIXED_PREFIXES) or key == "data":
        why = ("the teacher is checked once, before the first trial: compare teachers with a sweep each"
               if key.startswith("distill.") else
               "the same data, validation split and threads per worker make trials comparable")
        raise ConfigError(f"{where}: cannot be searched (every trial keeps the config's {key}: {why})")
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: the list of values is empty; give at least one")
        if _too_big(spec):  # nested YAML aliases expand exponentially: checked before anything walks them
            raise ConfigError(f"{where}: the list of values holds more than {MAX_ITEMS:,} items in all (nested "
                              "lists count every item); a space lists values such as [64, 128, 256]")
        encoded = [(type(v), encode(v)) for v in spec]  # typed: true and 1 are two values (1 == True in Python)
        for i, value in enumerate(spec):
            if encoded.index(encoded[i]) != i:
                raise ConfigError(f"{where}: {show(value)} is listed twice")
        return Param(key, "choice", choices=tuple(spec))
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a list of values, e.g. [64, 128, 256], or a range, e.g. "
                          "{low: 1.0e-4, high: 0.1, log: true}; got " + show(spec))
    for name in spec:
        if name not in RANGE_KEYS:
            raise ConfigError(f"{where}: {unknown_key(str(name), list(RANGE_KEYS), 'key')}")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs both low and high, e.g. {{low: 1.0e-4, high: 0.1, log: true}}")
    low, high = number(f"{where}: low", spec["low"]), number(f"{where}: high", spec["high"])
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log {show(log)} is not a boolean; allowed: true or false")
    if low >= high:
        raise ConfigError(f"{where}: low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got low {low!r}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
            raise ConfigError(f"{where}: step {show(step)} must be a number > 0")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined (Optuna samples either on a grid or in log)")
        _check_step(where, low, high, step)
        # Optuna's decimal arithmetic on the grid raised InvalidOperation; in decimals here, as a 400-digit whole
        # bound has no float form (OverflowError's traceback)
        if (decimal.Decimal(str(high)) - decimal.Decimal(str(low))) / decimal.Decimal(str(step)) > MAX_GRID_POINTS:
            raise ConfigError(f"{where}: step {step!r} makes more than {MAX_GRID_POINTS:,} points of {low!r} to "
                              f"{high!r}; give a coarser step, or none (a continuous range)")
    return Param(key, "range", low, high, log, step)



def ends(p: Param) -> tuple:
    """The values of a space entry that stand for all of it in validation: its choices, or its two bounds."""
    return p.choices if p.kind == "choice" else (p.low, p.high)


def _check_space(params: tuple[Param, ...], base_raw: dict) -> tuple[Param, ...]:
    """Each value of each entry must make a valid config with the base, or with some values of the other
    entries (nesterov needs momentum > 0: that momentum may be in the space). Ranges become int or float
    ranges after their key's type in the schema."""
    checked = []
    for p in params:
        others = [q for q in params if q is not p]
        resolved, seen = None, {}
        for what, value in [("value", v) for v in p.choices] or [("low", p.low), ("high", p.high)]:
            try:
                cfg = _valid_with(p, value, others, base_raw, what)
            except _NoPartner:
                _check_some_point(params, base_raw)  # no valid mix at all: that is what to say
                raise
            read = value_at(cfg, p.key)  # as a trial's config reads it: 1e-3 (YAML 1.1 text) is 0.001
            if dataclasses.is_dataclass(read):
                raise ConfigError(f"sweep.space.{p.key}: names a section, not a value; search its keys, e.g. "
                                  f"{p.key}.<name>")
            resolved = resolved or cfg
            key = (type(read), encode(read))
            if p.kind == "choice" and key in seen:
                raise ConfigError(f"sweep.space.{p.key}: {show(seen[key])} and {show(value)} are the same value "
                                  f"({show(read)}); list it once")
            seen[key] = value
        if p.kind == "choice":
            checked.append(p)
            continue
        kind = type(value_at(resolved, p.key))
        where = f"sweep.space.{p.key}"
        if kind not in (int, float):
            raise ConfigError(f"{where}: a range needs a numeric key ({p.key} is {kind.__name__}); give a list of "
                              "values")
        if kind is int:
            if p.step is not None and not isinstance(p.step, int):
                raise ConfigError(f"{where}: step {show(p.step)} must be a whole number for a whole-number key")
            if max(abs(p.low), abs(p.high)) > EXACT_INT:  # trials.csv said ...888 where the trial trained ...889
                raise ConfigError(f"{where}: {show(p.low)} to {show(p.high)} reaches past 2**53, where Optuna's 64-bit "
                                  "floats stop holding every whole number; give a range within it")
            checked.append(Param(p.key, "int", int(p.low), int(p.high), p.log, p.step))
        else:
            checked.append(Param(p.key, "float", float(p.low), float(p.high), p.log,
                                 None if p.step is None else float(p.step)))
    return tuple(checked)


def end_mixes(params: tuple[Param, ...], base_raw: dict, most: int):
    """Up to `most` (mix, its config or the ConfigError refusing it) of the space's ends (choices, bounds)."""
    for mix in itertools.islice(itertools.product(*(ends(p) for p in params)), most):
        try:
            yield mix, config_from_dict(base_raw, values={p.key: v for p, v in zip(params, mix)})
        except ConfigError as exc:
            yield mix, exc


def _check_some_point(params: tuple[Param, ...], base_raw: dict) -> None:
    """Some mix of the space's values makes a valid config (not so: optimizer.name [nesterov], momentum [0.0]),
    which reads each key (not so: momentum with adam alone: all trials alike)."""
    first, why, used = None, {}, set()
    for mix, cfg in end_mixes(params, base_raw, 4096):
        if isinstance(cfg, ConfigError):
            first = first or (mix, cfg)
            continue
        used |= {p.key for p in params if p.key not in (why := keys_not_used(cfg))}
        if len(used) == len(params):
            return
    if math.prod(len(ends(p)) for p in params) > 4096:
        return  # not every mix was seen: the workers' guard (trials rejected in a row)
    if why and (key := next(p.key for p in params if p.key not in used)):  # a key no valid mix reads
        raise ConfigError(f"sweep.space.{key}: no trial would use it ({why[key]}), so its values would train alike; "
                          "leave it out, or search it beside values that use it")
    if first is not None:
        shown = ", ".join(f"{p.key}={show(v)}" for p, v in zip(params, first[0]))
        raise ConfigError(f"sweep.space: no mix of its values makes a valid config (e.g. {shown}: {first[1]}); "
                          "every trial would be rejected")


class _NoPartner(ConfigError):
    """A value of the space valid with the base config, but with no mix of the other entries' values."""


def _valid_with(p: Param, value: Any, others: list[Param], base_raw: dict, what: str) -> RunConfig:
    """The config of the base with p = value and the first valid mix of the others' values (alone when p is
    the only entry: a trial never has the base's value of a searched key)."""
    try:
        alone, first = config_from_dict(base_raw, values={p.key: value}), None
    except ConfigError as exc:
        alone, first = None, exc
    if not others and alone is not None:
        return alone
    mixes = math.prod(len(ends(q)) for q in others)
    for mix in itertools.islice(itertools.product(*(ends(q) for q in others)), 256):
        try:
            return config_from_dict(base_raw, values={p.key: value, **{q.key: v for q, v in zip(others, mix)}})
        except ConfigError as exc:
            first = first or exc
    if alone is not None and mixes > 256:  # beyond what is tried here: the workers' guard
        return alone
    if "unknown config key" in str(first):  # the key, not its value
        raise ConfigError(f"sweep.space.{p.key}: {first}") from None
    if alone is not None:
        raise _NoPartner(f"sweep.space.{p.key}: {what} {show(value)} goes with none of the other entries' values "
                          f"(e.g. {first}): no trial could use it") from None
    raise ConfigError(f"sweep.space.{p.key}: {what} {show(value)} is rejected: {first}") from None


def load_sweep(raw: dict[str, Any], overrides: Overrides = (), trials: int | None = None) -> SweepSpec:
    """Validate a sweep dict (a training config plus `sweep:`) into a SweepSpec; every mistake is a ConfigError."""
    raw = copy.deepcopy(raw)
    section = raw.pop("sweep", None)
    if not isinstance(section, dict):
        raise ConfigError("sweep: a sweep config needs a `sweep:` section with a `space:` mapping of dotted keys "
                          "to ranges or lists (see configs/sweep_mlp.yaml)")
    check_shortcut("--trials", "sweep.trials", trials, overrides)  # before the sweep.* texts leave `overrides`
    overrides, section = sweep_overrides(overrides, section)
    for key in section:
        if key not in SWEEP_DEFAULTS:
            raise ConfigError(f"sweep: {unknown_key(str(key), list(SWEEP_DEFAULTS), 'key')}")
    s = {**SWEEP_DEFAULTS, **{k: v for k, v in section.items() if v is not None}}  # null: the default
    # train.patience needs a validation split, which the sweep adds below: checked once it has one (it was refused)
    raw = apply_overrides(raw, overrides)
    patience = raw["train"].get("patience") if isinstance(raw.get("train"), dict) else None
    base = config_from_dict(raw, values=None if patience is None else {"train.patience": None})
    added = base.data.val_size == 0
    if added:
        subset = base.data.subset
        if subset is not None and subset <= DEFAULT_VAL_SIZE:  # the default would leave nothing to train on
            raise ConfigError(f"data.val_size: a sweep scores its trials on held-out training images and the "
                              f"config holds out none; the default, {DEFAULT_VAL_SIZE}, leaves none of data.subset "
                              f"{subset} to train on: set data.val_size (e.g. {max(1, subset // 5)})")
        base = with_values(base, {"data.val_size": DEFAULT_VAL_SIZE})
    if patience is not None:
        base = with_values(base, {"train.patience": patience})
    metric = check_choice("sweep.metric", s["metric"], tuple(METRICS))
    count = check_int("sweep.trials", s["trials"], 1)
    count = count if trials is None else check_int("--trials", trials, 1)
    sampler = check_choice("sweep.sampler", s["sampler"], SAMPLERS)
    seed = base.seed if s["seed"] is None else check_int("sweep.seed", s["seed"], 0)
    sampler_startup = check_int("sweep.sampler_startup_trials", s["sampler_startup_trials"], 0)
    pruner = check_choice("sweep.pruner", s["pruner"], PRUNERS)
    startup = check_int("sweep.pruner_startup_trials", s["pruner_startup_trials"], 0)
    from_epoch = check_int("sweep.pruner_from_epoch", s["pruner_from_epoch"], 1)
    space = s["space"]
    if not isinstance(space, dict) or not space:
        raise ConfigError("sweep.space: expected a mapping of dotted config keys to a range or a list of values, "
                          "e.g. {optimizer.lr: {low: 1.0e-4, high: 0.1, log: true}, train.batch_size: [64, 128]}")
    params = _check_space(tuple(_parse_param(key, value) for key, value in space.items()), base.to_dict())
    refuse_searched_sets(overrides, params)
    _check_some_point(params, base.to_dict())
    epochs = max((ends(p)[-1] if p.kind != "choice" else max(p.choices) for p in params if p.key == "train.epochs"),
                 default=base.train.epochs)
    if pruner != "none" and from_epoch > epochs:
        raise ConfigError(f"sweep.pruner_from_epoch: {from_epoch} is after the last epoch (train.epochs {epochs}): "
                          "no trial could ever be pruned; lower it, or set sweep.pruner: none")
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
    if spec.trials < spec.grid_size:  # it trained the first points in order and said nothing of the others
        raise ConfigError(f"sweep.trials: {spec.trials} trials are fewer than the grid's {spec.grid_size} points, "
                          f"and a grid trains every point once: set sweep.trials (or --trials) to {spec.grid_size}, "
                          "or list fewer values")
    base_raw = spec.base.to_dict()
    for point in itertools.product(*(p.choices for p in spec.params)):
        try:
            config_from_dict(base_raw, values={p.key: v for p, v in zip(spec.params, point)})
        except ConfigError as exc:
            shown = ", ".join(f"{p.key}={json.dumps(v)}" for p, v in zip(spec.params, point))
            raise ConfigError(f"sweep.space: the grid point {shown} is rejected: {exc}") from None


def load_sweep_file(path: str | Path, overrides: Overrides = (), trials: int | None = None) -> SweepSpec:
    return load_sweep(read_yaml(path), overrides, trials)


def trial_config(spec: SweepSpec, values: dict[str, Any], name: str, threads: int = 0) -> RunConfig:
    """The base config with one trial's values, its name (and `threads`, when > 0)."""
    return with_values(spec.base, {**values, "name": name, **({"train.threads": threads} if threads else {})})
