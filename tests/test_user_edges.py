"""Inputs at the edges, found by trying the tool as a demanding new user would (issue 15): real-world image
files, options combined, read-only folders. The one-line refusals are in test_reliability's bad-input table."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fashionmlp.config import load_config
from fashionmlp.errors import UserError
from fashionmlp.inference import read_image

from helpers import cli, make_images, run_dir_of, summary, tiny_config

# ---------------------------------------------------------------- predict --image: any bit depth and mode


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A (28, 28) uint8 test picture with every gray level present somewhere, light object on black."""
    images, _ = make_images(4, seed=7)
    return images[0]


def _forms(picture: np.ndarray, tmp_path) -> dict[str, object]:
    """The same picture saved in every form people have it in."""
    rgb = np.repeat(picture[..., None], 3, axis=2)
    forms = {
        "8-bit gray PNG": Image.fromarray(picture),
        "16-bit gray PNG": Image.fromarray(picture.astype(np.uint16) * 257),
        "float TIFF in [0, 1]": Image.fromarray(picture.astype(np.float32) / 255),
        "32-bit integer TIFF": Image.fromarray(picture.astype(np.int32)),
        "palette PNG": Image.fromarray(picture).convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
        "RGB PNG": Image.fromarray(rgb),
        "RGBA PNG, opaque": Image.fromarray(np.dstack([rgb, np.full_like(picture, 255)])),
        # A cut-out: white everywhere, the garment only in the alpha channel (it was all white before).
        "RGBA cut-out, shape in alpha": Image.fromarray(np.dstack([np.full_like(rgb, 255), picture])),
        "gray + alpha cut-out": Image.fromarray(np.dstack([np.full_like(picture, 255), picture]), mode="LA"),
    }
    paths = {}
    for name, image in forms.items():
        suffix = ".tif" if "TIFF" in name else ".png"
        path = tmp_path / (name.replace(" ", "_").replace(",", "").replace("[", "").replace("]", "") + suffix)
        image.save(path)
        paths[name] = path
    return paths


def test_every_bit_depth_and_mode_reads_as_the_same_picture(picture, tmp_path):
    for name, path in _forms(picture, tmp_path).items():
        assert Image.open(path).size == (28, 28), name
        np.testing.assert_array_equal(read_image(path, warn=pytest.fail), picture, err_msg=name)


def test_twelve_bit_data_in_a_sixteen_bit_file_is_pointed_out_and_scaled_by_its_range(tmp_path, picture):
    """Scaled by 65535, 12-bit data (0-4095, as cameras save it) read 16 times too dark: the model saw a black
    image (with a warning that said so, and a wrong factor, "16 times", for 0-255 data in a 16-bit file)."""
    full = np.rint(picture / picture.max() * 255).astype(np.uint16)  # 0-255: scaled by its range, unchanged
    Image.fromarray(full * 16).save(tmp_path / "twelve.png")  # 0-4080
    warned: list[str] = []
    np.testing.assert_array_equal(read_image(tmp_path / "twelve.png", warn=warned.append), full)
    assert len(warned) == 1 and "values 0 to 4080 would read nearly black by 65535 (the brightest 6.2%" in warned[0]
    assert "12-bit data?" in warned[0]
    Image.fromarray(picture.astype(np.uint16) * 257).save(tmp_path / "full.png")  # the full range: no warning
    np.testing.assert_array_equal(read_image(tmp_path / "full.png", warn=pytest.fail), picture)
    Image.fromarray(picture.astype(np.uint16)).save(tmp_path / "eight.png")  # 0-255 in 16 bits: as in 32 bits
    assert Image.open(tmp_path / "eight.png").mode.startswith("I;16")
    np.testing.assert_array_equal(read_image(tmp_path / "eight.png", warn=pytest.fail), picture)


