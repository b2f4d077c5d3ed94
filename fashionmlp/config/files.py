"""Configs from YAML files and the command line, and configs derived from configs with typed values.

Text is parsed only here, at the edge: a YAML file (`read_yaml`) and `--set KEY=VALUE` (`parse_override`).
Inside the package a config is derived from another with typed values (`with_values`), checked by the same
rules as a loaded file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fashionmlp.config.rules import build, check_path, check_whole, float_problem, is_section, show
from fashionmlp.config.schema import RunConfig
from fashionmlp.errors import ConfigError

Overrides = list[str] | tuple[str, ...]  # --set KEY=VALUE texts, as typed on the command line
Values = Mapping[str, Any]  # dotted key -> typed value, e.g. {"optimizer.lr": 0.1, "seed": 3}


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain data only) that refuses a key given twice in one mapping, and a float literal
    that underflows to 0 or overflows to infinity, instead of silently keeping a value the user did not write."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden here,
                key = "<<"  # but a second `<<` silently replaced the first
            else:
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
        if ":" in str(node.value):  # 1:30.5, YAML 1.1's base 60
            raise ReadAsAnother(node.value, value, node.start_mark)
        problem = float_problem(str(node.value).replace("_", ""), value)
        if problem:
            raise yaml.constructor.ConstructorError(None, None, f"{node.value} {problem}", node.start_mark)
        return value

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = super().construct_yaml_int(node)
        digits = str(node.value).replace("_", "").lstrip("+-")
        if ":" in digits or (digits[:1] == "0" and digits.isdigit() and int(digits, 10) != abs(value)):
            raise ReadAsAnother(node.value, value, node.start_mark)
        return value


class ReadAsAnother(yaml.constructor.ConstructorError):
    """A YAML 1.1 number that reads as another than most people mean: 010 is octal (8), 1:30 base 60 (90)."""

    def __init__(self, text: str, value: float, mark: yaml.Mark | None = None):
        if ":" in text:
            kind, meant = "base 60", "the number you mean"
        else:  # -010: -8, or -10 without the leading zeros
            digits = text.replace("_", "")
            sign = digits[0] if digits[0] in "+-" else ""
            kind, meant = "octal", sign + digits.lstrip("+-").lstrip("0")
        self.short = (f"{text} is {kind} in YAML 1.1 and reads as {value:g}: write {value:g}, or {meant} "
                      f"(quoted, '{text}', where text is meant)")
        super().__init__(None, None, self.short, mark)


StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)
StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def safe_load(text: str) -> Any:
    """yaml.safe_load with StrictLoader's checks; a document nested too deeply for Python's recursion, or an
    integer longer than Python converts (4300 digits), is a YAMLError like any other invalid document."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except RecursionError:
        raise yaml.constructor.ConstructorError(None, None, "nested too deeply") from None
    except ValueError as exc:  # int('1' * 5000): "Exceeds the limit (4300 digits)..."; a date 2024-13-45
        problem = "a number of more than 4300 digits" if "Exceeds the limit" in str(exc) else str(exc)
        raise yaml.constructor.ConstructorError(None, None, problem) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optimizer.lr=0.1` -> (["optimizer", "lr"], 0.1); the value is read as YAML (numbers, lists, bools)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.1")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.1")
    if not value_text.strip():  # e.g. distill.teacher=$TEACHER with the variable unset: not a silent null
        none = "its default" if key.startswith("sweep.") else "none"  # a sweep key's null is its default
        raise ConfigError(f"--set {text!r}: no value after '='; give one, or {key}=null for {none}")
    try:
        value = safe_load(value_text)
    except ReadAsAnother as exc:
        raise ConfigError(f"--set {text!r}: {exc.short}") from None
    except yaml.YAMLError as exc:
        if value_text.lstrip().startswith(("[", "{")):  # meant as a list or mapping: "is not a list" hid why
            why = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
            raise ConfigError(f"--set {text!r}: the value cannot be read: {why}") from None
        value = value_text  # not YAML: keep the text; validation will judge it
    return key.split("."), value


def set_value(raw: dict[str, Any], path: list[str], value: Any, where: str) -> None:
    """Set `value` at the dotted `path` of the plain config dict `raw` (in place); a mapping edits the section
    it is set on, it never resets it. `where` names the key's origin in messages."""
    check_path(path, where)
    if value is None and is_section(path):  # would reset every key of it to its default, without a word
        key = ".".join(path)
        raise ConfigError(f"{where}: {key} is a section, and null would set each of its keys to its default; "
                          f"set the keys themselves (e.g. {key}.KEY=VALUE)")
    node = raw
    for depth, part in enumerate(path[:-1]):
        sub = node.get(part)
        if sub is None:
            sub = node[part] = {}
        if not isinstance(sub, dict):
            raise ConfigError(f"{where}: {'.'.join(path[:depth + 1])} is not a section")
        node = sub
    if isinstance(value, Mapping) and isinstance(node.get(path[-1]), dict):
        node[path[-1]] = _merged(node[path[-1]], dict(value))
    else:
        node[path[-1]] = value


def _merged(base: dict, update: dict) -> dict:
    """`base` with `update`'s keys set, recursively into sub-mappings."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_overrides(raw: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """Return a copy of `raw` with each `--set` text applied (validated later, with the rest)."""
    result = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        set_value(result, path, value, f"--set {text!r}")
    return result


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
        if "duplicate key" in problem or "64-bit float" in problem or isinstance(exc, ReadAsAnother):
            raise ConfigError(f"config file {str(path)!r}{where}: {problem}") from None
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {problem}") from None
    if raw is None:
        raise ConfigError(f"config file {str(path)!r} is empty; it must be a mapping such as 'model: {{name: mlp}}'")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of keys to values, got {type(raw).__name__}")
    return raw


def config_from_dict(raw: Any, overrides: Overrides = (), values: Values | None = None) -> RunConfig:
    """Validate a plain dict, with `--set` texts and then typed `values` applied, into a frozen RunConfig."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of keys to values, got {show(raw)}")
    edited = apply_overrides(raw, overrides)
    for key, value in (values or {}).items():
        check_shortcut(SHORTCUTS.get(key, key), key, value, overrides)
        set_value(edited, key.split("."), value, key)
    return check_whole(build(RunConfig, edited, ""))


SHORTCUTS = {"train.epochs": "--epochs", "device": "--device", "seed": "--seed", "name": "--name"}


NOT_SET = object()  # what value_set gives for a --set that does not set the key


def value_set(text: str, key: str) -> Any:
    """The value the `--set` text gives `key`: as the key itself, or inside a section above it set as a mapping
    (`train={epochs: 2}`); NOT_SET where it does not set it."""
    path, set_to = parse_override(text)
    parts = key.split(".")
    if path != parts[:len(path)]:
        return NOT_SET
    for part in parts[len(path):]:
        set_to = set_to.get(part, NOT_SET) if isinstance(set_to, Mapping) else NOT_SET
    return set_to


def check_shortcut(flag: str, key: str, value: Any, overrides: Overrides) -> None:
    """A shortcut (`--epochs 1`, `--trials 4`) and a --set of its key to another value (`train.epochs=2`, also as
    `train={epochs: 2}`): the shortcut won, without a word. Types count (True == 1 in Python). `value` None: no
    shortcut was given."""
    if value is None:
        return
    given = None
    for text in overrides:
        set_to = value_set(text, key)
        given = given if set_to is NOT_SET else set_to  # the last --set of the key counts (null too)
    if given is not None and (type(given), given) != (type(value), value):
        shown = str(given).lower() if isinstance(given, bool) else given  # as YAML spells it
        raise ConfigError(f"{flag} {value} and --set {key}={shown} set {key} to two values; give one of them")


def load_config(path: str | Path | None, overrides: Overrides = (), values: Values | None = None) -> RunConfig:
    """Load a config file (or the defaults when `path` is None), apply `--set` texts and typed values, validate."""
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(raw, overrides, values)


def with_values(cfg: RunConfig, values: Values) -> RunConfig:
    """`cfg` with typed values at dotted keys, e.g. with_values(cfg, {"optimizer.lr": 0.1, "seed": 3}); the
    result is checked by the same rules as a loaded file (a bad value is a ConfigError naming its key)."""
    return config_from_dict(cfg.to_dict(), values=values)


def whole_training_set(cfg: RunConfig) -> RunConfig:
    """`cfg` without its validation split: what loads the whole training set for a population (each member
    holds its own seed's split out of it) or a sweep's populations. Early stopping goes with the split (it
    watches it; the members keep their own train.patience)."""
    return with_values(cfg, {"data.val_size": 0, "train.patience": None})


def shortcut_values(*, epochs: int | None = None, device: str | None = None, seed: int | None = None,
                    name: str | None = None) -> dict[str, Any]:
    """The command-line shortcuts (--epochs, --device, --seed, --name) that were given, as typed values."""
    given = {"train.epochs": epochs, "device": device, "seed": seed, "name": name}
    return {key: value for key, value in given.items() if value is not None}
