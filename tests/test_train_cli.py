"""`fashionmlp train`, `evaluate` and `predict` end to end on the tiny data set."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fashionmlp.data import CLASSES

from helpers import accumulator, cli, run_dir_of, scalars, summary

STEPS_PER_EPOCH = 10  # 320 tiny training images / batch 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    from helpers import tiny_config

    tmp = tmp_path_factory.mktemp("train")
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_data)))
    result = cli("train", "--config", path, "--runs-dir", tmp / "runs", "--epochs", 3, "--name", "e2e")
    assert result.exit_code == 0, result.output
    return run_dir_of(result)


def test_run_folder_has_every_output(trained):
    assert trained.name.startswith("e2e-")
    for name in ("config.yaml", "metrics.csv", "summary.json", "loss_curve.png", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (trained / name).is_file(), name
    assert list(trained.glob("events.out.tfevents.*"))
    assert not list(trained.glob("**/.*.tmp"))  # no leftovers of atomic writes


def test_resolved_config_is_complete(trained):
    saved = yaml.safe_load((trained / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["name"] == "e2e"
    assert saved["model"]["hidden"] == [32, 32] and saved["train"]["batch_size"] == 32
    assert set(saved) == {"name", "seed", "device", "data", "model", "optimizer", "train", "distill"}


def test_metrics_and_summary(trained):
    with open(trained / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "train_loss", "test_loss", "test_accuracy", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    s = summary(trained)
    assert s["status"] == "completed" and s["epochs"] == 3
    assert s["final"]["test_accuracy"] == pytest.approx(float(rows[-1]["test_accuracy"]))
    assert s["final"]["test_accuracy"] > 0.5  # the tiny classes are easy: it must learn them
    assert s["best"]["test_accuracy"] == max(float(r["test_accuracy"]) for r in rows)
    assert s["device"] == "cpu" and s["seed"] == 0
    # images trained / training seconds (not the mean of the per-epoch rates, which overstates it)
    assert s["samples_per_second"] == pytest.approx(
        s["data"]["train_size"] * 3 / sum(float(r["seconds"]) for r in rows), rel=1e-9)
    assert {"python", "torch"} <= set(s["versions"])


def test_tensorboard_events(trained):
    tags = scalars(trained)
    assert {"loss/train", "loss/train_step", "loss/test", "accuracy/test", "lr"} <= set(tags)
    assert [step for step, _ in tags["loss/train_step"]] == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    assert [step for step, _ in tags["accuracy/test"]] == [10, 20, 30]
    with open(trained / "metrics.csv") as fh:
        accs = [float(r["test_accuracy"]) for r in csv.DictReader(fh)]
    assert [v for _, v in tags["accuracy/test"]] == pytest.approx(accs, abs=1e-6)
    acc = accumulator(trained)
    assert "confusion_matrix/test" in acc.Tags()["images"]
    hp = acc.PluginTagToContent("hparams")  # in the SAME run folder, not a sub-run
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp)
    assert not [p for p in trained.iterdir() if p.is_dir() and p.name != "checkpoints"]


def test_checkpoint_loads_safely(trained):
    state = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["global_step"] == 30 and len(state["history"]) == 3


def test_evaluate(trained):
    result = cli("evaluate", trained, "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    s = summary(trained)
    assert f"test accuracy {s['final']['test_accuracy']:.2%}" in result.stdout
    assert all(name in result.stdout for name in CLASSES)
    # named by the checkpoint, as evaluation-last.json: evaluating best.pt next would not overwrite it
    assert (trained / "confusion_matrix-last.png").is_file() and not (trained / "confusion_matrix.png").exists()
    # the matrix's columns headed by whole names (cut to 7 characters they read "Pullove", "Ankle b"), its rows
    # the counts that evaluation-last.json holds, in the columns under them
    import json

    confusion = json.loads((trained / "evaluation-last.json").read_text())["confusion"]
    text = result.stdout.split("confusion matrix (rows: true class, columns: predicted):\n", 1)[1].splitlines()
    assert text[0].split() == ["Ankle"] and text[1].split()[3:] == ["T-shirt", "Trouser", "Pullover", "Dress",
                                                                   "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "boot"]
    assert [list(map(int, line[16:].split())) for line in text[2:12]] == confusion
    assert text[0].rindex("Ankle") + len("Ankle") == text[1].rindex("boot") + len("boot") == len(text[2])


def test_predict_index_and_grid(trained, tmp_path):
    result = cli("predict", trained, "--index", 0, "--index", 3, "--grid", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("test image")]
    assert len(lines) == 2 and lines[0].count("%") == 3
    shown = [p.rsplit(" ", 1)[1].rstrip("%") for p in lines[0].split(": ", 1)[1].split(", ")]
    probs = [float(p.lstrip("<>")) for p in shown]  # '<0.1' and '>99.9': a tiny or near-certain probability
    assert probs == sorted(probs, reverse=True)
    assert sum(0.0 if p.startswith("<") else float(p.lstrip(">")) for p in shown) <= 100.05
    assert Image.open(tmp_path / "g.png").size[0] > 100


def test_predict_grid_does_not_overwrite_the_runs_own_pictures(trained):
    before = (trained / "loss_curve.png").read_bytes()
    for name in ("loss_curve.png", "confusion_matrix-best.png"):
        result = cli("predict", trained, "--index", 0, "--grid", trained / name)
        assert result.exit_code == 2 and f"is the run's own {name}" in result.stderr, result.output
    assert (trained / "loss_curve.png").read_bytes() == before
    result = cli("predict", trained, "--grid", trained / "grid.png")  # a new file in the folder is the user's
    assert result.exit_code == 0 and (trained / "grid.png").is_file(), result.output
    (trained / "grid.png").unlink()


def test_predict_image_file(trained, tmp_path):
    from helpers import make_images

    images, labels = make_images(1, 2)  # the first tiny test image
    Image.fromarray(images[0]).save(tmp_path / "x.png")
    result = result_of_x = cli("predict", trained, "--image", tmp_path / "x.png")
    assert result.exit_code == 0, result.output
    assert "x.png:" in result.stdout and result.stdout.count("%") == 3
    Image.fromarray(images[0]).resize((56, 56)).save(tmp_path / "big.png")
    result = cli("predict", trained, "--image", tmp_path / "big.png")
    assert result.exit_code == 0 and "is 56x56; resized to 28x28" in result.stderr  # a square: nothing padded
    frames = [Image.fromarray(images[0]), Image.fromarray(255 - images[0])]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    moving = cli("predict", trained, "--image", tmp_path / "moving.gif")  # the first frame, without a word
    assert moving.exit_code == 0 and "moving.gif': 2 frames (an animation or a multi-page file); the first is used" \
        in moving.stderr
    assert moving.stdout.split(":", 1)[1] == result_of_x.stdout.split(":", 1)[1]  # the first frame's answer
    Image.fromarray(images[0]).resize((84, 56)).save(tmp_path / "wide.png")
    result = cli("predict", trained, "--image", tmp_path / "wide.png")
    assert result.exit_code == 0 and "is 84x56; padded to a square with black (the garment shrinks: cropped" \
        in result.stderr


def test_predict_several_image_files_at_once(trained, tmp_path):
    """--image was not repeatable: with two, the last alone was predicted, without a word."""
    from helpers import make_images

    images, _ = make_images(3, 2)
    paths = []
    for k, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"x{k}.png")
        paths.append(tmp_path / f"x{k}.png")
    alone = [cli("predict", trained, "--image", path).stdout for path in paths]
    together = cli("predict", trained, *[arg for path in paths for arg in ("--image", path)])
    assert together.exit_code == 0, together.output
    assert together.stdout.splitlines() == [line for out in alone for line in out.splitlines()]
    assert [line.split(":")[0] for line in together.stdout.splitlines()] == [str(p) for p in paths]
    broken = tmp_path / "broken.png"
    broken.write_bytes((tmp_path / "x0.png").read_bytes()[:60])  # a truncated file among them: one line, no output
    refused = cli("predict", trained, "--image", paths[0], "--image", broken)
    assert refused.exit_code == 2 and refused.stdout == ""
    assert f"--image '{broken}': not an image file PIL can read (" in refused.stderr
    assert "(OSError)" not in refused.stderr  # PIL's reason, not the exception's class
    np_file = tmp_path / "stack.npy"
    np.save(np_file, images)
    npy = cli("predict", trained, "--image", np_file)
    assert npy.exit_code == 2 and "a NumPy array is not an image: save it as PNG first" in npy.stderr
    both = cli("predict", trained, "--image", broken, "--image", paths[1], "--image", np_file)  # the first alone was named
    assert both.exit_code == 2 and both.stdout == "" and len(both.stderr.strip().splitlines()) == 1
    assert both.stderr.startswith(f"error: 2 of 3 images cannot be read: --image '{broken}': not an image file PIL")
    assert f"; --image '{np_file}': not an image file PIL can read" in both.stderr
    invert = cli("predict", trained, "--index", 0, "--invert")  # was ignored
    assert invert.exit_code == 2 and "--invert inverts --image files" in invert.stderr


def test_predict_a_folder_of_images_and_a_quoted_pattern(trained, tmp_path):
    """A folder was refused ("is a directory"), and a quoted pattern was "no such file" with no word of why."""
    from helpers import make_images

    images, _ = make_images(3, 2)
    folder = tmp_path / "shots"
    folder.mkdir()
    for k, image in enumerate(images):
        Image.fromarray(image).save(folder / f"x{k}.png")
    (folder / "notes.txt").write_text("not a picture")  # skipped: not an image's name
    (folder / "more.png").mkdir()  # a folder inside: skipped
    (folder / "catalog.pdf").write_bytes(b"%PDF-1.4\n")  # PIL registers .pdf, but only to save one
    (folder / "._x0.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's AppleDouble shadow of x0.png
    files = sorted(folder.glob("x*.png"))
    one_by_one = cli("predict", trained, *[arg for path in files for arg in ("--image", path)])
    whole = cli("predict", trained, "--image", folder)
    assert whole.exit_code == 0, whole.output
    assert whole.stdout == one_by_one.stdout and whole.stdout.count("%") == 9
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    loop = cli("predict", trained, "--image", tmp_path / "loop.png")
    assert loop.exit_code == 2 and "a symbolic link to nothing (its target is missing, or it leads back to" in loop.stderr
    pattern = cli("predict", trained, "--image", folder / "x*.png")
    assert pattern.exit_code == 2 and "no such file; a pattern is expanded by the shell only unquoted" in pattern.stderr
    damaged = folder / "x9.png"  # a folder's damaged file stopped the predictions of every other one
    damaged.write_bytes((folder / "x0.png").read_bytes()[:60])
    skipped = cli("predict", trained, "--image", folder)
    assert skipped.exit_code == 0 and skipped.stdout == whole.stdout, skipped.output
    assert f"warning: --image '{damaged}': not an image file PIL can read (" in skipped.stderr
    assert ": skipped (a file in a folder given with --image)" in skipped.stderr
    named = cli("predict", trained, "--image", folder, "--image", damaged)  # named itself: still refused
    assert named.exit_code == 2 and named.stdout == "" and f"--image '{damaged}': not an image file" in named.stderr
    only = tmp_path / "only"
    only.mkdir()
    (only / "a.png").write_bytes(b"not a picture")
    none = cli("predict", trained, "--image", only)
    assert none.exit_code == 2 and none.stderr.startswith("error: no image file in the --image folder(s) can be read: --image")


@pytest.mark.parametrize("engine", ["population", "sequential"])
def test_a_seeds_group_says_its_recipe_notes_once(write_config, tmp_path, engine):
    """Its members' notes (an unused value, a short EMA) reached their summary.json only, never the terminal."""
    path = write_config(optimizer={"name": "sgd", "lr": 0.05, "betas": [0.8, 0.99]}, train={"epochs": 1})
    result = cli("train", "--config", path, "--seeds", "0,1", "--engine", engine, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    said = "note: optimizer.betas [0.8, 0.99] is not used: sgd has no betas (adam and adamw use them)"
    assert result.stderr.count(said) == 1


def test_same_seed_same_metrics(write_config, tmp_path):
    path = write_config(train={"epochs": 2})
    runs = [run_dir_of(cli("train", "--config", path, "--runs-dir", tmp_path / "r")) for _ in range(2)]
    assert runs[0] != runs[1]  # never the same folder, even within one second
    a, b = ((r / "metrics.csv").read_text().splitlines() for r in runs)
    strip = lambda lines: [line.rsplit(",", 1)[0] for line in lines]  # noqa: E731 (drop the seconds column)
    assert strip(a) == strip(b)
    other = run_dir_of(cli("train", "--config", path, "--runs-dir", tmp_path / "r", "--seed", 1))
    assert strip((other / "metrics.csv").read_text().splitlines()) != strip(a)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fast_and_torchvision_loaders_train_identically(write_config, tmp_path, dropout):
    """With dropout they did not: each epoch the DataLoader took a number from torch's global generator, the one
    that draws the dropout masks, so every mask after it differed (and a population, which serves batches itself,
    no longer equalled the member's own run)."""
    runs = {}
    for loader in ("fast", "torchvision"):
        path = write_config(f"{loader}.yaml", data={"loader": loader}, model={"dropout": dropout})
        result = cli("train", "--config", path, "--runs-dir", tmp_path / loader)
        assert result.exit_code == 0, result.output
        runs[loader] = run_dir_of(result)
    a, b = (torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in runs.values())
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"][-1]["test_loss"] == b["history"][-1]["test_loss"]


def test_the_torchvision_loader_trains_a_float64_run(write_config, tmp_path):
    """ToTensor makes float32 images: a fp64 run on the torchvision loader crashed at its first step (after its
    run folder was made). Its images are rounded to float32 on the way, so it is close to, not equal to, the fast
    loader's fp64 run."""
    states = []
    for loader in ("fast", "torchvision"):
        path = write_config(f"{loader}.yaml", data={"loader": loader}, train={"precision": "fp64", "epochs": 1})
        result = cli("train", "--config", path, "--runs-dir", tmp_path / loader)
        assert result.exit_code == 0, result.output
        states.append(torch.load(run_dir_of(result) / "checkpoints" / "last.pt", weights_only=True)["model"])
    for key, value in states[0].items():
        assert value.dtype == torch.float64 and torch.allclose(value, states[1][key], rtol=0, atol=1e-5), key


def test_val_split_columns(write_config, tmp_path):
    path = write_config(data={"val_size": 64})
    run = run_dir_of(cli("train", "--config", path, "--runs-dir", tmp_path))
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith("val_loss,val_accuracy")
    s = summary(run)
    assert s["data"]["val_size"] == 64 and s["data"]["train_size"] == 256 and "val_accuracy" in s["best"]


def test_bf16_autocast_trains(write_config, tmp_path):
    path = write_config(train={"epochs": 2, "precision": "bf16"})
    result = cli("train", "--config", path, "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    s = summary(run_dir_of(result))
    assert s["final"]["test_accuracy"] > 0.5
    bf16 = torch.load(run_dir_of(result) / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(t.dtype == torch.float32 for t in bf16.values())  # autocast: the weights stay float32


def test_cnn_trains(write_config, tmp_path):
    path = write_config(model={"name": "cnn", "channels": [4, 8], "hidden": [16]}, train={"epochs": 1})
    result = cli("train", "--config", path, "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert math.isfinite(summary(run_dir_of(result))["final"]["test_loss"])


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "fashionmlp", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "compare-optimizers" in out.stdout


def _commands(group, path=()):
    """(path, command) of every leaf command of the CLI."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group such as `manual`
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_documents_every_option():
    import typer

    from fashionmlp.cli import app

    commands = dict(_commands(typer.main.get_command(app)))
    assert {"train", "evaluate", "predict", "data", "compare-optimizers"} <= {p[-1] for p in commands}
    for path, command in commands.items():
        text = cli(*path, "--help")
        assert text.exit_code == 0, path
        assert command.help, f"{path}: no description"
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{' '.join(path)} {param.opts[0]}: no help text"
                assert any(opt in text.stdout for opt in param.opts), (path, param.opts)
        # Metavars name what to type, never Python types (typer's defaults showed <bool> and <list[str]>).
        assert "<bool>" not in text.stdout and "<list" not in text.stdout, (path, text.stdout)


def test_data_command_reports_md5(tiny_data, tmp_path):
    result = cli("data", "--data-dir", tiny_data, "--no-download")
    assert result.exit_code == 2 and result.stdout.count("MD5 MISMATCH") == 4
    assert "do not match the published MD5" in result.stderr
    missing = cli("data", "--data-dir", tmp_path / "none", "--no-download")
    assert missing.exit_code == 2 and "MISSING" in missing.stdout


def test_data_command_on_real_data(real_data):
    result = cli("data", "--data-dir", real_data, "--no-download")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("MD5 ok") == 4


def test_real_data_one_epoch_of_adam(real_data, tmp_path):
    config = Path(__file__).resolve().parents[1] / "configs" / "mlp_adam.yaml"
    result = cli("train", "--config", config, "--epochs", 1, "--device", "cpu",
                 "--data-dir", real_data, "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert summary(run_dir_of(result))["final"]["test_accuracy"] >= 0.80


# ---------------------------------------------------------------- which checkpoint, on which device (issue 24, 22)


def test_without_a_validation_split_evaluate_uses_last_and_best_says_why(good_run):
    default = cli("evaluate", good_run)
    assert default.exit_code == 0, default.output
    assert "checkpoint last.pt" in default.stdout and "note:" not in default.stderr
    best = cli("evaluate", good_run, "--checkpoint", "best")
    assert best.exit_code == 0, best.output
    assert "checkpoint best.pt" in best.stdout
    assert "note: best.pt is the epoch with the best test accuracy (the run has no validation split)" in best.stderr
    for command in (["predict", good_run, "--index", "0"], ["inspect", good_run]):
        result = cli(*command, "--checkpoint", "best")
        assert result.exit_code == 0 and "no validation split" in result.stderr, result.output


def test_with_a_validation_split_evaluate_uses_best(write_config, tmp_path):
    run = run_dir_of(cli("train", "--config", write_config(data={"val_size": 64}, train={"epochs": 1}),
                         "--runs-dir", tmp_path))
    result = cli("evaluate", run)
    assert result.exit_code == 0 and "checkpoint best.pt" in result.stdout and "note:" not in result.stderr


def test_a_run_trained_on_cuda_is_evaluated_on_the_cpu_where_cuda_is_absent(good_run, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "from-a-gpu-box"
    shutil.copytree(good_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "device": "cuda"}))
    for command in (["evaluate", run], ["predict", run, "--index", "0"], ["inspect", run]):
        result = cli(*command)
        assert result.exit_code == 0, result.output
        assert "note: the run was trained with device 'cuda' and CUDA is not available here: running on the CPU" \
            in result.stderr
    explicit = cli("evaluate", run, "--device", "cuda")  # asked for: refused, as before
    assert explicit.exit_code == 2 and "CUDA is not available" in explicit.stderr


def test_evaluating_a_run_without_a_finished_epoch_says_so(write_config, tmp_path):
    from test_population import StopAfter

    from fashionmlp.config import load_config
    from fashionmlp.run import train

    # asked once before the run starts, then before the first step: checkpoints/last.pt keeps the initial weights
    result = train(load_config(write_config()), runs_dir=tmp_path, stop=StopAfter(1))
    assert result.status == "interrupted" and not (result.run_dir / "checkpoints" / "best.pt").exists()
    evaluated = cli("evaluate", result.run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    assert "note: last.pt is from epoch 0: the run has not finished an epoch, these are its initial weights" \
        in evaluated.stderr


def sigint_in_step(monkeypatch, seeds: str | None, at: int) -> list:
    """A real SIGINT during optimizer step `at` of `train` (a single run, or a population with --seeds); the
    list it returns counts the steps taken."""
    import os
    import signal

    from fashionmlp import engine as single_engine
    from fashionmlp.population.stack import Stepper

    steps = []

    def counted(step):
        def then_ctrl_c(*args, **kwargs):
            steps.append(1)
            if len(steps) == at:
                os.kill(os.getpid(), signal.SIGINT)
            return step(*args, **kwargs)
        return then_ctrl_c

    if seeds is None:
        monkeypatch.setattr(single_engine, "train_step", counted(single_engine.train_step))
    else:
        monkeypatch.setattr(Stepper, "step", counted(Stepper.step))
    return steps


@pytest.mark.parametrize("seeds", [None, "0,1"])
def test_a_stop_during_the_last_step_says_the_work_finished(write_config, tmp_path, monkeypatch, seeds):
    """"SIGINT: stopping after this step", then the table and exit 0 with no word of the stop: a stop during the
    last step lets it finish the work (docs/runs.md), and now says so. A real SIGINT, during step 20 of 20."""
    steps = sigint_in_step(monkeypatch, seeds, at=20)  # 320 images, batch 32: 10 steps an epoch, 2 epochs
    result = cli("train", "--config", write_config(), "--runs-dir", tmp_path, *(["--seeds", seeds] if seeds else []))
    assert result.exit_code == 0 and len(steps) == 20, result.output
    assert "SIGINT: stopping after this step" in result.stderr
    assert "note: the stop came during the last step, which finished the work: nothing is left to resume" in result.stderr


def test_a_stop_while_a_population_draws_its_pictures_says_the_training_has_ended(write_config, tmp_path,
                                                                                 monkeypatch):
    """A Ctrl-C after a population's last step (400 runs draw their pictures for minutes) said "stopping after this
    step", then drew on, then "the stop came during the last step": it says the training has ended and what is
    left, and every run is finished as without the stop. A real SIGINT, while the first member's picture is drawn."""
    import os
    import signal

    from fashionmlp import recorder

    drawn = []

    def then_ctrl_c(*args, **kwargs):
        drawn.append(1)
        if len(drawn) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return loss_curve(*args, **kwargs)

    loss_curve = recorder.loss_curve
    monkeypatch.setattr(recorder, "loss_curve", then_ctrl_c)
    result = cli("train", "--config", write_config(), "--runs-dir", tmp_path, "--seeds", "0,1")
    assert result.exit_code == 0 and len(drawn) == 2, result.output
    assert ("SIGINT: the training has ended, nothing is left to stop: evaluating the last epoch, then drawing the "
            "pictures of 2 runs") in result.stderr
    assert "stopping after this step" not in result.stderr
    assert "note: the stop came after the training had ended: the results are complete" in result.stderr
    members = sorted(p.parent for p in tmp_path.glob("*/*/summary.json"))
    assert len(members) == 2 and all((m / "loss_curve.png").exists() for m in members)
    assert {json.loads((m / "summary.json").read_text())["status"] for m in members} == {"completed"}


@pytest.mark.parametrize("seeds", [None, "0,1"])
def test_a_stop_during_the_step_a_run_diverged_is_not_told_the_work_finished(write_config, tmp_path, monkeypatch,
                                                                              seeds):
    """A run that diverged in the step a stop came in exits 3 and names where it diverged: the note "the stop came
    during the last step, which finished the work" was added to it as if it had completed."""
    steps = sigint_in_step(monkeypatch, seeds, at=10)  # 320 images, batch 32: 10 steps, one epoch
    path = write_config(optimizer={"name": "sgd", "lr": 1e30}, train={"epochs": 1})
    result = cli("train", "--config", path, "--runs-dir", tmp_path, *(["--seeds", seeds] if seeds else []))
    assert result.exit_code == 3 and len(steps) == 10, result.output
    assert "SIGINT: stopping after this step" in result.stderr and "diverged" in result.stderr
    assert "the stop came during the last step" not in result.stderr


@pytest.mark.parametrize("args", [
    ["train", "--config", "CONFIG", "--data-dir", ""],
    ["train", "--config", "CONFIG", "--runs-dir", " "],
    ["data", "--data-dir", ""],
    ["evaluate", ""],
    ["compare-optimizers", "--model", "mlp", "--runs-dir", ""],
    ["sweep", "--config", "CONFIG", "--runs-dir", ""],
    ["train", "--config", ""],
    ["train", "--resume", ""],
    ["compare-optimizers", "--resume", ""],
    ["predict", "RUN", "--image", ""],
    ["predict", "RUN", "--index", "0", "--grid", ""],
    ["evaluate", "RUN", "--checkpoint", ""],
    ["inspect", "RUN", "--device", " "],
    ["sweep", "--config", "CONFIG", "--storage", ""],
], ids=["train-data", "train-runs", "data", "evaluate", "compare", "sweep", "config", "resume", "compare-resume",
        "image", "grid", "checkpoint", "device", "storage"])
def test_an_empty_option_is_refused_not_read_as_the_current_folder_or_default(write_config, tmp_path, monkeypatch,
                                                                              good_run, args):
    """`--data-dir "$DATA"` with DATA unset was '.': the data were looked for, and downloaded, in the current
    folder (`--runs-dir ''` made its folders there, `predict --image ''` predicted every image there);
    `--checkpoint ''`, `--device ''` and `--storage ''` were their defaults."""
    monkeypatch.chdir(tmp_path)
    config = str(write_config())
    result = cli(*[config if a == "CONFIG" else str(good_run) if a == "RUN" else a for a in args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: Invalid value for ") and "an empty " in result.stderr \
        and "(an unset variable?)" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]  # nothing made here


def test_a_stop_while_waiting_is_one_line_without_error_and_exits_130(capsys):
    """Ctrl-C while a sweep waited out a database outage exits 130 as a stop, but its line began "error:", as
    a user's mistake's does; a mistake keeps its prefix and exit 2."""
    import typer

    from fashionmlp.cli.common import user_errors
    from fashionmlp.errors import StoppedWaiting, UserError

    for kind, code, line in ((StoppedWaiting, 130, "--storage db: stopped while waiting for it"),
                             (UserError, 2, "error: --storage db: stopped while waiting for it")):
        def command(kind=kind):
            raise kind("--storage db: stopped while waiting for it")

        with pytest.raises(typer.Exit) as ended:
            user_errors(command)()
        assert ended.value.exit_code == code and capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("command, shortcut, edit, line", [
    (["train", "--config", "CONFIG"], ["--epochs", "1"], "train.epochs=2",
     "error: --epochs 1 and --set train.epochs=2 set train.epochs to two values; give one of them\n"),
    (["train", "--config", "CONFIG"], ["--seed", "1"], "seed=2",
     "error: --seed 1 and --set seed=2 set seed to two values; give one of them\n"),
    (["train", "--config", "CONFIG"], ["--epochs", "1"], "train={epochs: 3}",
     "error: --epochs 1 and --set train.epochs=3 set train.epochs to two values; give one of them\n"),
    (["train", "--config", "CONFIG"], ["--seed", "1"], "seed=true",  # True == 1 in Python: it ran
     "error: --seed 1 and --set seed=true set seed to two values; give one of them\n"),
    (["manual", "train"], ["--epochs", "1"], "train.epochs=2",
     "error: --epochs 1 and --set train.epochs=2 set train.epochs to two values; give one of them\n"),
    (["compare-optimizers", "--model", "mlp"], ["--device", "cpu"], "device=cuda",
     "error: --device cpu and --set device=cuda set device to two values; give one of them\n"),
    (["sweep", "--config", "SWEEP"], ["--trials", "2"], "sweep={trials: 3}",
     "error: --trials 2 and --set sweep.trials=3 set sweep.trials to two values; give one of them\n"),
])
def test_a_shortcut_and_a_set_of_its_key_to_another_value_are_refused(write_config, tmp_path, command, shortcut,
                                                                       edit, line):
    """`manual train --epochs 1 --set train.epochs=2` ran 1 epoch without a word: the shortcut won."""
    config = str(write_config())
    sweep = write_config("sweep.yaml", sweep={"space": {"optimizer.lr": [0.01, 0.1]}, "sampler": "grid", "trials": 2})
    args = [config if a == "CONFIG" else str(sweep) if a == "SWEEP" else a for a in command]
    result = cli(*args, *shortcut, "--set", edit, "--runs-dir" if command[0] != "manual" else "--data-dir",
                 tmp_path / "runs" if command[0] != "manual" else tmp_path)
    assert result.exit_code == 2 and result.stderr == line, result.output
    assert not (tmp_path / "runs").exists()
    same = cli("train", "--config", config, "--epochs", "1", "--set", "train.epochs=1", "--runs-dir", tmp_path / "r")
    assert same.exit_code == 0, same.output  # the same value twice: nothing to choose between


def test_a_shortcut_counts_against_the_last_set_of_its_key_only():
    """`--set train.epochs=2 --set train.epochs=null --epochs 1` was refused as two values: the later --set had
    unset the key, so only --epochs gives it; a mapping without the key leaves the earlier --set in force."""
    from fashionmlp.config import check_shortcut
    from fashionmlp.errors import ConfigError

    check_shortcut("--epochs", "train.epochs", 1, ["train.epochs=2", "train.epochs=null"])
    check_shortcut("--epochs", "train.epochs", 1, ["train={epochs: 2}", "train.epochs=1"])
    with pytest.raises(ConfigError, match="--epochs 1 and --set train.epochs=2 set train.epochs to two values"):
        check_shortcut("--epochs", "train.epochs", 1, ["train.epochs=2", "train={batch_size: 64}"])