def test_float_and_integer_images_beyond_a_range_are_not_read_as_black(tmp_path, picture):
    """A float image at most 1.0001 (an HDR export's rounding) was divided by 255, a 0-300 one by 65535: the model
    saw a black image and answered as for one, without a word."""
    full = np.rint(picture / picture.max() * 255).astype(np.uint8)
    over = full.astype(np.float32) / 255
    over[full == 255] = 1.0001
    Image.fromarray(over).save(tmp_path / "over.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "over.tif", warn=pytest.fail), full)
    Image.fromarray((full.astype(np.int32) * 300) // 255).save(tmp_path / "three_hundred.tif")
    warned: list[str] = []
    seen = read_image(tmp_path / "three_hundred.tif", warn=warned.append)
    assert np.abs(seen.astype(int) - full).max() <= 1 and len(warned) == 1 and "0 to 300" in warned[0]


def test_a_blank_or_nearly_black_image_is_pointed_out(tmp_path, picture):
    """A fully transparent PNG, a black one and a dim one got confident answers without a word."""
    clear = np.dstack([np.repeat(picture[..., None], 3, axis=2), np.zeros_like(picture)])
    Image.fromarray(clear).save(tmp_path / "clear.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(picture // 20).save(tmp_path / "dim.png")
    for name, words in (("clear.png", "every pixel is the same (0% of white): a blank image"),
                        ("black.png", "a blank image"), ("dim.png", "nearly black (its brightest pixel is")):
        warned: list[str] = []
        read_image(tmp_path / name, warn=warned.append)
        assert any(words in w for w in warned), (name, warned)


def test_one_bit_and_inverted_images(tmp_path, picture):
    binary = picture > 127
    Image.fromarray(binary).save(tmp_path / "bw.png")  # mode "1"
    assert set(np.unique(read_image(tmp_path / "bw.png"))) <= {0, 255}
    np.testing.assert_array_equal(read_image(tmp_path / "bw.png"), binary.astype(np.uint8) * 255)
    # --invert: dark clothes on a light background -> light on dark
    Image.fromarray(255 - picture).save(tmp_path / "dark_on_light.png")
    np.testing.assert_array_equal(read_image(tmp_path / "dark_on_light.png", invert=True), picture)
    # --invert on a cut-out inverts the garment, and the transparent background stays black
    cutout = np.dstack([np.repeat((255 - picture)[..., None], 3, axis=2), np.where(picture > 0, 255, 0)])
    Image.fromarray(cutout.astype(np.uint8)).save(tmp_path / "dark_cutout.png")
    np.testing.assert_array_equal(read_image(tmp_path / "dark_cutout.png", invert=True), picture)


def test_a_light_background_is_pointed_out_and_a_blank_out_of_range_image_refused(picture, tmp_path):
    Image.fromarray(255 - picture).save(tmp_path / "dark_on_light.png")  # a photo of a garment on white paper
    warnings = []
    read_image(tmp_path / "dark_on_light.png", warn=warnings.append)
    assert len(warnings) == 1 and "border is light" in warnings[0] and "needs --invert" in warnings[0]
    Image.fromarray(picture).save(tmp_path / "light_on_dark.png")
    inverted = []
    read_image(tmp_path / "light_on_dark.png", invert=True, warn=inverted.append)
    assert len(inverted) == 1 and "--invert made it so: the image may not need it" in inverted[0]
    read_image(tmp_path / "dark_on_light.png", invert=True, warn=pytest.fail)  # inverted: light on black
    # one value outside 0-255 and 0-65535 everywhere: there is no range to scale from (it gave NaN pixels)
    Image.fromarray(np.full((28, 28), -5, np.int32), "I").save(tmp_path / "blank.tif")
    with pytest.raises(UserError, match="every pixel holds -5, outside 0-255 and 0-65535: a blank image"):
        read_image(tmp_path / "blank.tif", warn=pytest.fail)


def test_other_sizes_keep_their_shape_and_warn(tmp_path):
    tall = np.zeros((56, 28), dtype=np.uint8)
    tall[:, 10:18] = 255  # a 56x28 white bar
    Image.fromarray(tall).save(tmp_path / "tall.png")
    warnings = []
    small = read_image(tmp_path / "tall.png", warn=warnings.append)
    assert len(warnings) == 1 and "28x56" in warnings[0] and "padded" in warnings[0]
    assert small.shape == (28, 28)
    assert small[:, :7].max() == 0 and small[:, -7:].max() == 0  # padded at the sides, not stretched
    assert small[:, 12:16].min() > 200
    Image.new("L", (1, 1), 255).save(tmp_path / "dot.png")  # tiny: upscaled, still runs
    assert read_image(tmp_path / "dot.png", warn=lambda _: None).shape == (28, 28)


def test_predict_gives_one_answer_for_every_form(picture, tmp_path, good_run):
    answers = set()
    for name, path in _forms(picture, tmp_path).items():
        result = cli("predict", good_run, "--image", path)
        assert result.exit_code == 0, (name, result.output)
        answers.add(result.stdout.split(": ", 1)[1])
    assert len(answers) == 1, answers


# ---------------------------------------------------------------- the grid picture


def test_grid_shows_what_the_model_sees(good_run, tmp_path):
    from fashionmlp.plots import prediction_grid

    image = np.zeros((28, 28), dtype=np.uint8)
    image[10:18, 10:18] = 255  # a light square on black, as in Fashion-MNIST
    figure = prediction_grid(image[None], [0], [0], [0.9])
    shown = figure.axes[0].images[0]
    colors = shown.to_rgba(shown.get_array())[..., :3]  # the colours the picture shows, pixel by pixel
    assert colors[14, 14].min() > 0.95 and colors[0, 0].max() < 0.05  # light square, black background
    assert cli("predict", good_run, "--grid", tmp_path / "g.svg").exit_code == 0
    assert (tmp_path / "g.svg").stat().st_size > 0
    # it names the model and says how many it got right (a grid without a title could be any run's)
    svg = (tmp_path / "g.svg").read_text()
    texts = [" ".join(part.split(" -->", 1)[0].split()) for part in svg.split("<!-- ")[1:]]  # each text, unwrapped
    drawn = " ".join(texts)  # a wrapped title is drawn line by line
    assert f"{good_run.name} (last.pt, epoch 1): test images 0-" in drawn and "right (wrong ones in red)" in drawn


# ---------------------------------------------------------------- options combined


def test_set_with_a_mapping_edits_the_section(tmp_path, write_config):
    cnn = write_config(model={"name": "cnn", "hidden": [16], "channels": [4, 8]}, train={"epochs": 1})
    cfg = load_config(cnn, ["model={activation: tanh}"])
    assert (cfg.model.name, cfg.model.activation, cfg.model.hidden, cfg.model.channels) == ("cnn", "tanh", (16,), (4, 8))
    result = cli("train", "--config", cnn, "--set", "model={activation: tanh}", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    run = run_dir_of(result)
    assert summary(run)["model"] == "cnn"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["activation"] == "tanh"


def test_compare_model_option_fills_a_study_without_a_model_name(tmp_path, tiny_data):
    from fashionmlp.study import study_from_options

    study = tmp_path / "study.yaml"
    raw = tiny_config(tiny_data)
    raw["model"] = {"channels": [4, 8]}  # no name
    study.write_text(yaml.safe_dump({**raw, "variants": {"sgd": {"name": "sgd"}}}))
    loaded = study_from_options("cnn", study, [], None)
    assert loaded.base.model.name == "cnn" and loaded.variants["sgd"].model.name == "cnn"
    assert loaded.base.model.hidden == (128,)  # the CNN's own default classifier


@pytest.fixture
def val_study(tmp_path, tiny_data):
    study = tmp_path / "study.yaml"
    raw = tiny_config(tiny_data, data={"val_size": 64}, train={"epochs": 2})
    study.write_text(yaml.safe_dump({**raw, "variants": {"sgd": {"name": "sgd", "lr": 0.05}}}))
    return study


def _numbers(run) -> list[list[str]]:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, c in enumerate(header) if c not in ("seconds",)]
    return [[row.split(",")[i] for i in keep] for row in lines[1:]]


def test_every_study_run_is_what_train_with_its_config_does(val_study, tmp_path):
    """A study with a validation split and a seed other than the config's: each run folder must hold exactly
    what `train --config <run>/config.yaml` gives, and its resume must match a straight run. Bit for bit with
    the sequential engine; the population engine rounds differently in float32 and is held to its single runs
    in float64 (test_population.py, test_compare.py)."""
    result = cli("compare-optimizers", "--config", val_study, "--seeds", "1", "--runs-dir", tmp_path / "s",
                 "--engine", "sequential")
    assert result.exit_code == 0, result.output
    (study_dir,) = (tmp_path / "s").iterdir()
    variant = study_dir / "sgd"
    assert summary(variant)["seed"] == 1 and summary(variant)["data"]["val_size"] == 64
    again = cli("train", "--config", variant / "config.yaml", "--runs-dir", tmp_path / "t")
    assert again.exit_code == 0, again.output
    assert _numbers(run_dir_of(again)) == _numbers(variant)
    assert summary(run_dir_of(again))["fingerprints"] == summary(variant)["fingerprints"]
    # Resume: one epoch in the study, then extended to two, equals the two-epoch study run.
    short = cli("compare-optimizers", "--config", val_study, "--seeds", "1", "--epochs", "1",
                "--runs-dir", tmp_path / "short", "--engine", "sequential")
    assert short.exit_code == 0, short.output
    (short_dir,) = (tmp_path / "short").iterdir()
    import shutil

    alone = shutil.copytree(short_dir / "sgd", tmp_path / "alone")  # a study's run is extended out of its study
    resumed = cli("train", "--resume", alone, "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert _numbers(alone) == _numbers(variant)


# ---------------------------------------------------------------- read-only run folders


def _read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failure, said", [(_read_only, "Read-only file system"),
                                           (_full_disk, "no space left on the device of")])
def test_evaluate_on_a_run_it_cannot_write_prints_the_results(good_run, monkeypatch, failure, said):
    """A full disk (atomic_write's one line, since pictures are written as every file) lost the numbers too."""
    monkeypatch.setattr("fashionmlp.inference.write_json", failure)
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", failure)
    result = cli("evaluate", good_run)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout and "per-class accuracy" in result.stdout
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: ") and said in err[0]
    assert "not saved" in err[0]


def test_resume_on_a_read_only_run_is_refused_before_training(good_run, monkeypatch):
    before = (good_run / "metrics.csv").read_text()
    monkeypatch.setattr("tempfile.TemporaryFile", _read_only)
    result = cli("train", "--resume", good_run, "--epochs", "3")
    assert result.exit_code == 2 and "cannot be written (Read-only file system)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (good_run / "metrics.csv").read_text() == before


def test_a_runs_folder_on_a_read_only_file_system_is_not_called_a_permission(write_config, tmp_path, monkeypatch):
    """os.access said "no write permission" for a read-only mount, whose cause is not a permission."""
    monkeypatch.setattr("tempfile.TemporaryFile", _read_only)
    result = cli("train", "--config", write_config(), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"error: runs directory {str(tmp_path / 'runs')!r} cannot be written (Read-only file system in "
        f"{str(tmp_path)!r})"]
    assert not (tmp_path / "runs").exists()


def test_a_runs_folder_under_one_this_user_may_not_enter_is_one_line(write_config, tmp_path, monkeypatch):
    """Path.exists raises PermissionError (not False) under a folder without search permission: a traceback."""
    from pathlib import Path as RealPath

    locked = tmp_path / "someone-elses"
    real_exists = RealPath.exists

    def exists(self, *args, **kwargs):
        if self == locked / "runs":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(RealPath, "exists", exists)
    result = cli("train", "--config", write_config(), "--runs-dir", locked / "runs")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"error: runs directory {str(locked / 'runs')!r} cannot be written (Permission denied at "
        f"{str(locked / 'runs')!r})"]


# ---------------------------------------------------------------- small things


def test_debug_variable_zero_means_off(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {lr: -1}\n")
    for value, traceback in (("0", False), ("false", False), ("", False), ("1", True), ("yes", True)):
        result = cli("train", "--config", bad, env={"FASHIONMLP_DEBUG": value})
        assert result.exit_code == 2 and ("Traceback" in result.stderr) == traceback, value


def test_one_epoch_is_singular(tmp_path, val_study):
    result = cli("compare-optimizers", "--config", val_study, "--epochs", "1", "--runs-dir", tmp_path / "one")
    assert result.exit_code == 0, result.output
    assert "1 epochs" not in result.stdout and "1 epoch" in result.stdout
    (study_dir,) = (tmp_path / "one").iterdir()
    text = (study_dir / "summary.md").read_text()
    assert "1 epochs" not in text and "1 seeds" not in text and "1 epoch, " in text


def test_run_name_never_leaves_the_runs_folder(tmp_path, write_config):
    runs = tmp_path / "deep" / "runs"
    for name in ("../../x", "..", "a/b", "a\\b", "x" * 101, "\x00"):
        result = cli("train", "--config", write_config(), "--runs-dir", runs, "--name", name)
        assert result.exit_code == 2, (name, result.output)
    assert not runs.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]
    ok = cli("train", "--config", write_config(train={"epochs": 1}), "--runs-dir", runs, "--name", "my run.v2")
    assert ok.exit_code == 0 and run_dir_of(ok).parent == runs and run_dir_of(ok).name.startswith("my run.v2-")


def test_a_name_with_dollar_signs_is_drawn_as_written(tmp_path, write_config):
    """matplotlib reads text between two $ as TeX math: a run named 'x$^$' trained its epochs, then failed to draw
    its loss curve (a traceback, the run left 'running' for ever: its resume failed the same way), and in the
    population engine too."""
    runs = tmp_path / "runs"
    for extra in ([], ["--seeds", "0,1"]):
        result = cli("train", "--config", write_config(train={"epochs": 1}), "--runs-dir", runs, "--name", "x$^$ $y_1$",
                     *extra)
        assert result.exit_code == 0, result.output
    trained = [p.parent for p in runs.rglob("metrics.csv")]
    assert len(trained) == 3  # the single run and the two seeds
    for run in trained:
        assert summary(run)["status"] == "completed" and (run / "loss_curve.png").stat().st_size > 0
    from matplotlib.text import Text

    from fashionmlp.plots import confusion_matrix

    figure = confusion_matrix([[int(i == j) for j in range(10)] for i in range(10)], title="run $^$")
    figure.savefig(tmp_path / "f.png")
    (title,) = [t for t in figure.findobj(Text) if "run $^$" in t.get_text()]
    assert not title.get_parse_math()  # drawn as written, not as a formula


def test_every_text_but_the_ticks_is_drawn_as_written(tmp_path):
    """Titles, axis labels, legends and cell counts are literal; tick labels (a log axis's 10^-1) keep their math.
    The walk skips each axis's ticks instead of laying them out (it cost 0.04 s a figure)."""
    from matplotlib.axis import Tick
    from matplotlib.text import Text

    from fashionmlp.plots import confusion_matrix, loss_curve

    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.1 / e, "test_accuracy": 0.5} for e in (1, 2, 3)]
    for figure in (loss_curve(history, [1.0, 0.5, 0.3], "a $b$", "note $c$"),
                   confusion_matrix([[i + j for j in range(10)] for i in range(10)], "a $b$")):
        figure.savefig(tmp_path / "f.png")  # the ticks exist once drawn
        tick_texts = {id(t) for tick in figure.findobj(Tick) for t in (tick.label1, tick.label2)}
        tick_texts |= {id(ax.xaxis.offsetText) for ax in figure.axes} | {id(ax.yaxis.offsetText) for ax in figure.axes}
        texts = figure.findobj(Text)
        literal = [t.get_text() for t in texts if id(t) not in tick_texts and not t.get_parse_math()]
        math = [t for t in texts if id(t) not in tick_texts and t.get_parse_math()]
        assert not math, [t.get_text() for t in math]
        assert "a $b$" in literal and any(t.get_parse_math() for t in texts if id(t) in tick_texts)


