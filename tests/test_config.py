import dataclasses
from pathlib import Path

import pytest
import yaml

from fashionmlp.config import RunConfig, config_from_dict, load_config, parse_override
from fashionmlp.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_the_documented_ones():
    cfg = load_config(None)
    assert (cfg.model.name, cfg.model.hidden, cfg.model.activation) == ("mlp", (100, 100), "relu")
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.seed, cfg.device) == (128, 20, 0, "auto")
    assert cfg.data.loader == "fast" and cfg.data.val_size == 0


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.name.startswith(("compare_", "manual_", "sweep_"))],
                         ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    model, optim = path.stem.split("_", 1)
    assert cfg.model.name == model
    expected = {"sgd": ("sgd", 0.01), "nesterov": ("nesterov", 0.01), "adam": ("adam", 0.01),
                "adam_lr1": ("adam", 1.0), "tuned": ("nesterov", 0.1), "distilled": ("nesterov", 0.1)}[optim]
    assert (cfg.optimizer.name, cfg.optimizer.lr) == expected
    if optim in ("nesterov", "tuned", "distilled"):
        assert cfg.optimizer.momentum == 0.9
    assert (cfg.distill.teacher is not None) == (optim == "distilled")
    faithful = optim not in ("tuned", "distilled")  # the faithful configs leave every ingredient of the recipe off
    recipe = (cfg.model.batchnorm, cfg.optimizer.schedule, cfg.train.label_smoothing, cfg.data.shift, cfg.data.flip,
              cfg.train.ema, cfg.train.tta, cfg.train.patience, cfg.optimizer.warmup, cfg.optimizer.decay_params)
    assert (recipe == (False, "constant", 0.0, 0, False, 0.0, "none", None, 0.0, "all")) == faithful


