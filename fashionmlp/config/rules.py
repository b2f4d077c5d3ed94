"""Validation: every value passes through `coerce`, which knows the field's type and its allowed values; anything
wrong becomes a `ConfigError` whose message is one line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import itertools
import math
import re
import reprlib
import types
import typing
from typing import Any

from fashionmlp.config.schema import MODEL_DEFAULTS, RunConfig
from fashionmlp.errors import ConfigError


def show(value: Any) -> str:
    if isinstance(value, (datetime.date, datetime.datetime)):  # YAML reads 2026-01-01 as a date
        text = f"{value.isoformat()} (a date to YAML)"
    elif isinstance(value, (list, tuple, dict, set)):  # bounded: a 331-byte alias bomb under `name` made 6 GB of text
        text = _SHORT.repr(value)
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Short(reprlib.Repr):
    def repr_dict(self, x: dict, level: int) -> str:
        """In the order written: reprlib sorts a mapping's keys."""
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                  for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(pieces + (["..."] if len(x) > self.maxdict else [])) + "}"


_SHORT = _Short()  # (keyword arguments from Python 3.12 only)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 3, 8, 8, 8, 8
_SHORT.maxstring = _SHORT.maxother = 60


def float_problem(text: str, value: float) -> str | None:
    """Why the float that `text` spells cannot be used as written (it underflows to 0 or overflows), or None."""
    mantissa = text.strip().lower().lstrip("+-").split("e")[0]
    if value == 0.0 and any(c in "123456789" for c in mantissa):
        return "is too small for a 64-bit float (it reads as 0.0)"
    if math.isinf(value) and mantissa not in ("inf", "infinity", ".inf"):
        return "is too large for a 64-bit float (it reads as infinity)"
    return None


def check_name(name: str | None) -> None:
    """A run name becomes one folder name under the runs directory: never a path that leads elsewhere."""
    if name is None:
        return
    # a surrogate: bytes that are not UTF-8 on the command line ($'\xff'), or "\ud800" in YAML: TensorBoard and the
    # file system failed on it with a traceback, after the run folder was made
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF]
    long = len(name) > 100 or len(name.encode("utf-8", "surrogatepass")) > 200  # + a time stamp: < 255 bytes
    if not name.strip() or name in (".", "..") or bad or long:
        reason = ("holds bytes that are not UTF-8 text" if any(0xD800 <= ord(c) <= 0xDFFF for c in bad) else
                  "contains " + ", ".join(sorted({ascii(c) for c in bad})) if bad else
                  "is longer than 100 characters or 200 bytes" if long else "is not a folder name")
        raise ConfigError(f"name: {show(name)} {reason}; a run name is one folder name: no '/' or '\\', "
                          "not '.' or '..', at most 100 characters (200 bytes in UTF-8)")


def check_device(key: str, value: str) -> str:
    if value in ("auto", "cpu", "cuda"):
        return value
    index = value[5:] if value.startswith("cuda:") else ""
    if index.isascii() and index.isdigit() and (index == "0" or not index.startswith("0")):  # torch's own form
        return value
    raise ConfigError(f"{key}: {show(value)} is not a device; allowed: auto, cpu, cuda, cuda:N")


def check_range(key: str, value: float, rules: dict[str, Any]) -> None:
    bounds = [("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
              ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)]
    allowed = " and ".join(f"{sym} {rules[r]}" for r, sym, _ in bounds if r in rules)
    for rule, _, ok in bounds:
        if rule in rules and not ok(value, rules[rule]):
            raise ConfigError(f"{key}: {show(value)} is out of range; allowed: {allowed}")