def test_more_threads_than_cores_gets_a_note(tmp_path, write_config):
    """train.threads 1024 on 2 cores trained 70-270 times slower than 1 thread, and nothing said why."""
    import os

    cores = len(os.sched_getaffinity(0))
    result = cli("train", "--config", write_config(train={"epochs": 1, "threads": cores + 1}), "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    note = f"train.threads {cores + 1} is more than the {cores} CPU core(s) this process may use"
    assert note in result.stderr and any(note in n for n in summary(run_dir_of(result))["notes"])
    fine = cli("train", "--config", write_config(train={"epochs": 1, "threads": cores}), "--runs-dir", tmp_path)
    assert fine.exit_code == 0 and "CPU core(s) this process may use" not in fine.stderr


def test_the_weights_of_an_unfinished_run_say_so(tmp_path, tiny_data):
    """evaluate, predict and inspect printed an interrupted (or killed, or still training) run's numbers as any
    run's."""
    import torch

    from fashionmlp.config import config_from_dict
    from fashionmlp.progress import Progress, StopRequest
    from fashionmlp.run import train

    stop = StopRequest()

    class AfterOneEpoch(Progress):
        def end_epoch(self, result, epochs: int) -> None:
            stop.request()

    run = train(config_from_dict(tiny_config(tiny_data, train={"epochs": 3})), runs_dir=tmp_path, stop=stop,
                progress=AfterOneEpoch()).run_dir
    note = "note: the run is interrupted (stopped; --resume continues it): these weights are of its epoch 1 of 3"
    for command in (["evaluate", run], ["predict", run, "--index", 0], ["inspect", run]):
        result = cli(*command)
        assert result.exit_code == 0 and note in result.stderr, (command, result.output)
    summary_path = run / "summary.json"
    summary_path.write_text(summary_path.read_text().replace('"interrupted"', '"running"'))  # as kill -9 leaves it
    assert "the run is running (still training, or its process died without a word)" in cli("evaluate", run).stderr
    done = cli("train", "--resume", run)
    assert done.exit_code == 0 and "the run is" not in cli("evaluate", run).stderr
    # a diverged run (its last good epoch's weights): said so, and a huge loss not in 20 digits
    summary_path.write_text(summary_path.read_text().replace('"completed"', '"diverged"'))
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    bias = [k for k in state["model"] if k.endswith("bias")][-1]
    state["model"][bias][0] = 1e20  # every image called class 0 with a loss of ~1e20 where it is not
    torch.save(state, run / "checkpoints" / "last.pt")
    scored = cli("evaluate", run, "--checkpoint", "last")
    assert scored.exit_code == 0 and ("note: the run is diverged (its loss became non-finite after its last good "
                                      "epoch): these weights are of its epoch 3 of 3") in scored.stderr
    loss = re.search(r"test loss (\S+)", scored.stdout).group(1)
    assert "e+" in loss and len(loss) < 12, loss


def test_summary_records_the_command_only_when_run_from_the_command_line(good_run, tmp_path, tiny_data):
    import subprocess
    import sys

    assert summary(good_run)["command"] is None  # an in-process call: no command line to record
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, train={"epochs": 1})))
    out = subprocess.run([sys.executable, "-c", "from fashionmlp.cli import main; main()", "train", "--config",
                          str(cfg), "--runs-dir", str(tmp_path / "r")], capture_output=True, text=True, check=True)
    run = out.stdout.strip().splitlines()[-1]
    assert json.loads(open(f"{run}/summary.json").read())["command"] == (
        f"fashionmlp train --config {cfg} --runs-dir {tmp_path / 'r'}")