def test_config_is_frozen_and_round_trips():
    cfg = load_config(None, ["optimizer.lr=0.1", "model.hidden=[10, 20, 30]"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg and again.model.hidden == (10, 20, 30)


def test_overrides_parse_yaml_values():
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("model.hidden=[5, 6]") == (["model", "hidden"], [5, 6])
    assert parse_override("data.verify_md5=false") == (["data", "verify_md5"], False)
    assert load_config(None, ["optimizer.lr=1e-3"]).optimizer.lr == 0.001  # YAML 1.1 reads 1e-3 as text


def test_each_model_has_its_own_defaults():
    assert load_config(None).model.hidden == (100, 100)
    assert load_config(None, ["model.name=cnn"]).model.hidden == (128,)
    assert load_config(None, ["model.name=cnn", "model.hidden=[64]"]).model.hidden == (64,)
    assert config_from_dict({"model": {"name": "cnn", "hidden": None}}).model.hidden == (128,)


BAD = [
    ({"optimizer": {"lr": 0}}, "optimizer.lr: 0.0 is out of range; allowed: > 0.0"),
    ({"optimizer": {"lr": -0.5}}, "optimizer.lr: -0.5 is out of range"),
    ({"optimizer": {"lr": float("inf")}}, "optimizer.lr: inf is not a finite number"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr: 'fast' is not a number"),
    ({"optimizer": {"momentum": 1.0}}, "optimizer.momentum: 1.0 is out of range; allowed: >= 0.0 and < 1.0"),
    ({"optimizer": {"name": "nesterov", "momentum": 0}}, "Nesterov needs momentum"),
    ({"optimizer": {"name": "rmsprop"}}, "optimizer.name: 'rmsprop' is not allowed; allowed: sgd, nesterov, adam"),
    ({"train": {"batch_size": 0}}, "train.batch_size: 0 is out of range; allowed: >= 1"),
    ({"train": {"epochs": 0}}, "train.epochs: 0 is out of range; allowed: >= 1"),
    ({"train": {"epochs": 2.5}}, "train.epochs: 2.5 is not a whole number"),
    ({"train": {"epochs": True}}, "train.epochs: True is not a whole number; YAML reads yes, no, on and off as"),
    ({"optimizer": {"lr": False}}, "optimizer.lr: False is not a number; YAML reads yes, no, on and off as true"),
    ({"lr": 0.1}, "unknown config key 'lr' (it is a key of another section: optimizer.lr); allowed: name, seed"),
    ({"train": {"lr": 0.1}}, "unknown config key 'train.lr' (it is a key of another section: optimizer.lr)"),
    ({"model": {"name": "resnet"}}, "model.name: 'resnet' is not allowed; allowed: mlp, cnn"),
    ({"model": {"hidden": "100"}}, "model.hidden: '100' is not a non-empty list"),
    ({"model": {"hidden": [100, 0]}}, "model.hidden[1]: 0 is out of range"),
    ({"model": 5}, "model: expected a mapping"),
    ({"device": "tpu"}, "device: 'tpu' is not a device; allowed: auto, cpu, cuda, cuda:N"),
    ({"device": "cuda:x"}, "device: 'cuda:x' is not a device"),
    ({"optimizr": {}}, "unknown config key 'optimizr' (did you mean 'optimizer'?)"),
    ({"optimizer": {"learning_rate": 0.1}}, "unknown config key 'optimizer.learning_rate'"),
    ({"data": {"verify_md5": "yes please"}}, "data.verify_md5: 'yes please' is not a boolean"),
    ({"seed": -1}, "seed: -1 is out of range; allowed: >= 0"),
    ({"data": {"dir": " "}}, "data.dir: '' is not a folder; give one"),  # was taken as unset, silently
    # YAML's readings of unquoted text, said as such (they were "123 is not a string", "datetime.date(...)")
    ({"name": 123}, 'name: 123 is not a string; quote it to make it text: "123" (with --set: name=\'"123"\')'),
    ({"name": True}, "name: True is not a string; YAML reads yes, no, on and off as true and false"),
    ({"seed": __import__("datetime").date(2026, 1, 1)}, "seed: 2026-01-01 (a date to YAML) is not a whole number"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_values_give_one_line(raw, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    text = str(info.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize("override,message", [
    ("optimizer.lr", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE with a dotted key"),
    ("optimizer.lrr=0.1", "unknown config key 'optimizer.lrr' (did you mean 'lr'?)"),
    ("model.epochs=3", "unknown config key 'model.epochs' (it is a key of another section: train.epochs)"),
    ("train.epochs=-2", "train.epochs: -2 is out of range"),
    ("seed.x=1", "--set 'seed.x=1': seed is a value, not a section"),
    # a section set to null went back to every key's default (optimizer=null trained plain SGD), without a word
    ("optimizer=null", "--set 'optimizer=null': optimizer is a section, and null would set each of its keys"),
    ("model=null", "--set 'model=null': model is a section"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [override])
    assert message in str(info.value)


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("- a\n- b\n", "must be a mapping of keys to values, got list"),
    ("model: [unclosed\n", "is not valid YAML at line"),
    ("just a string", "must be a mapping"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_type_is_runconfig():
    assert isinstance(load_config(None), RunConfig)


def test_a_quoted_whole_number_says_to_drop_the_quotes(tmp_path):
    """A float key takes "0.01" (YAML 1.1 reads 1e-3 as text); a whole-number key refuses "2", saying why."""
    from fashionmlp.config import config_from_dict

    with pytest.raises(ConfigError, match=r"train.epochs: '2' is text, not a whole number: write it without quotes"):
        config_from_dict({"train": {"epochs": "2"}})
    with pytest.raises(ConfigError, match=r"train.epochs: 'two' is not a whole number$"):
        config_from_dict({"train": {"epochs": "two"}})


def test_yaml_merge_keys_work_and_an_explicit_key_overrides_the_merged_one(tmp_path):
    """`<<: *defaults` is valid YAML that yaml.safe_load reads; the duplicate-key check refused it as invalid."""
    from fashionmlp.config.files import read_yaml

    path = tmp_path / "m.yaml"
    path.write_text("common: &c {name: mlp, hidden: [5]}\nmodel:\n  <<: *c\n  hidden: [7]\n")
    assert read_yaml(path)["model"] == {"name": "mlp", "hidden": [7]}
    path.write_text("model:\n  <<: {name: mlp}\n  hidden: [7]\n  hidden: [8]\n")
    with pytest.raises(ConfigError, match="duplicate key 'hidden'"):
        read_yaml(path)
    path.write_text("optimizer:\n  <<: {lr: 0.1}\n  <<: {lr: 0.3}\n")  # the last one won, silently
    with pytest.raises(ConfigError, match=r"duplicate key '<<' \(first at line 2, again at line 3\)"):
        read_yaml(path)


@pytest.mark.parametrize(("text", "message"), [
    ("010", "010 is octal in YAML 1.1 and reads as 8: write 8, or 10"),
    ("-0_10", "-0_10 is octal in YAML 1.1 and reads as -8: write -8, or -10"),
    ("1:30", "1:30 is base 60 in YAML 1.1 and reads as 90: write 90, or the number you mean"),
    ("1:2.5", "1:2.5 is base 60 in YAML 1.1 and reads as 62.5"),
])
def test_a_number_yaml_reads_as_another_is_refused_in_files_and_overrides(tmp_path, text, message):
    """`--set seed=010` trained seed 8, `seed: 1:30` seed 90 and `--set optimizer.lr=1:2` lr 62, silently."""
    key = "optimizer.lr" if "." in text else "seed"
    with pytest.raises(ConfigError, match=rf"^--set '{key}={text}': {message}"):
        parse_override(f"{key}={text}")
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{name: mlp}}\nseed: {text}\n")
    with pytest.raises(ConfigError, match=rf"c.yaml' at line 2, column 7: {message}"):
        load_config(path)


@pytest.mark.parametrize(("text", "value"), [("07", 7), ("00", 0), ("0", 0), ("0x10", 16), ("1_000", 1000),
                                             ("0b11", 3), ("010.5", 10.5), ("-7", -7)])
def test_numbers_that_read_as_written_still_work(text, value):
    assert parse_override(f"seed={text}") == (["seed"], value)


def test_a_leading_zero_with_an_8_or_9_is_named_not_blamed_on_quotes():
    """`--set seed=08` (text to YAML 1.1: not octal) was told to "write it without quotes"; it had none."""
    with pytest.raises(ConfigError, match=r"^seed: '08' is text to YAML 1.1 \(a leading zero and an 8 or 9\): "
                                          r"write 8$"):
        config_from_dict({"seed": parse_override("seed=08")[1]})


@pytest.mark.parametrize("failure", ["ENOSPC", "torch.save on a full disk"])
def test_a_write_that_runs_out_of_space_says_so(tmp_path, monkeypatch, failure):
    """torch.save on a full disk raised "unexpected pos 6848 vs 6742", with no word of the disk."""
    import errno

    from fashionmlp import tracking
    from fashionmlp.errors import UserError

    def write(fh):
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 6848 vs 6742")

    monkeypatch.setattr(tracking.shutil, "disk_usage", lambda folder: type("U", (), {"free": 4096})())
    with pytest.raises(UserError, match=r"no space left on the device of .* \(writing last.pt\)"):
        tracking.atomic_write(tmp_path / "last.pt", write)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    if failure != "ENOSPC":  # with space left, torch's failure is a bug of its own, raised as it is
        with pytest.raises(RuntimeError, match="unexpected pos"):
            tracking.atomic_write(tmp_path / "last.pt", write)


def test_values_a_run_does_not_use_are_noted():
    """optimizer.momentum 0.9 with adam (and the like) trained without a word, as if it mattered."""
    from fashionmlp.config.rules import unused_keys

    assert unused_keys(config_from_dict({})) == []
    assert unused_keys(config_from_dict({"optimizer": {"name": "nesterov", "momentum": 0.9}})) == []
    notes = unused_keys(config_from_dict({
        "optimizer": {"name": "adamw", "momentum": 0.5}, "model": {"name": "mlp", "channels": [8, 8]},
        "data": {"num_workers": 2}, "distill": {"alpha": 0.9}}))
    assert notes == ["optimizer.momentum 0.5 is not used: adamw uses its betas, not a momentum",
                     "model.channels [8, 8] is not used: the MLP has no conv blocks",
                     "data.num_workers 2 is not used: the 'fast' loader has no worker processes",
                     "distill.alpha 0.9 is not used: there is no distill.teacher"]
    assert unused_keys(config_from_dict({"optimizer": {"name": "sgd", "betas": [0.8, 0.99]}})) == [
        "optimizer.betas [0.8, 0.99] is not used: sgd has no betas (adam and adamw use them)"]
    assert unused_keys(config_from_dict({"data": {"loader": "torchvision", "num_workers": 2}})) == []
