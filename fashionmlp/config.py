"""Typed, frozen run configuration: loaded from YAML once, validated once, never changed after.

Every value passes through `_coerce`, which knows the field's type and its allowed values; anything
wrong becomes a `ConfigError` whose message is one line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fashionmlp.errors import ConfigError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
MODELS = ("mlp", "cnn")
# Each network's own defaults, filled in where the config leaves them out (the study's networks).
MODEL_DEFAULTS: dict[str, dict[str, tuple[int, ...]]] = {
    "mlp": {"hidden": (100, 100)},  # 784-100-100-10
    "cnn": {"hidden": (128,)},  # conv 16, conv 32, then 1568-128-10
}
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
DECAY_PARAMS = ("all", "weights")
TTA = ("none", "flip")
LOADERS = ("fast", "torchvision")
PRECISIONS = ("fp32", "bf16")


def _spec(default: Any, **rules: Any) -> Any:
    """A dataclass field with validation rules (choices, ge, gt, lt, le) kept in its metadata."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass(frozen=True)
class DataConfig:
    dir: str | None = _spec(None)  # folder with the four .gz files (or torchvision's FashionMNIST/raw)
    verify_md5: bool = _spec(True)  # false accepts other IDX files (e.g. small synthetic ones)
    download: bool = _spec(True)  # try torchvision's mirrors when files are missing
    val_size: int = _spec(0, ge=0)  # images carved from the training set for validation
    subset: int | None = _spec(None, ge=1)  # use only the first N training images
    loader: str = _spec("fast", choices=LOADERS)  # fast: tensors in memory; torchvision: DataLoader
    num_workers: int = _spec(0, ge=0, le=256)  # DataLoader worker processes (torchvision loader only)
    shift: int = _spec(0, ge=0, le=27)  # augmentation: random translation by up to N pixels per image (0: off)
    flip: bool = _spec(False)  # augmentation: mirror each image left-right with probability 1/2


@dataclass(frozen=True)
class ModelConfig:
    name: str = _spec("mlp", choices=MODELS)
    hidden: tuple[int, ...] | None = _spec(None, ge=1)  # MLP hidden widths; CNN classifier widths (MODEL_DEFAULTS)
    activation: str = _spec("relu", choices=ACTIVATIONS)
    channels: tuple[int, ...] = _spec((16, 32), ge=1)  # CNN: output channels of the two conv blocks
    dropout: float = _spec(0.0, ge=0.0, lt=1.0)  # after each hidden activation (0: none)
    batchnorm: bool = _spec(False)  # BatchNorm before each hidden activation (the layer before it loses its bias)


@dataclass(frozen=True)
class OptimConfig:
    name: str = _spec("sgd", choices=OPTIMIZERS)
    lr: float = _spec(0.01, gt=0.0)
    momentum: float = _spec(0.0, ge=0.0, lt=1.0)  # sgd/nesterov only
    weight_decay: float = _spec(0.0, ge=0.0)
    betas: tuple[float, ...] = _spec((0.9, 0.999), ge=0.0, lt=1.0)  # adam/adamw only
    decay_params: str = _spec("all", choices=DECAY_PARAMS)  # weights: no decay on biases and BatchNorm
    schedule: str = _spec("constant", choices=SCHEDULES)  # lr set before every optimizer step (optim.lr_at)
    warmup: float = _spec(0.0, ge=0.0, lt=1.0)  # fraction of all steps spent ramping the lr up linearly to lr


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _spec(20, ge=1)
    batch_size: int = _spec(128, ge=1)
    eval_batch_size: int = _spec(2000, ge=1)  # evaluation has no backward pass: big batches are cheap
    threads: int = _spec(0, ge=0, le=1024)  # CPU intra-op threads; 0 = all cores this process may use
    channels_last: bool = _spec(True)  # CNN on CPU: faster (scripts/bench.py measures both layouts)
    precision: str = _spec("fp32", choices=PRECISIONS)  # bf16: autocast forward passes (faster where supported)
    label_smoothing: float = _spec(0.0, ge=0.0, lt=1.0)  # weight of the uniform target in the training loss
    ema: float = _spec(0.0, ge=0.0, lt=1.0)  # decay of an average of the weights, evaluated and saved (0: off)
    tta: str = _spec("none", choices=TTA)  # flip: evaluate on the mean softmax of each image and its mirror
    patience: int | None = _spec(None, ge=1)  # stop after N epochs without a better val accuracy (null: never)