# ---------------------------------------------------------------- a run folder's files come from one run


def test_a_checkpoint_from_another_run_or_an_edited_config_is_refused(tmp_path, write_config):
    """A same-shape checkpoint of another run (other seed) copied into a run folder, or config.yaml edited
    after training (lr), made evaluate report the other run's numbers and resume train on at the edited lr."""
    first = run_dir_of(cli("train", "--config", write_config(), "--runs-dir", tmp_path / "a"))
    other = run_dir_of(cli("train", "--config", write_config(seed=1), "--runs-dir", tmp_path / "b"))
    (first / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    for args in (("evaluate", first), ("train", "--resume", first, "--epochs", "3")):
        result = cli(*args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert "the checkpoint was made with seed: 1, config.yaml says 0" in result.stderr
    assert summary(first)["epochs"] == 2 and summary(first)["status"] == "completed"  # nothing was rewritten

    edited = other / "config.yaml"
    edited.write_text(edited.read_text().replace("lr: 0.01", "lr: 5.0"))
    result = cli("train", "--resume", other, "--epochs", "3")
    assert result.exit_code == 2 and "optimizer.lr: 0.01, config.yaml says 5.0" in result.stderr
    # where and how it runs may differ: the thread count here (the rest: the test below)
    edited.write_text(edited.read_text().replace("lr: 5.0", "lr: 0.01").replace("threads: 1", "threads: 2"))
    assert cli("evaluate", other).exit_code == 0
    result = cli("train", "--resume", other, "--epochs", "3")  # (a refused resume released the folder's lock)
    assert result.exit_code == 0 and summary(other)["epochs"] == 3, result.output


def test_where_and_how_a_run_is_computed_may_differ_between_its_checkpoint_and_config(tiny_data):
    """`--resume --epochs/--device` rewrite config.yaml while best.pt keeps the values of its epoch; the data
    folder is wherever the files are now."""
    from fashionmlp.config import config_from_dict
    from fashionmlp.savedrun import config_difference

    from helpers import tiny_config

    saved = config_from_dict(tiny_config(tiny_data)).to_dict()
    now = {**saved, "device": "auto", "train": {**saved["train"], "epochs": 9, "threads": 2, "eval_batch_size": 7,
                                                "channels_last": False, "deterministic": False},
           "data": {**saved["data"], "dir": "/elsewhere", "download": True, "verify_md5": True}}
    assert config_difference(saved, now) is None
    assert config_difference(saved, {**now, "train": {**now["train"], "ema": 0.5}}) == ("train.ema", 0.0, 0.5)
    assert config_difference({**saved, "old_key": 1}, now) is None  # a key another version wrote: skipped


def test_a_taught_runs_config_without_its_teachers_pin_still_fits_its_checkpoint(tmp_path, tiny_data, write_config):
    """A distilled study resumed on the population engine before this check existed rewrote its members'
    config.yaml with the teacher as typed and no fingerprint, while their checkpoints keep the pin."""
    teacher = run_dir_of(cli("train", "--config", write_config("t.yaml"), "--runs-dir", tmp_path / "t"))
    student = run_dir_of(cli("train", "--config", write_config("s.yaml", distill={"teacher": str(teacher)}),
                             "--runs-dir", tmp_path))
    raw = yaml.safe_load((student / "config.yaml").read_text())
    assert raw["distill"]["fingerprint"] is not None
    raw["distill"] = {**raw["distill"], "teacher": teacher.name, "fingerprint": None}  # as the old rewrite left it
    (student / "config.yaml").write_text(yaml.safe_dump(raw))
    assert cli("evaluate", student, "--checkpoint", "best").exit_code == 0
    raw["distill"]["fingerprint"] = "0" * 64  # a pin that differs is still refused
    (student / "config.yaml").write_text(yaml.safe_dump(raw))
    result = cli("evaluate", student, "--checkpoint", "best")
    assert result.exit_code == 2 and "the checkpoint was made with distill." in result.stderr


def test_links_inside_a_run_folder_never_steer_a_write_out_of_it(tmp_path, write_config):
    """A run folder from someone else whose checkpoints/ (or inspect/) links elsewhere: resume wrote its
    checkpoints through the link."""
    run = run_dir_of(cli("train", "--config", write_config(), "--runs-dir", tmp_path / "runs"))
    elsewhere = tmp_path / "elsewhere"
    (run / "checkpoints").rename(elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in elsewhere.iterdir())
    result = cli("train", "--resume", run, "--epochs", "3")
    assert result.exit_code == 2 and "'checkpoints' is a symbolic link" in result.stderr, result.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in elsewhere.iterdir()) == before
    for args in (("evaluate", run), ("inspect", run)):  # they only read checkpoints (DVC links them): they work
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in elsewhere.iterdir()) == before
    (run / "checkpoints").unlink()
    (run / "checkpoints").mkdir()
    for item in elsewhere.iterdir():
        item.rename(run / "checkpoints" / item.name)
    # the lock, a picture, metrics.csv: each linked file was opened, appended or saved through its link
    for name in (".lock", "loss_curve.png", "metrics.csv", "inspect/weights.png", "confusion_matrix-best.png"):
        target = tmp_path / "outside" / name.replace("/", "_")
        target.parent.mkdir(exist_ok=True)
        target.write_text("theirs")
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
        for args in (("train", "--resume", run, "--epochs", "3"), ("evaluate", run), ("inspect", run)):
            result = cli(*args)
            assert result.exit_code == 2 and f"{name!r} is a symbolic link" in result.stderr, (name, result.output)
        assert target.read_text() == "theirs", name
        (run / name).unlink()
    assert cli("train", "--resume", run, "--epochs", "3").exit_code == 0  # its own files again: it goes on