def scalar(key: str, value: Any, kind: type, rules: dict[str, Any]) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {show(value)} is not a boolean; allowed: true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            quoted = isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value)
            whole = isinstance(value, float) and value.is_integer()  # 2.0: a float, though its value is whole
            if quoted and re.fullmatch(r"\s*-?0[0-9]+\s*", value):  # 08, 09: not octal, so YAML 1.1 keeps text
                raise ConfigError(f"{key}: {show(value)} is text to YAML 1.1 (a leading zero and an 8 or 9): write "
                                  f"{int(value)}")
            raise ConfigError(f"{key}: {show(value)} is " + ("text, not a whole number: write it without quotes"
                                                             if quoted else f"a decimal number: write {int(value)}"
                                                             if whole else "not a whole number" + _bool_hint(value)))
        check_range(key, value, rules)
        return value
    if kind is float:
        # YAML 1.1 reads `1e-3` as a string; accept numeric strings rather than punish the spelling.
        if isinstance(value, str):
            text = value
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{key}: {show(text)} is not a number") from None
            problem = float_problem(text, value)
            if problem:
                raise ConfigError(f"{key}: {show(text)} {problem}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: {show(value)} is not a number{_bool_hint(value)}")
        try:
            float(value)
        except OverflowError:  # a whole number with no float form: OverflowError's traceback
            raise ConfigError(f"{key}: {show(value)} is too large for a 64-bit float") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {show(value)} is not a finite number")
        check_range(key, float(value), rules)
        return float(value)
    if kind is str:
        if not isinstance(value, str):  # YAML read 123, yes, 1.5 or a date as one: quoted, it is text
            hint = (_bool_hint(value) + ": quote the word to make it text" if isinstance(value, bool) else
                    f'; quote it to make it text: "{value}" (with --set: {key}=\'"{value}"\')'
                    if isinstance(value, (int, float, datetime.date)) else "")
            raise ConfigError(f"{key}: {show(value)} is not a string{hint}")
        choices = rules.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: {show(value)} is not allowed; allowed: {', '.join(choices)}")
        return value
    raise TypeError(f"no validation for type {kind!r} of {key}")


def coerce(key: str, value: Any, annotation: Any, rules: dict[str, Any]) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(key, value, inner, rules)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key}: {show(value)} is not a non-empty list")
        return tuple(scalar(f"{key}[{i}]", v, args[0], rules) for i, v in enumerate(value))
    if value is None:
        raise ConfigError(f"{key}: a value is required (got nothing)")
    return scalar(key, value, annotation, rules)


def _bool_hint(value: Any) -> str:
    """Why `seed: yes` reads 'True' in a message."""
    return "; YAML reads yes, no, on and off as true and false" if isinstance(value, bool) else ""


def unknown_key(key: str, allowed: list[str], what: str = "config key", homes: list[str] | None = None) -> ConfigError:
    """'unknown config key 'optimizer.lrr' (did you mean 'lr'?); allowed: ...'; `homes`: where the key is one
    ('train.lr' was refused with no word of optimizer.lr)."""
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(allowed), n=1, cutoff=0.5)
    where = "elsewhere" if any("." not in home for home in homes or []) else "a key of another section"
    hint = (f" (it is {where}: {', '.join(homes)})" if homes else
            f" (did you mean {close[0]!r}?)" if close else "")
    return ConfigError(f"unknown {what} {key!r}{hint}; allowed: {', '.join(allowed)}")


def homes_of(leaf: Any, cls: Any = RunConfig, prefix: str = "") -> list[str]:
    """The dotted keys of the config whose last part is `leaf`: 'lr' -> ['optimizer.lr']."""
    found = []
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            found += homes_of(leaf, hint, f"{prefix}{name}.")
        elif name == leaf:
            found.append(f"{prefix}{name}")
    return found


ELSEWHERE = {"variants": "fashionmlp compare-optimizers --config", "sweep": "fashionmlp sweep --config"}


def for_another_command(section: str) -> ConfigError:
    """A config whose top-level `section` (ELSEWHERE) makes it another command's: said as one line."""
    return ConfigError(f"{section}: this section makes it a config for `{ELSEWHERE[section]}`, not for this command")


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Validate a mapping against a config dataclass and return the frozen instance."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in fields:
            if not prefix and key in ELSEWHERE:  # a study's or a sweep's config, given to train
                raise for_another_command(key)
            raise unknown_key(f"{prefix}{key}", list(fields), homes=homes_of(key))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, {} if value is None else value, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(f"{prefix}{key}", value, hint, dict(fields[key].metadata))
    return cls(**kwargs)


