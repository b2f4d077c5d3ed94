"""A study's configuration: one network trained in several variants (the optimizer study: one variant per
optimizer section) or one config trained with several seeds (`train --seeds`).

A study config is a training config plus `variants`, a mapping of name -> optimizer section:

    model: {name: mlp}
    variants:
      sgd: {name: sgd, lr: 0.01}
      adam_lr1: {name: adam, lr: 1.0}
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashionmlp.config import (
    Overrides,
    RunConfig,
    Values,
    config_from_dict,
    parse_override,
    read_yaml,
    set_value,
)
from fashionmlp.config.rules import check_name, for_another_command, homes_of, show, unknown_key
from fashionmlp.config.schema import OptimConfig
from fashionmlp.errors import ConfigError, UserError

# The study this tool exists for; configs/compare_<model>.yaml spell out the same thing.
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.01},
    "nesterov": {"name": "nesterov", "lr": 0.01, "momentum": 0.9},
    "adam": {"name": "adam", "lr": 0.01},
    "adam_lr1": {"name": "adam", "lr": 1.0},
}


CHANCE = 0.10  # 10 balanced classes


FAILED_MARGIN = 0.02  # final accuracy within 2 points of chance: "failed to learn"


@dataclass(frozen=True)
class Study:
    base: RunConfig
    variants: dict[str, RunConfig]  # name -> the base with that variant's optimizer section
    kind: str = "compare"  # compare: the optimizer study; seeds: one config with several seeds (train --seeds)

    @property
    def prefix(self) -> str:
        """The study folder's name before its time stamp."""
        return f"compare-{self.base.model.name}" if self.kind == "compare" else f"{self.base.run_name}-seeds"

    def folder(self, name: str, seed: int, seeds: list[int]) -> str:
        """A member's run folder inside the study folder."""
        if self.kind == "seeds":
            return f"seed{seed}"
        return name if len(seeds) == 1 else f"{name}-seed{seed}"

    def label(self, name: str, seed: int, seeds: list[int]) -> str:
        """How progress names a member."""
        if self.kind == "seeds":
            return f"seed {seed} "
        return f"{name} " + (f"seed {seed} " if len(seeds) > 1 else "")

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to continue the study (study.yaml)."""
        return {"kind": self.kind, "base": self.base.to_dict(),
                "variants": {name: cfg.to_dict() for name, cfg in self.variants.items()}}


def study_from_dict(raw: dict[str, Any]) -> Study:
    """The study a study.yaml describes. Its variants' names become folder names in the study folder: each must
    be one folder name, as a run's `name` (a study folder may come from someone else)."""
    try:
        study = Study(config_from_dict(raw["base"]),
                      {name: config_from_dict(cfg) for name, cfg in raw["variants"].items()}, raw["kind"])
    except (KeyError, TypeError, AttributeError):
        raise ConfigError("study.yaml: not a study this fashionmlp wrote (it needs kind, base and variants)") from None
    for name in study.variants:
        check_variant_name(name, "study.yaml: variant", new=False)
    return study


def check_variant_name(name: Any, where: str, new: bool = True) -> None:
    """A variant's name names its run folders (one folder name, as a run's `name`), and a new study's is
    addressed as --set variants.<name>.lr=... (no '.'; a study folder made before this rule keeps its names)."""
    if name is None:
        raise ConfigError(f"{where} name null is not one; a variant's name is text (it names its run folders)")
    if not isinstance(name, str):  # YAML read yes: as True, 123: as a number
        raise ConfigError(f"{where} name {show(name)} is not text (YAML reads yes, no, on, off and numbers so); "
                          "quote the name as you wrote it, e.g. \"yes\":")
    bad = [c for c in ".=," if c in name]
    if new and bad:  # --set variants.k=v.lr=... found no variant 'k'; --optimizers a,b splits at the comma
        raise ConfigError(f"{where} name {show(name)} holds {bad[0]!r}; a variant's name is text without '.', '=' "
                          "or ',' (it names its run folders, --set variants.<name>.lr=... edits it and "
                          "--optimizers a,b picks it)")
    try:
        check_name(name)
    except ConfigError as exc:
        raise ConfigError(f"{where} {exc.args[0].removeprefix('name: ')}") from None


def seeds_study(cfg: RunConfig) -> Study:
    """`train --seeds`: one config, trained with each seed."""
    return Study(cfg, {cfg.run_name: cfg}, "seeds")


def default_study_dict(model: str) -> dict[str, Any]:
    return {"name": f"compare_{model}", "model": {"name": model},
            "variants": copy.deepcopy(DEFAULT_VARIANTS)}


def _chosen(only: list[str] | None, names: list[str]) -> list[str]:
    """The variants --optimizers picks (all without it); an unknown name is a ConfigError."""
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise ConfigError(f"--optimizers: unknown variant {unknown[0]!r}; variants: {', '.join(names)}")
    return only or names


def _refuse_a_whole_section(text: str, key: str, variant: str) -> None:
    """A --set of the base's optimizer (each variant's section replaces it) or of `variants` itself (it was
    "unknown config key 'variants'", the study config's own key): refused, saying how to edit a variant."""
    if key == "optimizer" or key.startswith("optimizer."):
        raise ConfigError(f"--set {text!r}: a study's optimizers are its variants, each with its own optimizer "
                          f"section; set it per variant, e.g. --set variants.{variant}.{key.partition('.')[2] or 'lr'}"
                          "=...")
    if key == "variants":
        raise ConfigError(f"--set {text!r}: the variants are the study config's; edit one's keys, e.g. --set "
                          f"variants.{variant}.lr=0.1 (--optimizers picks among them)")