def test_an_unreadable_checkpoints_folder_is_one_line(good_run, monkeypatch):
    """Path.is_file raised PermissionError's traceback from evaluate and inspect (chmod 000 checkpoints/)."""
    from pathlib import Path

    real = Path.is_file

    def is_file(self):
        if self.parent.name == "checkpoints":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    for command in ("evaluate", "inspect"):
        result = cli(command, good_run)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "cannot look into" in result.stderr and "(Permission denied)" in result.stderr


def test_a_run_that_diverged_in_its_first_epoch_is_not_said_to_finish_one_yet(good_run, tmp_path, monkeypatch):
    """evaluate --checkpoint best of a run that diverged in epoch 1 said "the run has not finished an epoch yet":
    it never will. And a Ctrl-C during evaluate exited 130 without a word."""
    import json
    import shutil

    from fashionmlp import inference

    run = shutil.copytree(good_run, tmp_path / "copy")
    (run / "checkpoints" / "best.pt").unlink()
    (run / "metrics.csv").write_text((run / "metrics.csv").read_text().splitlines()[0] + "\n")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "diverged", "epochs": 0}))
    result = cli("evaluate", run, "--checkpoint", "best")
    assert result.exit_code == 2 and ("; the run diverged in its first epoch (checkpoints/last.pt holds its initial "
                                      "weights: --checkpoint last)") in result.stderr, result.output

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "evaluate", ctrl_c)
    stopped = cli("evaluate", good_run)
    assert stopped.exit_code == 130 and stopped.stderr == "interrupted: the command stopped before it finished\n"