@dataclass(frozen=True)
class RunConfig:
    name: str | None = _spec(None)  # run folder prefix (one folder name); default "<model>_<optimizer>"
    seed: int = _spec(0, ge=0, le=2**32 - 1)  # NumPy's seeds are 32-bit
    device: str = _spec("auto")  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.model.name}_{self.optimizer.name}"

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so the dict round-trips through YAML and weights_only checkpoints."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- validation


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def float_problem(text: str, value: float) -> str | None:
    """Why the float that `text` spells cannot be used as written (it underflows to 0 or overflows), or None."""
    mantissa = text.strip().lower().lstrip("+-").split("e")[0]
    if value == 0.0 and any(c in "123456789" for c in mantissa):
        return "is too small for a 64-bit float (it reads as 0.0)"
    if math.isinf(value) and mantissa not in ("inf", "infinity", ".inf"):
        return "is too large for a 64-bit float (it reads as infinity)"
    return None


def _check_name(name: str | None) -> None:
    """A run name becomes one folder name under the runs directory: never a path that leads elsewhere."""
    if name is None:
        return
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or c == "\x7f"]
    if not name.strip() or name in (".", "..") or bad or len(name) > 100:
        reason = ("contains " + ", ".join(sorted({repr(c) for c in bad})) if bad else
                  "is longer than 100 characters" if len(name) > 100 else "is not a folder name")
        raise ConfigError(f"name: {_show(name)} {reason}; a run name is one folder name: no '/' or '\\\\', "
                          "not '.' or '..', at most 100 characters")


def _check_device(key: str, value: str) -> str:
    if value in ("auto", "cpu", "cuda"):
        return value
    if value.startswith("cuda:") and value[5:].isdigit():
        return value
    raise ConfigError(f"{key}: {_show(value)} is not a device; allowed: auto, cpu, cuda, cuda:N")


def _check_range(key: str, value: float, rules: dict[str, Any]) -> None:
    bounds = [("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
              ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)]
    allowed = " and ".join(f"{sym} {rules[r]}" for r, sym, _ in bounds if r in rules)
    for rule, _, ok in bounds:
        if rule in rules and not ok(value, rules[rule]):
            raise ConfigError(f"{key}: {_show(value)} is out of range; allowed: {allowed}")


def _scalar(key: str, value: Any, kind: type, rules: dict[str, Any]) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {_show(value)} is not a boolean; allowed: true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {_show(value)} is not a whole number")
        _check_range(key, value, rules)
        return value
    if kind is float:
        # YAML 1.1 reads `1e-3` as a string; accept numeric strings rather than punish the spelling.
        if isinstance(value, str):
            text = value
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{key}: {_show(text)} is not a number") from None
            problem = float_problem(text, value)
            if problem:
                raise ConfigError(f"{key}: {_show(text)} {problem}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: {_show(value)} is not a number")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {_show(value)} is not a finite number")
        _check_range(key, float(value), rules)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {_show(value)} is not a string")
        choices = rules.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: {_show(value)} is not allowed; allowed: {', '.join(choices)}")
        return value
    raise TypeError(f"no validation for type {kind!r} of {key}")


def _coerce(key: str, value: Any, annotation: Any, rules: dict[str, Any]) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner, rules)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key}: {_show(value)} is not a non-empty list")
        return tuple(_scalar(f"{key}[{i}]", v, args[0], rules) for i, v in enumerate(value))
    if value is None:
        raise ConfigError(f"{key}: a value is required (got nothing)")
    return _scalar(key, value, annotation, rules)


def _unknown_key(key: str, allowed: list[str]) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, allowed, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Validate a mapping against a config dataclass and return the frozen instance."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in fields:
            raise _unknown_key(f"{prefix}{key}", list(fields))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, {} if value is None else value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(f"{prefix}{key}", value, hint, dict(fields[key].metadata))
    return cls(**kwargs)