def load_study(raw: dict[str, Any], overrides: Overrides = (), only: list[str] | None = None,
               values: Values | None = None) -> Study:
    """Validate a study dict: `variants.<name>.<key>=v` overrides edit a variant, the rest edit the base, as do
    the typed `values` (e.g. the --epochs and --device shortcuts)."""
    raw = copy.deepcopy(raw)
    variants_raw = raw.pop("variants", None)
    if variants_raw is None and "sweep" in raw:  # as train says it of a study's or a sweep's config
        raise for_another_command("sweep")
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise ConfigError("variants: a study needs a mapping of variant name -> optimizer section, "
                          "e.g. variants: {sgd: {name: sgd, lr: 0.01}}")
    for name in variants_raw:
        check_variant_name(name, "variants: the variant")
    _refuse_a_lost_optimizer_key(raw.get("optimizer"), variants_raw)
    base_overrides = []
    for text in overrides:
        key = text.partition("=")[0].strip()
        _refuse_a_whole_section(text, key, (only or list(variants_raw))[0])
        if not key.startswith("variants."):
            base_overrides.append(text)
            continue
        path, value = parse_override(text)
        name = path[1] if len(path) > 1 else ""
        if name not in variants_raw:
            raise ConfigError(f"--set {text!r}: no variant {name!r}; variants: {', '.join(variants_raw)}")
        if only and name not in only:  # it was neither checked nor used, in silence
            raise ConfigError(f"--set {text!r}: variant {name!r} is not among --optimizers {','.join(only)}, so "
                              "the edit would not be used; add it there or leave the --set out")
        if len(path) == 2 and isinstance(value, dict):  # a mapping edits the variant's section, as in train
            edits = list(value.items())
        elif len(path) < 3:
            raise ConfigError(f"--set {text!r}: expected variants.<name>.<optimizer key>=VALUE, or "
                              "variants.<name>={<optimizer key>: VALUE, ...}")
        else:
            edits = [(path[2], value)]
        try:
            _check_variant_keys(name, [key for key, _ in edits])
        except ConfigError as exc:
            raise ConfigError(f"--set {text!r}: {exc}") from None
        section = {"optimizer": copy.deepcopy(variants_raw[name] or {})}
        for key, val in edits:
            set_value(section, ["optimizer", key, *path[3:]], val, f"--set {text!r}")
        variants_raw[name] = section["optimizer"]
    base = config_from_dict(raw, base_overrides, values)
    variants = {}
    for name in _chosen(only, list(variants_raw)):
        section = variants_raw[name]
        if not isinstance(section, dict):
            raise ConfigError(f"variants.{name}: expected an optimizer section such as {{name: adam, lr: 0.01}}")
        _check_variant_keys(name, list(section))
        try:
            variants[name] = config_from_dict({**base.to_dict(), "optimizer": section, "name": name})
        except ConfigError as exc:
            raise ConfigError(f"variants.{name}: {exc}") from None
    return Study(base, variants)


def _refuse_a_lost_optimizer_key(section: Any, variants_raw: dict) -> None:
    """Each variant's section replaces the study config's own `optimizer:` (a training config with variants added):
    a key there that is not its default and that a variant does not set would be lost (a schedule, warm-up or
    weight decay written there was checked and dropped: every variant ran without it)."""
    if not isinstance(section, dict):
        return
    defaults = {f.name: f.default for f in dataclasses.fields(OptimConfig)}
    for key, value in section.items():
        default = defaults.get(key, object())
        same = list(value) == list(default) if isinstance(value, (list, tuple)) and isinstance(default, tuple) else (
            value == default)
        without = [name for name, v in variants_raw.items() if not isinstance(v, dict) or key not in v]
        if not same and without:
            raise ConfigError(f"optimizer.{key}: {show(value)} would be ignored: a study's optimizers are its "
                              f"variants, each with its own optimizer section, and variant {without[0]!r} does not "
                              f"set {key}; write it into every variant, e.g. variants.{without[0]}: "
                              f"{{..., {key}: {show(value)}}}")


def _check_variant_keys(name: str, keys: list) -> None:
    """A variant's keys are optimizer keys, named as typed (checked as optimizer.<key>, the message named
    'optimizer.lrr', a key nobody wrote)."""
    allowed = [f.name for f in dataclasses.fields(OptimConfig)]
    for key in keys:
        if key not in allowed:
            raise unknown_key(f"variants.{name}.{key}", allowed, "optimizer key", homes=homes_of(key))


def study_from_options(model: str | None, config: Path | None, overrides: Overrides, only: list[str] | None,
                       values: Values | None = None) -> Study:
    if config is not None:
        raw = read_yaml(config)
        if model is not None:
            section = raw.get("model")
            if section is None:
                section = raw["model"] = {}
            if not isinstance(section, dict):
                raise ConfigError(f"model: expected a mapping of keys to values, got {show(section)}")
            if section.get("name", model) != model:
                raise UserError(f"--model {model} contradicts model.name {show(section['name'])} in {config}")
            section["name"] = model
    else:
        raw = default_study_dict(model or "mlp")
    study = load_study(raw, overrides, only, values)
    if model is not None and study.base.model.name != model:  # the CNN study's settings trained an MLP, silently
        raise UserError(f"--model {model} contradicts --set model.name={study.base.model.name}")
    return study