def test_a_missing_best_checkpoint_of_a_run_with_epochs_says_so(good_run, tmp_path):
    import shutil

    run = shutil.copytree(good_run, tmp_path / "copy")
    (run / "checkpoints" / "best.pt").unlink()
    result = cli("evaluate", run, "--checkpoint", "best")
    assert result.exit_code == 2 and "the run has finished 1 epoch: --checkpoint last" in result.stderr
    assert "has not finished an epoch" not in result.stderr
    other = shutil.copytree(good_run, tmp_path / "other")  # the other way round: no word of best.pt
    (other / "checkpoints" / "last.pt").unlink()
    result = cli("evaluate", other, "--checkpoint", "last")
    assert result.exit_code == 2 and "; checkpoints/best.pt is there: --checkpoint best" in result.stderr


# ---------------------------------------------------------------- the data a saved run trained on


def test_a_saved_run_missing_its_data_names_the_folder_it_trained_on(tmp_path, tiny_data, monkeypatch):
    """A run trained with --data-dir, read later without it: evaluate, predict, inspect and --resume say
    where its files were instead of only that ./data has none (one line, exit 2)."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_data, data={"dir": None}, train={"epochs": 1})))
    run = run_dir_of(cli("train", "--config", config, "--runs-dir", tmp_path / "runs", "--data-dir", tiny_data))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASHIONMLP_DATA_DIR", raising=False)
    for args in (["evaluate", run], ["predict", run, "--index", "0"], ["inspect", run],
                 ["train", "--resume", run, "--epochs", "2"]):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        line = result.stderr.strip()
        assert "\n" not in line and "missing in 'data'" in line, (args, line)
        assert line.endswith(f"this run trained on the files in {str(tiny_data)!r}: --data-dir {tiny_data}"), args
        assert cli(*args, "--data-dir", tiny_data).exit_code == 0, args
    assert summary(run)["epochs"] == 2


def test_scoring_a_saved_run_needs_only_the_test_files(good_run, tiny_data, tmp_path):
    """evaluate, predict --index and inspect asked for the training files too, and downloaded them (30 MB)."""
    import shutil

    run = shutil.copytree(good_run, tmp_path / "run")
    test_only = tmp_path / "test-only"
    test_only.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(tiny_data / name, test_only / name)
    everything = cli("evaluate", run, "--data-dir", tiny_data)
    for args in (("evaluate", run), ("predict", run, "--index", "0"), ("inspect", run)):
        result = cli(*args, "--data-dir", test_only)
        assert result.exit_code == 0, (args, result.output)
    assert cli("evaluate", run, "--data-dir", test_only).stdout == everything.stdout
    assert sorted(p.name for p in test_only.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    (test_only / "t10k-labels-idx1-ubyte.gz").unlink()  # a missing test file is still named
    result = cli("evaluate", run, "--data-dir", test_only)
    assert result.exit_code == 2 and "t10k-labels-idx1-ubyte.gz" in result.stderr
    assert "train-images" not in result.stderr


@pytest.mark.parametrize("command", ["evaluate", "predict", "inspect", "resume"])
def test_a_saved_runs_data_dir_is_searched_and_never_downloaded_into(good_run, tmp_path, monkeypatch, command):
    """A run folder from someone else with `data.dir: <anywhere>` and `download: true` in its config.yaml made that
    folder and downloaded into it when evaluated, predicted, inspected or resumed without --data-dir."""
    import shutil

    import fashionmlp.data.files

    run = shutil.copytree(good_run, tmp_path / "run")
    elsewhere = tmp_path / "not-yours" / "data"
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["data"] = {**raw["data"], "dir": str(elsewhere), "download": True}
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    asked = []
    monkeypatch.setattr(fashionmlp.data.files, "download", lambda root, keys=(): asked.append(root))
    args = {"evaluate": ("evaluate", run), "predict": ("predict", run, "--index", "0"), "inspect": ("inspect", run),
            "resume": ("train", "--resume", run, "--epochs", "2")}[command]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert asked == [] and not elsewhere.parent.exists()
    assert "a saved run's data.dir is searched, never downloaded into: give --data-dir DIR where the files are; " \
        "`fashionmlp data --data-dir DIR` fetches them into a folder you choose)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"--data-dir {elsewhere}" not in result.stderr  # the stranger's path is not offered as a download target


@pytest.mark.parametrize("engine", ["population", "sequential"])
def test_a_saved_studys_data_dir_is_searched_and_never_downloaded_into(write_config, tmp_path, monkeypatch, engine):
    """The same for a study folder: `train --resume GROUP` (and compare-optimizers --resume) loaded its data with
    the saved configs' download."""
    import shutil

    import fashionmlp.data.files

    result = cli("train", "--config", write_config(train={"epochs": 1}), "--seeds", "0,1", "--engine", engine,
                 "--runs-dir", tmp_path / "runs")
    group = run_dir_of(result)
    elsewhere = tmp_path / "not-yours" / "data"
    for path in group.rglob("*.yaml"):  # each run's config.yaml; study.yaml's base and each variant's config
        raw = yaml.safe_load(path.read_text())
        for cfg in [raw] if "data" in raw else [raw["base"], *raw["variants"].values()]:
            cfg["data"] = {**cfg["data"], "dir": str(elsewhere), "download": True}
        path.write_text(yaml.safe_dump(raw))
    shutil.rmtree(group / "seed1")  # a run left to train
    asked = []
    monkeypatch.setattr(fashionmlp.data.files, "download", lambda root, keys=(): asked.append(root))
    resumed = cli("train", "--resume", group)
    assert resumed.exit_code == 2, resumed.output
    assert asked == [] and not elsewhere.parent.exists() and "never downloaded into" in resumed.stderr


