"""Generated command lines for every command: values at and beyond their limits, odd strings, paths that are
files, folders or missing. Whatever comes in, a command either works (exit 0; `train` and `manual train`
may also end diverged, 3) or refuses with exactly one `error:` line, exit 2 and no run folder; never a traceback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import cli, run_dir_of, tiny_config

INTS = st.sampled_from([-(2**64), -1, 0, 1, 2, 3, 9999, 2**31, 2**32 - 1, 2**32, 2**63, 2**64])
TEXT = st.sampled_from(["", " ", ".", "..", "../../escape", "a/b", "a\\b", "é", "x" * 300, "1e-400", "nan",
                        "-1", "true", "null", "{a: 1}", "[1, 2]", "--", "cpu", "cuda:99", "auto", "mlp", "cnn",
                        "best", "last", "sgd,adam", "0,1", ",", "0,4294967296"])
SETS = st.sampled_from([
    "optimizer.lr=1e-400", "optimizer.lr=1e300", "optimizer.lr=0.5", "optimizer.lr=-1", "train.batch_size=1",
    "train.batch_size=1099511627776", "train.eval_batch_size=1", "train.threads=1", "train.threads=100000",
    "model.hidden=[1]", "model.hidden=[]", "model.hidden=[16777216]", "model={activation: gelu}",
    "model={name: cnn, channels: [2, 2], hidden: [4]}", "data.subset=1", "data.val_size=319", "data.val_size=320",
    "data.loader=torchvision", "optimizer.name=nesterov", "optimizer={name: nesterov, momentum: 0.9}",
    "optimizer.schedule=cosine", "model.dropout=0.99", "train.precision=bf16", "seed=4294967296", "name=../x",
    "optimizer.betas=[0.5]", "bogus=1", "train=3", "=1", "train.epochs", "train.epochs=1.5",
    # the tuned recipe's keys, at and past their limits
    "model.batchnorm=true", "model={batchnorm: true, name: cnn, channels: [2, 2], hidden: [4]}", "data.shift=27",
    "data.shift=28", "data.shift=-1", "data.flip=true", "data.flip=yes please", "optimizer.name=adamw",
    "optimizer.decay_params=weights", "optimizer.decay_params=biases", "optimizer.schedule=onecycle",
    "optimizer.warmup=0.999", "optimizer.warmup=1", "train.label_smoothing=0.999", "train.label_smoothing=1",
    "train.ema=0.9999", "train.ema=1", "train.tta=flip", "train.tta=vflip", "train.patience=1",
    "train.patience=0", "train.patience=null",
])


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_data):
    """Paths of every kind an option may be given: a config, a study, a run, files, a folder, a missing path."""
    tmp = tmp_path_factory.mktemp("places")
    config = tmp / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_data, train={"epochs": 1})))
    study = tmp / "study.yaml"
    study.write_text(yaml.safe_dump({**tiny_config(tiny_data, train={"epochs": 1}),
                                     "variants": {"sgd": {"name": "sgd"}, "adam": {"name": "adam"}}}))
    run = run_dir_of(cli("train", "--config", config, "--runs-dir", tmp / "made"))
    (tmp / "notes.txt").write_text("hello")
    (tmp / "folder").mkdir()
    from PIL import Image

    Image.new("L", (28, 28), 128).save(tmp / "img.png")
    return {"config": config, "study": study, "run": run, "data": tiny_data, "file": tmp / "notes.txt",
            "folder": tmp / "folder", "missing": tmp / "missing", "image": tmp / "img.png",
            "grid.png": tmp / "grid.png", "grid.txt": tmp / "grid.txt", "nested": tmp / "no" / "such" / "g.png"}


def paths(*names: str):
    return st.sampled_from(names)


@pytest.fixture(autouse=True)
def one_epoch_at_most(monkeypatch):
    """A valid but huge --epochs would train for days: every generated run stops after its first epoch."""
    from fashionmlp import resume, run

    original = run.run_epochs

    def capped(trainee, session, recorders, *args, **kwargs):
        cfg = session.cfg
        epochs = min(cfg.train.epochs, recorders[0].epoch + 1)
        session.cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
        return original(trainee, session, recorders, *args, **kwargs)

    monkeypatch.setattr(run, "run_epochs", capped)
    monkeypatch.setattr(resume, "run_epochs", capped)


def check(result, runs: Path, allowed=(0,)) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        err = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error: "), result.stderr
        assert not runs.exists() or not any(runs.iterdir()), "a refused command left a folder behind"
    else:
        assert result.exit_code in allowed, (result.exit_code, result.output)


def options(draw, spec: dict, places: dict) -> list[str]:
    """Draw a subset of `spec`'s options, each with a drawn value; path values are looked up in `places`."""
    args: list[str] = []
    for option, values in spec.items():
        if draw(st.booleans()):
            value = draw(values)
            args += [option, str(places.get(value, value)) if isinstance(value, str) else str(value)]
    return args