def _check_whole(cfg: RunConfig) -> RunConfig:
    """Rules that involve more than one key; the chosen network's defaults where the config has none."""
    _check_name(cfg.name)
    if cfg.model.hidden is None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **MODEL_DEFAULTS[cfg.model.name]))
    _check_device("device", cfg.device)
    if cfg.optimizer.name == "nesterov" and cfg.optimizer.momentum <= 0:
        raise ConfigError(
            f"optimizer.momentum: {cfg.optimizer.momentum} with optimizer.name 'nesterov'; "
            "allowed: > 0 and < 1 (Nesterov needs momentum, e.g. 0.9)")
    if cfg.model.name == "cnn" and len(cfg.model.channels) != 2:
        raise ConfigError(f"model.channels: {list(cfg.model.channels)} must list two widths (one per conv block)")
    if cfg.train.patience is not None and not cfg.data.val_size:
        raise ConfigError(f"train.patience: {cfg.train.patience} watches the validation accuracy, and there is no "
                          "validation split; set data.val_size too (e.g. 5000), or train.patience: null")
    if cfg.model.batchnorm and cfg.train.batch_size < 2:
        raise ConfigError("train.batch_size: 1 with model.batchnorm: true; BatchNorm cannot normalize a batch of "
                          "one image: allowed: batch_size >= 2, or model.batchnorm: false")
    if len(cfg.optimizer.betas) != 2:
        raise ConfigError(f"optimizer.betas: {list(cfg.optimizer.betas)} must be two numbers, e.g. [0.9, 0.999]")
    return cfg


# ---------------------------------------------------------------- loading


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain data only) that refuses a key given twice in one mapping, and a float literal
    that underflows to 0 or overflows to infinity, instead of silently keeping a value the user did not write."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {seen[key]}, again at line {line}); "
                        "give each key once", key_node.start_mark)
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                break
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        problem = float_problem(str(node.value).replace("_", ""), value)
        if problem:
            raise yaml.constructor.ConstructorError(None, None, f"{node.value} {problem}", node.start_mark)
        return value


StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)


def safe_load(text: str) -> Any:
    """yaml.safe_load with StrictLoader's checks."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optimizer.lr=0.1` -> (["optimizer", "lr"], 0.1); the value is read as YAML (numbers, lists, bools)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.1")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.1")
    try:
        value = safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text  # not YAML: keep the text; validation will judge it
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `raw` with each dotted override applied (validated later, with the rest)."""
    result = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        _check_path(text, path)
        node = result
        for depth, part in enumerate(path[:-1]):
            sub = node.get(part)
            if sub is None:
                sub = node[part] = {}
            if not isinstance(sub, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(path[:depth + 1])} is not a section")
            node = sub
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
            node[path[-1]] = _merged(node[path[-1]], value)  # a mapping edits the section; it never resets it
        else:
            node[path[-1]] = value
    return result


def _merged(base: dict, update: dict) -> dict:
    """`base` with `update`'s keys set, recursively into sub-mappings."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_path(text: str, path: list[str]) -> None:
    """The dotted key must name a field of the schema: sections only before the last part."""
    cls: Any = RunConfig
    for depth, part in enumerate(path):
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"--set {text!r}: {'.'.join(path[:depth])} is a value, not a section")
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise _unknown_key(".".join(path[:depth + 1]), names)
        cls = typing.get_type_hints(cls)[part]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load`; every problem becomes a one-line ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.__class__.__name__}") from None
    try:
        raw = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if "duplicate key" in problem or "64-bit float" in problem:
            raise ConfigError(f"config file {str(path)!r}{where}: {problem}") from None
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {problem}") from None
    if raw is None:
        raise ConfigError(f"config file {str(path)!r} is empty; it must be a mapping such as 'model: {{name: mlp}}'")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of keys to values, got {type(raw).__name__}")
    return raw


def config_from_dict(raw: Any, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Validate a plain dict (plus dotted overrides) into a frozen RunConfig."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of keys to values, got {_show(raw)}")
    return _check_whole(_build(RunConfig, apply_overrides(raw, overrides), ""))


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load, override and validate a config file (or the defaults when `path` is None)."""
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(raw, overrides)


def shortcut_overrides(*, epochs: int | None = None, device: str | None = None, seed: int | None = None,
                       name: str | None = None) -> list[str]:
    """The command-line shortcuts (--epochs, --device, --seed, --name) as dotted overrides."""
    overrides = [f"{key}={value}" for key, value in
                 (("train.epochs", epochs), ("device", device), ("seed", seed)) if value is not None]
    if name is not None:
        overrides.append(f"name={json.dumps(name)}")  # a JSON string is a YAML string: keeps "1" or "true" text
    return overrides