def test_a_resume_option_out_of_range_is_named_as_typed(good_run):
    """`--resume RUN --epochs 0` said "the run's '.../config.yaml': train.epochs: 0 is out of range", blaming the
    file for what was typed."""
    result = cli("train", "--resume", good_run, "--epochs", "0")
    assert result.exit_code == 2
    assert result.stderr == "error: --epochs 0: train.epochs: 0 is out of range; allowed: >= 1 and <= 1000000\n"


def test_weights_that_are_not_finite_are_pointed_out(good_run, tmp_path):
    """A NaN in a checkpoint was scored as test loss nan, accuracy 10.00%, and predicted as 'Bag nan%', silently."""
    import shutil

    import torch

    run = shutil.copytree(good_run, tmp_path / "run")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    bias = next(k for k in state["model"] if k.endswith("bias"))
    state["model"][bias][0] = float("nan")
    torch.save(state, run / "checkpoints" / "last.pt")
    for args in (("evaluate", run, "--checkpoint", "last"), ("predict", run, "--index", "0", "--checkpoint", "last")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert f"last.pt holds weights that are NaN or infinite ({bias})" in result.stderr, result.output
    assert "NaN or infinite" not in cli("evaluate", good_run, "--checkpoint", "last").stderr
    # the files are strict JSON, null for what is not finite: Python's NaN failed JSON.parse and jq
    assert cli("inspect", run, "--checkpoint", "last").exit_code == 0
    for path in (run / "evaluation-last.json", run / "inspect" / "summary.json"):
        data = json.loads(path.read_text(), parse_constant=lambda c, name=path.name: pytest.fail(f"{c} in {name}"))
        assert data
    assert json.loads((run / "evaluation-last.json").read_text())["test_loss"] is None


def test_a_dark_garment_cut_out_on_transparency_is_told_to_invert(tmp_path, picture):
    """A black silhouette on a transparent background (an icon) composites to black on black: it was called blank,
    with no word of --invert, which reads it."""
    icon = np.dstack([np.zeros((28, 28, 3), np.uint8), picture])  # black everywhere, the garment in alpha
    Image.fromarray(icon).save(tmp_path / "icon.png")
    warned: list[str] = []
    read_image(tmp_path / "icon.png", warn=warned.append)
    assert any("a blank image" in w and "a dark garment on a transparent background needs --invert" in w
               for w in warned), warned
    np.testing.assert_array_equal(read_image(tmp_path / "icon.png", invert=True, warn=pytest.fail), picture)


def test_images_a_little_dark_for_their_range_read_no_darker_than_darker_ones(tmp_path, picture):
    """16-bit maxima of 4000 were stretched to full range while 5000 (brighter) read at 7.6% of white: one cut-off."""
    full = np.rint(picture / picture.max() * 255).astype(np.float64) / 255
    seen = {}
    for top in (4000, 5000, 7000):
        Image.fromarray(np.rint(full * top).astype(np.uint16)).save(tmp_path / f"{top}.png")
        seen[top] = read_image(tmp_path / f"{top}.png", warn=lambda _: None).max()
    assert seen[4000] == seen[5000] == 255 and seen[7000] == round(7000 / 65535 * 255)


def test_a_runs_config_from_another_version_is_named(good_run, tmp_path):
    """evaluate said "unknown config key 'model.kernel'" where the user had given no config at all."""
    import shutil

    run = shutil.copytree(good_run, tmp_path / "run")
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["model"]["kernel"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    for args in (("evaluate", run), ("train", "--resume", run, "--epochs", "3")):
        result = cli(*args)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert result.stderr.startswith(f"error: the run's {str(run / 'config.yaml')!r}: unknown config key "
                                        "'model.kernel'"), result.stderr


def test_an_image_that_is_a_pipe_or_a_device_is_not_called_missing(tmp_path):
    """--image /dev/zero, a FIFO and - said "no such file", though the first two exist."""
    import os

    os.mkfifo(tmp_path / "pipe")
    for path, words in ((Path("/dev/zero"), "not a file but a pipe, device or socket"),
                        (tmp_path / "pipe", "not a file but a pipe, device or socket"),
                        (Path("-"), "no such file; standard input is not read: pass an image file"),
                        (tmp_path / "nowhere.png", "no such file")):
        with pytest.raises(UserError, match=re.escape(words)):
            read_image(path, warn=pytest.fail)


def test_a_grid_in_a_folder_that_cannot_be_written_is_refused_first(good_run, tmp_path, monkeypatch):
    """It was found after the model and the data loaded, and the --index lines computed were never printed."""
    import tempfile

    real = tempfile.TemporaryFile
    locked = tmp_path / "locked"
    locked.mkdir()

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    result = cli("predict", good_run, "--index", "0", "--grid", locked / "g.png")
    assert result.exit_code == 2 and result.stderr == (f"error: --grid {str(locked / 'g.png')!r}: the folder "
                                                       f"{str(locked)!r} cannot be written (Permission denied); give a folder "
                                                       "you can write\n")
    assert result.stdout == ""


def test_a_grid_format_this_machine_cannot_write_is_refused_before_predicting(good_run, tmp_path, monkeypatch):
    """matplotlib lists .pgf, which needs LaTeX: with no xelatex on the PATH, `--grid g.pgf` printed the
    predictions' lines and then a traceback ('xelatex' not found), exit 1."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no xelatex here, whatever this machine has
    result = cli("predict", good_run, "--index", "0", "--grid", tmp_path / "g.pgf")
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == (f"error: --grid {str(tmp_path / 'g.pgf')!r}: .pgf pictures cannot be written on this "
                             "machine ('xelatex' not found); give .png, .pdf or .svg\n")
    assert not (tmp_path / "g.pgf").exists()
    svg = cli("predict", good_run, "--index", "0", "--grid", tmp_path / "g.svg")
    assert svg.exit_code == 0 and (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "L with a transparent level"])
@pytest.mark.parametrize("invert", [False, True])
def test_a_colour_image_made_float_a_band_of_rows_at_a_time_reads_bit_for_bit_as_before(tmp_path, monkeypatch,
                                                                                          mode, invert):
    """A 48-megapixel photo was one float64 array and its /255 (2.3 GB), then a float64 square and its float32
    copy: rows are made float a band at a time and the square is float32. The 28x28 picture is the one the
    whole-array computation gives, bit for bit (bands of 7 rows: the last one short)."""
    import fashionmlp.inference as inference

    rng = np.random.default_rng(1)
    h, w = 215, 301  # odd: the square pads both ways
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((h, w)) < 0.3, 0, rgba[..., 3])
    img = Image.fromarray(rgba, "RGBA")
    img = {"RGB": img.convert("RGB"), "RGBA": img, "LA": img.convert("LA"),
           "P": img.convert("RGB").quantize(64), "L with a transparent level": Image.fromarray(
               np.where(rng.random((h, w)) < 0.5, 3, rgba[..., 0]).astype(np.uint8), "L")}[mode]
    path = tmp_path / "big.png"
    if mode in ("P", "L with a transparent level"):  # a palette entry, or a gray level, as transparent
        img.save(path, transparency=3)  # the gray one was read opaque: its alpha was dropped
    else:
        img.save(path)

    def whole(path: Path) -> np.ndarray:  # the computation before the bands, on the same file
        with Image.open(path) as opened:
            has_alpha = opened.mode in ("RGBA", "LA") or "transparency" in opened.info
            values = np.asarray(opened.convert("RGBA" if has_alpha else "RGB"), dtype=np.float64) / 255
        gray = values[..., :3] @ np.array([0.299, 0.587, 0.114])
        gray = 1.0 - gray if invert else gray
        gray = gray * values[..., 3] if has_alpha else gray
        side = max(h, w)
        square = np.zeros((side, side))
        square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = gray
        small = Image.fromarray(square.astype(np.float32), mode="F").resize((28, 28), Image.Resampling.BOX)
        return np.clip(np.rint(np.asarray(small, dtype=np.float64) * 255), 0, 255).astype(np.uint8)

    monkeypatch.setattr(inference, "ROWS_AT_ONCE", 7)
    np.testing.assert_array_equal(read_image(path, invert=invert, warn=lambda line: None), whole(path))


def test_a_resume_removes_what_evaluate_and_inspect_made_of_the_checkpoints_it_replaces(good_run, tmp_path):
    """evaluation-last.json, confusion_matrix-last.png and inspect/ of epoch 1 stayed beside the resumed run's
    last.pt of epoch 2, nothing saying they were out of date. Removed, with a note, once an epoch replaces the
    checkpoint they were made from; those of a checkpoint still there are kept."""
    import json
    import shutil

    import torch

    run = shutil.copytree(good_run, tmp_path / "run")
    assert cli("evaluate", run, "--checkpoint", "last").exit_code == 0
    assert cli("inspect", run, "--checkpoint", "last").exit_code == 0
    (run / "inspect" / "my-notes.txt").write_text("mine")  # not the inspection's: it stays (rmtree took it)
    kept = run / "evaluation-best.json"  # of a best.pt the resumed epoch does not beat (made up: kept as it is)
    kept.write_text(json.dumps({"checkpoint": "best", "epoch": 1}))
    history = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["history"]
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    state["best"] = {**state["best"], "test_accuracy": 2.0}  # no epoch can beat it: best.pt stays
    torch.save(state, run / "checkpoints" / "last.pt")
    assert len(history) == 1
    result = cli("train", "--resume", run, "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert ("note: removed evaluation-last.json, confusion_matrix-last.png, inspect/'s pictures and log: made from "
            "a checkpoint that epoch 2 replaced; evaluate or inspect the run again") in result.stderr
    assert not (run / "evaluation-last.json").exists()
    assert sorted(p.name for p in (run / "inspect").iterdir()) == [".lock", "my-notes.txt"]
    assert kept.is_file() and not (run / "confusion_matrix-last.png").exists()