COMMON = {"--device": st.one_of(TEXT, st.sampled_from(["cpu"])), "--data-dir": paths("data", "file", "folder",
                                                                                       "missing")}
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@SLOW
@given(data=st.data())
def test_train(places, tmp_path_factory, data):
    runs = tmp_path_factory.mktemp("runs") / "runs"
    spec = {"--config": st.one_of(paths("config"), paths("config", "file", "folder", "missing")),
            "--epochs": INTS, "--seed": INTS, "--name": TEXT, "--set": SETS, **COMMON}
    args = ["train", *options(data.draw, spec, places)]
    if "--config" not in args:
        args += ["--config", str(places["config"])]
    check(cli(*args, "--runs-dir", runs), runs, allowed=(0, 3))


@SLOW
@given(data=st.data())
def test_train_resume(places, tmp_path_factory, data):
    runs = tmp_path_factory.mktemp("runs") / "runs"
    run = places["run"]
    target = data.draw(st.sampled_from(["copy", "file", "folder", "missing"]))
    if target == "copy":  # resume a copy, so the shared run stays as it is
        import shutil

        shutil.copytree(run, runs.parent / "copy")
        target_path = runs.parent / "copy"
    else:
        target_path = places[target]
    spec = {"--epochs": INTS, "--seed": INTS, "--runs-dir": paths("folder"), "--set": SETS, **COMMON}
    args = ["train", "--resume", str(target_path), *options(data.draw, spec, places)]
    check(cli(*args), runs, allowed=(0, 3))


@pytest.mark.parametrize("command", ["evaluate", "inspect"])
@FAST
@given(data=st.data())
def test_commands_on_a_saved_run(places, command, data):
    target = data.draw(paths("run", "file", "folder", "missing", "config"))
    spec = {"--checkpoint": TEXT, **COMMON}
    check(cli(command, str(places[target]), *options(data.draw, spec, places)), places["missing"])


@FAST
@given(data=st.data())
def test_predict(places, data):
    target = data.draw(paths("run", "file", "folder", "missing"))
    spec = {"--index": INTS, "--image": paths("image", "file", "folder", "missing", "config"),
            "--invert": st.none(), "--grid": paths("grid.png", "grid.txt", "folder", "nested"),
            "--checkpoint": TEXT, **COMMON}
    args = [a for a in options(data.draw, spec, places) if a != "None"]
    check(cli("predict", str(places[target]), *args), places["missing"])


@FAST
@given(data=st.data())
def test_data(places, data):
    args = options(data.draw, {"--data-dir": paths("data", "file", "folder", "missing", "config")}, places)
    result = cli("data", "--no-download", *args)
    # The tiny files are not the published ones: their MD5 mismatch is reported as a user error (exit 2).
    check(result, places["missing"])


@SLOW
@given(data=st.data())
def test_compare_optimizers(places, tmp_path_factory, data):
    runs = tmp_path_factory.mktemp("runs") / "runs"
    spec = {"--model": TEXT, "--optimizers": TEXT, "--epochs": INTS, "--seeds": TEXT, "--set": SETS, **COMMON}
    args = ["compare-optimizers", "--config", str(places["study"]), *options(data.draw, spec, places)]
    check(cli(*args, "--runs-dir", runs), runs, allowed=(0,))


@FAST
@given(seed=INTS)
def test_manual_check(seed):
    result = cli("manual", "check", "--seed", str(seed))
    check(result, Path("/nonexistent"), allowed=(0,))


@SLOW
@given(data=st.data())
def test_manual_train(places, data):
    spec = {"--epochs": st.sampled_from([-1, 0, 1]), "--set": SETS,
            "--config": paths("config", "file", "folder", "missing"), "--data-dir": COMMON["--data-dir"]}
    args = options(data.draw, spec, places)
    if "--data-dir" not in args:
        args += ["--data-dir", str(places["data"])]
    if "--epochs" not in args:
        args += ["--epochs", "1"]
    check(cli("manual", "train", *args), Path("/nonexistent"), allowed=(0, 3))  # 3: diverged, as in train


LRS = st.one_of(TEXT, st.sampled_from(["1e-6", "0.1", "10", "1e300", "0", "-1", "inf"]))


@SLOW
@given(data=st.data())
def test_lr_find(places, tmp_path_factory, data):
    runs = tmp_path_factory.mktemp("runs") / "runs"
    spec = {"--config": paths("config", "file", "folder", "missing"), "--start": LRS, "--end": LRS,
            "--steps": st.one_of(TEXT, st.sampled_from([-1, 0, 1, 2, 40, 10001, 2**63])), "--set": SETS,
            "--data-dir": COMMON["--data-dir"]}
    args = ["lr-find", *options(data.draw, spec, places)]
    if "--config" not in args:
        args += ["--config", str(places["config"])]
    check(cli(*args, "--runs-dir", runs), runs, allowed=(0,))