def check_whole(cfg: RunConfig) -> RunConfig:
    """Rules that involve more than one key; the chosen network's defaults where the config has none."""
    check_name(cfg.name)
    if cfg.model.hidden is None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **MODEL_DEFAULTS[cfg.model.name]))
    check_device("device", cfg.device)
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
    check_distill(cfg)
    if cfg.data.dir is not None and not cfg.data.dir.strip():  # was taken as unset, falling to $FASHIONMLP_DATA_DIR
        raise ConfigError("data.dir: '' is not a folder; give one (e.g. ../shared/data/fashion-mnist) or null for "
                          "--data-dir, then $FASHIONMLP_DATA_DIR, then ./data")
    return cfg


def check_distill(cfg: RunConfig) -> None:
    teacher, fingerprint = cfg.distill.teacher, cfg.distill.fingerprint
    if teacher is not None and not teacher.strip():
        raise ConfigError("distill.teacher: '' is not a run folder; give one (e.g. runs/cnn_tuned-20260101-120000) "
                          "or null for no distillation")
    if fingerprint is not None:
        if teacher is None:
            raise ConfigError("distill.fingerprint: set without distill.teacher; it pins a teacher's weights, so "
                              "name the teacher too (or set it to null)")
        if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise ConfigError(f"distill.fingerprint: {fingerprint!r} is not a SHA-256 (64 lowercase hex digits, "
                              "as a distilled run's config.yaml records it)")


def check_int(key: str, value: Any, minimum: int) -> int:
    """A whole number >= minimum, by the config's own rules (for sections validated outside the schema)."""
    return scalar(key, value, int, {"ge": minimum})


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    return scalar(key, value, str, {"choices": allowed})


def number(key: str, value: Any) -> int | float:
    """A finite number, kept an int when it is one (a range of a whole-number key stays whole)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return scalar(key, value, float, {})


def check_path(path: list[str], where: str) -> None:
    """The dotted key `path` must name a field of the schema, sections only before the last part; `where` is
    how the key was given (an option, a space entry), for the message."""
    cls: Any = RunConfig
    for depth, part in enumerate(path):
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{where}: {'.'.join(path[:depth])} is a value, not a section")
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            last = depth == len(path) - 1  # a leaf named elsewhere ('train.lr'), not a section on the way
            raise unknown_key(".".join(path[:depth + 1]), names, homes=homes_of(part) if last else None)
        cls = typing.get_type_hints(cls)[part]


def is_section(path: list[str]) -> bool:
    """Whether the (valid) dotted key names a section rather than a value."""
    cls: Any = RunConfig
    for part in path:
        cls = typing.get_type_hints(cls)[part]
    return dataclasses.is_dataclass(cls)


def unused_keys(cfg: RunConfig) -> list[str]:
    """Notes for values this run does not use (keys_not_used), set away from their defaults (optimizer.momentum
    0.9 with adam trained without a word, as if it mattered)."""
    notes = []
    for key, why in keys_not_used(cfg).items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value != getattr(type(getattr(cfg, section))(), name):
            notes.append(f"{key} {show(list(value) if isinstance(value, tuple) else value)} is not used: {why}")
    return notes


def keys_not_used(cfg: RunConfig) -> dict[str, str]:
    """The dotted keys this config's run does not read, whatever their values, each with why (a sweep that
    searches one of them trains its trials alike: sweep.space refuses it)."""
    o, unused = cfg.optimizer, {}
    if o.name in ("adam", "adamw"):
        unused["optimizer.momentum"] = f"{o.name} uses its betas, not a momentum"
    if o.name in ("sgd", "nesterov"):
        unused["optimizer.betas"] = f"{o.name} has no betas (adam and adamw use them)"
    if cfg.model.name == "mlp":
        unused["model.channels"] = "the MLP has no conv blocks"
    if cfg.data.loader != "torchvision":
        unused["data.num_workers"] = f"the {cfg.data.loader!r} loader has no worker processes"
    if cfg.distill.teacher is None:
        unused.update(dict.fromkeys(("distill.temperature", "distill.alpha", "distill.checkpoint"),
                                    "there is no distill.teacher"))
    return unused
