"""`fashionmlp inspect`: the pictures of a trained model, on tiny synthetic runs, and the numbers behind them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fashionmlp.data import CLASSES, load_data, normalize
from fashionmlp.engine import predict_proba
from fashionmlp.inspection import DPI
from fashionmlp.metrics import confident_mistakes, confused_pairs, expected_calibration_error, reliability
from fashionmlp.plots import percent
from fashionmlp.plots.model import SIZES, calibration_figure, cnn_weights_figure, grid_shape, mlp_weights_figure, mosaic
from fashionmlp.savedrun import load_run

from helpers import accumulator, cli, run_dir_of, tiny_config

N_TEST = 160  # tiny test set (helpers.write_dataset)
PNGS = {"weights.png", "mistakes.png", "per_class.png", "calibration.png"}


def train_tiny(tmp_path_factory, tiny_data, name: str, **sections) -> Path:
    tmp = tmp_path_factory.mktemp(name)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_data, name=name, **sections)))
    result = cli("train", "--config", path, "--runs-dir", tmp / "runs")
    assert result.exit_code == 0, result.output
    return run_dir_of(result)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, tiny_data) -> Path:
    """One epoch of plain SGD: good enough to learn something, bad enough to make mistakes to show."""
    return train_tiny(tmp_path_factory, tiny_data, "mlp", optimizer={"name": "sgd", "lr": 0.02},
                      train={"epochs": 1, "batch_size": 32})


@pytest.fixture(scope="module")
def mlp_inspected(mlp_run) -> tuple[Path, str]:
    result = cli("inspect", mlp_run)
    assert result.exit_code == 0, result.output
    return mlp_run / "inspect", result.stdout


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def pixels(size: tuple[float, float]) -> tuple[int, int]:
    return round(size[0] * DPI), round(size[1] * DPI)


# ---------------------------------------------------------------- the files of a run


def test_every_file_with_its_size(mlp_inspected):
    out, stdout = mlp_inspected
    assert PNGS | {"summary.json"} <= {p.name for p in out.iterdir()}
    assert png_size(out / "weights.png") == pixels(SIZES["weights_mlp"]) == (1000, 1060)
    assert png_size(out / "mistakes.png") == pixels(SIZES["mistakes"])
    assert png_size(out / "per_class.png") == pixels(SIZES["per_class"])
    assert png_size(out / "calibration.png") == pixels(SIZES["calibration"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_images"] == N_TEST and summary["checkpoint"] == "last" and summary["epoch"] == 1
    assert 0 <= summary["ece"] <= 1 and f"expected calibration error {summary['ece']:.2%}" in stdout
    assert summary["nonfinite_predictions"] == 0
    assert sum(b["count"] for b in summary["calibration_bins"]) == N_TEST
    assert [b["lower"] for b in summary["calibration_bins"]] == pytest.approx([i / 10 for i in range(10)])


def test_inspect_says_what_it_is_doing(mlp_run, tmp_path):
    result = cli("inspect", copy_run(mlp_run, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    stages = [line for line in result.stderr.splitlines() if line.startswith("inspect: ")]
    assert [line.split()[1] for line in stages] == ["scoring", "drawing", "writing"], result.stderr


def test_numbers_agree_with_evaluate(mlp_run, mlp_inspected):
    out, _ = mlp_inspected
    summary = json.loads((out / "summary.json").read_text())
    assert cli("evaluate", mlp_run).exit_code == 0
    evaluation = json.loads((mlp_run / "evaluation-last.json").read_text())  # no validation split: last
    assert summary["test_accuracy"] == pytest.approx(evaluation["test_accuracy"], abs=1e-12)
    assert summary["per_class_accuracy"] == pytest.approx(evaluation["per_class_accuracy"], abs=1e-12)
    cm = np.asarray(evaluation["confusion"])
    assert confused_pairs(cm) == summary["confused_pairs"]
    # the ECE in summary.json is the ECE of the model's own probabilities
    probs, labels = model_probabilities(mlp_run)
    assert summary["ece"] == pytest.approx(expected_calibration_error(probs.max(1), probs.argmax(1) == labels),
                                           abs=1e-6)


def model_probabilities(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's test-set probabilities through the ordinary predict path (not inspect's)."""
    run = load_run(run_dir, "best")
    test = load_data(run.cfg).test
    probs = predict_proba(run.model, normalize(torch.from_numpy(test.images))).double().numpy()
    return probs, test.labels


def test_mistakes_are_wrong_and_most_confident_first(mlp_run, mlp_inspected):
    out, _ = mlp_inspected
    mistakes = json.loads((out / "summary.json").read_text())["mistakes"]
    probs, labels = model_probabilities(mlp_run)
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(predicted != labels)
    assert len(wrong) >= 10, "the tiny run must make mistakes for this test to mean anything"
    assert len(mistakes) == min(24, len(wrong))
    for m in mistakes:
        i = m["index"]
        assert predicted[i] != labels[i]
        assert (m["true"], m["predicted"]) == (CLASSES[labels[i]], CLASSES[predicted[i]])
        assert m["confidence"] == pytest.approx(confidence[i], abs=1e-6)
    shown = [m["confidence"] for m in mistakes]
    assert shown == sorted(shown, reverse=True)
    # and no wrong prediction left out is more confident than the least confident one shown
    left_out = set(wrong.tolist()) - {m["index"] for m in mistakes}
    assert all(confidence[i] <= shown[-1] + 1e-6 for i in left_out)


def test_tensorboard_images_and_projector(mlp_inspected):
    out, _ = mlp_inspected
    acc = accumulator(out)
    assert set(acc.Tags()["images"]) == {f"inspect/{k}" for k in ("weights", "mistakes", "per_class", "calibration")}
    config = (out / "projector_config.pbtxt").read_text()
    # <the checkpoint's optimizer step>/<tag>: one epoch of 10 steps; TensorBoard's x axis is the step everywhere
    folder = out / "00010" / "penultimate"
    assert 'tensor_path: "00010/penultimate/tensors.tsv"' in config
    assert 'image_path: "00010/penultimate/sprite.png"' in config and config.count("single_image_dim: 28") == 2
    assert {e.step for tag in acc.Tags()["images"] for e in acc.Images(tag)} == {10}
    tensors = (folder / "tensors.tsv").read_text().splitlines()
    assert len(tensors) == N_TEST and all(len(line.split("\t")) == 32 for line in tensors)  # hidden [32, 32]
    metadata = (folder / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "label\tpredicted\tcorrect" and len(metadata) == N_TEST + 1
    labels = load_data(load_run(out.parent).cfg).test.labels
    assert [row.split("\t")[0] for row in metadata[1:]] == [CLASSES[k] for k in labels]
    side = math.ceil(math.sqrt(N_TEST)) * 28  # the sprite: a square grid of 28x28 thumbnails
    assert png_size(folder / "sprite.png") == (side, side)


def test_second_inspection_replaces_the_first(mlp_inspected, tmp_path):
    from fashionmlp.inspection import inspect_run

    run = copy_run(mlp_inspected[0].parent, tmp_path / "run", keep_inspect=True)
    out = run / "inspect"
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    report = inspect_run(run, checkpoint="last", embedding_images=50)
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert (out / "projector_config.pbtxt").read_text().count("embeddings {") == 1
    assert json.loads((out / "summary.json").read_text())["checkpoint"] == "last"
    tensors = (out / "00010" / "penultimate" / "tensors.tsv").read_text().splitlines()
    assert report.summary["embedding"]["images"] == 50 and len(tensors) == 50


@pytest.mark.parametrize("failure", ["ctrl-c", "full disk"])
def test_an_inspection_stopped_midway_leaves_the_last_one_whole(mlp_inspected, tmp_path, monkeypatch, failure):
    """A Ctrl-C (or a full disk) after some pictures were drawn left them beside the last inspection's other
    pictures and summary.json, of another checkpoint, and Ctrl-C said nothing: the new files are written apart
    and replace the old ones only when all are there."""
    import errno

    from fashionmlp import inspection

    run = copy_run(mlp_inspected[0].parent, tmp_path / "run", keep_inspect=True)
    out = run / "inspect"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}

    def fails(*args, **kwargs):
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inspection, "_tensorboard", fails)  # after the four pictures and summary.json
    result = cli("inspect", run, "--checkpoint", "last")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before and not list(out.glob(".unfinished-*"))
    if failure == "ctrl-c":
        assert result.exit_code == 130
        assert result.stderr.endswith(f"interrupted: nothing new was put in {str(out)!r}\n")
    else:
        assert result.exit_code == 2
        assert result.stderr.endswith(f"error: {str(out)!r} cannot be written: No space left on device\n")


def test_a_link_deep_in_inspect_is_refused_and_old_projectors_of_any_step_go(mlp_inspected, tmp_path):
    """The projector writes into inspect/<step>/penultimate/: a link there (a run folder from someone else)
    must not steer its files out of the run; folders of earlier inspections, 6-digit steps too, are removed."""
    run = copy_run(mlp_inspected[0].parent, tmp_path / "run", keep_inspect=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "inspect" / "123456").mkdir()
    (run / "inspect" / "123456" / "penultimate").symlink_to(elsewhere)
    result = cli("inspect", run)
    assert result.exit_code == 2 and "'inspect/123456/penultimate' is a symbolic link" in result.stderr
    assert list(elsewhere.iterdir()) == []
    (run / "inspect" / "123456" / "penultimate").unlink()
    (run / "inspect" / "123456" / "penultimate").mkdir()
    assert cli("inspect", run).exit_code == 0
    assert sorted(p.name for p in (run / "inspect").iterdir() if p.name.isdigit()) == ["00010"]


def test_cnn_run(tmp_path_factory, tiny_data):
    run = train_tiny(tmp_path_factory, tiny_data, "cnn", model={"name": "cnn", "channels": [4, 8], "hidden": [16]},
                     train={"epochs": 1, "batch_size": 32})
    result = cli("inspect", run)
    assert result.exit_code == 0, result.output
    out = run / "inspect"
    assert png_size(out / "weights.png") == pixels(SIZES["weights_cnn"])
    assert PNGS <= {p.name for p in out.iterdir()}
    tensors = next(out.glob("*/penultimate/tensors.tsv")).read_text().splitlines()
    assert len(tensors[0].split("\t")) == 16  # the classifier's hidden width


# ---------------------------------------------------------------- bad input: the same lines as evaluate


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def copy_run(run: Path, to: Path, keep_inspect: bool = False) -> Path:
    import shutil

    shutil.copytree(run, to, ignore=None if keep_inspect else shutil.ignore_patterns("inspect"))
    return to


@pytest.mark.parametrize("breakage", ["not a folder", "no config", "no best.pt", "garbage best.pt",
                                      "bad checkpoint option", "garbage config"])
def test_bad_input_gets_the_same_error_as_evaluate(mlp_run, tmp_path, breakage):
    run = copy_run(mlp_run, tmp_path / "run")
    args = []
    if breakage == "not a folder":
        run = tmp_path / "missing"
    elif breakage == "no config":
        (run / "config.yaml").unlink()
    elif breakage == "no best.pt":
        (run / "checkpoints" / "best.pt").unlink()
        args = ["--checkpoint", "best"]
    elif breakage == "garbage best.pt":
        (run / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
        args = ["--checkpoint", "best"]
    elif breakage == "garbage config":
        (run / "config.yaml").write_text("model: [unclosed")
    else:
        args = ["--checkpoint", "newest"]
    line = one_error_line(cli("inspect", run, *args))
    assert line == one_error_line(cli("evaluate", run, *args))
    assert not (run / "inspect").exists()


def test_unwritable_inspect_folder_is_one_line(mlp_run, tmp_path):
    run = copy_run(mlp_run, tmp_path / "run")
    (run / "inspect").write_text("a file where the folder should be")
    line = one_error_line(cli("inspect", run))
    assert line == f"error: {str(run / 'inspect')!r} is a file, not a folder; inspect writes its pictures into a " \
                   "folder of that name: move the file away"


def test_test_images_are_drawn_on_one_scale_of_their_stored_0_to_255():
    """Each was stretched to its own range: a faint garment (at most 60 of 255) looked as bold as the others."""
    from matplotlib.image import AxesImage

    from fashionmlp.plots.model import mistakes_figure

    faint = np.zeros((2, 28, 28), dtype=np.uint8)
    faint[:, 5:20, 5:20] = 60
    figure = mistakes_figure(faint, [0, 1], [1, 0], [0.9, 0.8], [3, 4], "faint")
    images = [a for ax in figure.axes for a in ax.get_children() if isinstance(a, AxesImage)]
    assert len(images) == 2 and {im.get_clim() for im in images} == {(0, 255)}
    filters = np.random.default_rng(0).normal(size=(4, 1, 3, 3))
    maps = np.random.default_rng(0).random((2, 4, 14, 14))
    figure = cnn_weights_figure(filters, faint, [0, 1], maps, maps, "faint")
    drawn = [im for ax in figure.axes for im in ax.get_images() if im.get_array().shape == (28, 28)]
    assert len(drawn) == 2 and {im.get_clim() for im in drawn} == {(0, 255)}


def test_a_second_inspection_of_a_run_is_refused_while_the_first_writes(mlp_run, tmp_path):
    """Two at once: one removed the other's TensorBoard files as it wrote them (FileNotFoundError's traceback)."""
    from fashionmlp.runlock import lock_run_dir

    run = copy_run(mlp_run, tmp_path / "run")
    (run / "inspect").mkdir()
    first = lock_run_dir(run / "inspect", "inspect folder")  # the other inspection, drawing
    try:
        line = one_error_line(cli("inspect", run))
    finally:
        first.close()
    assert line == (f"error: inspect folder {str(run / 'inspect')!r} is in use by another process (pid {os.getpid()}); "
                    "wait for it to finish or stop it first")
    assert sorted(p.name for p in (run / "inspect").iterdir()) == [".lock"]  # nothing drawn
    assert cli("inspect", run).exit_code == 0  # once it is done


def test_a_read_only_file_system_is_not_called_a_permission(mlp_run, tmp_path, monkeypatch):
    import errno

    run = copy_run(mlp_run, tmp_path / "run")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    line = one_error_line(cli("inspect", run))
    assert line == (f"error: folder {str(run)!r} cannot be written (Read-only file system); inspect writes its "
                    f"pictures into {str(run / 'inspect')!r}")


# ---------------------------------------------------------------- the numbers, on constructed inputs


def test_ece_of_a_perfectly_calibrated_predictor_is_zero():
    # in each bin, the predictions at confidence c are right exactly a fraction c of the time
    confidence, correct = [], []
    for c, n_right, n in ((0.25, 1, 4), (0.55, 11, 20), (0.75, 3, 4), (0.95, 19, 20), (1.0, 5, 5)):
        confidence += [c] * n
        correct += [True] * n_right + [False] * (n - n_right)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)
    # and a large sample drawn from a calibrated predictor: only sampling noise remains
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 200_000)
    assert expected_calibration_error(conf, rng.random(200_000) < conf) < 0.005


def test_ece_of_an_overconfident_predictor_is_large():
    assert expected_calibration_error([0.99] * 100, [True] * 50 + [False] * 50) == pytest.approx(0.49)
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 100_000)
    right = rng.random(100_000) < conf - 0.3  # 30 points less accurate than it claims, everywhere
    assert expected_calibration_error(conf, right) == pytest.approx(0.3, abs=0.01)


def test_reliability_bins():
    rel = reliability([0.05, 0.1, 0.5, 0.5000001, 0.95, 1.0], [True, False, True, True, False, True])
    assert rel.counts == [2, 0, 0, 0, 1, 1, 0, 0, 0, 2]  # right-closed: 0.1 in (0, 0.1], 0.5 in (0.4, 0.5]
    assert rel.accuracy[0] == 0.5 and rel.accuracy[1] is None and rel.accuracy[9] == 0.5
    assert rel.confidence[9] == pytest.approx(0.975)
    # ECE by hand: (2/6)|0.5-0.075| + (1/6)|1-0.5| + (1/6)|1-0.5000001| + (2/6)|0.5-0.975|
    expected = (2 * 0.425 + 0.5 + 0.4999999 + 2 * 0.475) / 6
    assert rel.ece == pytest.approx(expected)


def test_the_dashed_all_classes_line_runs_behind_the_bars_and_their_labels():
    """It was drawn over them, crossing the white labels of every bar that reached past it."""
    from fashionmlp.plots.model import per_class_figure

    figure = per_class_figure([0.9] * 10, [], 0.85, "t")
    left = figure.axes[0]
    dashed = [line for line in left.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    assert dashed[0].get_zorder() < min(bar.get_zorder() for bar in left.patches)
    assert dashed[0].get_zorder() < min(text.get_zorder() for text in left.texts)


def test_nan_confidences_fall_in_no_bin():
    """A checkpoint with NaN weights: every NaN confidence was cast into the 0.9-1.0 bin (a confident model)."""
    with np.errstate(invalid="raise"):  # and no cast of NaN to an integer
        rel = reliability([np.nan, 0.95, np.nan, 0.15], [False, True, False, False])
    assert rel.counts == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1] and rel.nonfinite == 2
    assert rel.ece is None  # no error can be said of predictions that are not numbers (all-NaN read as 0.00%)
    every = reliability([np.nan] * 3, [False] * 3)
    assert every.counts == [0] * 10 and every.ece is None and every.nonfinite == 3
    title = " ".join(calibration_figure(every, "t").axes[0].get_title().split())  # fit() wraps it
    assert "no calibration error: 3 predictions not finite (NaN weights?), left out of the bars" in title
    assert "%" not in title


def test_confident_mistakes_on_constructed_probabilities():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95], [0.7, 0.3]])
    labels = np.array([1, 1, 1, 0, 0])  # wrong: 0 (0.9), 2 (0.6), 3 (0.95)
    assert confident_mistakes(probs, labels).tolist() == [3, 0, 2]
    assert confident_mistakes(probs, labels, k=2).tolist() == [3, 0]
    assert confident_mistakes(probs, np.array([0, 1, 0, 1, 0])).tolist() == []


def test_confused_pairs_count_both_directions():
    cm = np.diag([50] * 10)
    cm[6, 0], cm[0, 6] = 30, 12  # Shirt -> T-shirt/top 30, the reverse 12
    cm[4, 2] = 20
    pairs = confused_pairs(cm, k=2)
    assert pairs == [{"classes": ["T-shirt/top", "Shirt"], "total": 42, "first_as_second": 12,
                      "second_as_first": 30},
                     {"classes": ["Pullover", "Coat"], "total": 20, "first_as_second": 0, "second_as_first": 20}]


def test_percent_never_rounds_a_wrong_answer_up_to_certainty():
    assert percent(0.99996) == ">99.99%" and percent(1.0) == "100.00%" and percent(0.5) == "50.00%"
    assert percent(0.99997, 1) == ">99.9%" and percent(0.996, 0) == ">99%" and percent(0.9994, 1) == "99.9%"
    assert percent(3e-5, 1) == "<0.1%" and percent(0.0, 1) == "0.0%"
    from fashionmlp.inference import _format_top

    assert _format_top("test image 0", [("Bag", 0.99997), ("Shirt", 3e-5)]) == "test image 0: Bag >99.9%, Shirt <0.1%"


# ---------------------------------------------------------------- the figures' layout


def test_mlp_weights_grid():
    weights = np.random.default_rng(0).normal(size=(32, 784))
    fig = mlp_weights_figure(weights, "t")
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == 32 and grid_shape(32) == (6, 6)
    assert all(ax.get_subplotspec().get_geometry()[:2] == (6, 6) for ax in tiles)
    for k, ax in enumerate(tiles):  # row-major, unit k in cell k
        assert ax.get_subplotspec().num1 == k
        assert np.array_equal(ax.images[0].get_array(), weights[k].reshape(28, 28))
    low, high = tiles[0].images[0].get_clim()
    assert low == -high and high == pytest.approx(np.percentile(np.abs(weights), 99))  # centred at 0
    assert len([ax for ax in fig.axes if not ax.images]) == 6 * 6 - 32 + 1  # empty cells + the colour bar


def test_cnn_weights_layout():
    rng = np.random.default_rng(0)
    n = 3
    fig = cnn_weights_figure(rng.normal(size=(4, 1, 3, 3)), rng.integers(0, 255, (n, 28, 28)), [0, 5, 9],
                             rng.random((n, 4, 14, 14)), rng.random((n, 8, 7, 7)), "t")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 1 + 3 * n  # the filters, then per image: itself, block 1, block 2
    filters = shown[0].images[0].get_array()
    assert filters.shape == (3, 4 * 4 - 1)  # 4 filters of 3x3 in one row, 1-pixel gaps
    assert [ax.get_ylabel() for ax in shown[1::3]] == ["T-shirt/top", "Sandal", "Ankle boot"]
    assert shown[2].images[0].get_array().shape == (14, 8 * 15 - 1)  # 4 maps of 14x14, 8 per row
    assert shown[3].images[0].get_array().shape == (7, 8 * 8 - 1)


def test_mosaic_places_tiles_row_major_with_gaps():
    tiles = np.arange(5 * 2 * 2, dtype=float).reshape(5, 2, 2)
    m = mosaic(tiles, 3)
    assert m.shape == (2 * 3 - 1, 3 * 3 - 1)
    assert np.array_equal(m[0:2, 3:5], tiles[1]) and np.array_equal(m[3:5, 3:5], tiles[4])
    assert np.isnan(m[2]).all() and np.isnan(m[3:5, 6:8]).all()


def test_inspect_out_draws_a_run_it_cannot_write_elsewhere(mlp_run, tmp_path, monkeypatch):
    """A read-only run (a shared copy) could not be inspected at all: --out DIR takes the pictures elsewhere. It
    refuses a folder inside the run, and one holding other files (an inspection replaces its own files there:
    TensorBoard logs, numbered folders), a run folder among them."""
    run = copy_run(mlp_run, tmp_path / "run")
    out = tmp_path / "pictures"
    real = Path.mkdir

    def read_only(self, *args, **kwargs):  # nothing can be made inside the run (chmod does not stop root)
        if self.resolve().is_relative_to(run.resolve()):
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = cli("inspect", run, "--out", out)
    assert result.exit_code == 0, result.output
    assert PNGS | {"summary.json"} <= {p.name for p in out.iterdir()} and not (run / "inspect").exists()
    assert json.loads((out / "summary.json").read_text())["run"] == str(run)
    again = cli("inspect", run, "--out", out)  # its own folder: replaced
    assert again.exit_code == 0 and len(list(out.glob("events.out.tfevents.*"))) == 1, again.output
    inside = one_error_line(cli("inspect", run, "--out", run / "checkpoints"))
    assert inside.startswith(f"error: --out {str(run / 'checkpoints')!r} is inside the run folder")
    stranger = tmp_path / "logs"
    (stranger / "2024").mkdir(parents=True)
    (stranger / "events.out.tfevents.1").write_text("someone's")
    for other in (stranger, mlp_run):
        line = one_error_line(cli("inspect", run, "--out", other))
        assert line == f"error: --out {str(other)!r} holds other files; give a new or empty folder, or one an " \
                       "inspection wrote"
    assert (stranger / "2024").is_dir() and (stranger / "events.out.tfevents.1").read_text() == "someone's"


def test_replacing_an_inspection_is_all_or_nothing_and_a_late_stop_is_only_noted(mlp_inspected, tmp_path,
                                                                                 monkeypatch):
    """The old files were deleted before the new ones moved in: a failure between left neither inspection. And a
    Ctrl-C in those milliseconds said the folder was as before, though the new files were in place."""
    import signal

    from fashionmlp import inspection

    run = copy_run(mlp_inspected[0].parent, tmp_path / "run", keep_inspect=True)
    out = run / "inspect"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    real, failed = os.replace, []

    def fails_on_the_summary(src, dst):  # the new summary's move in (after the pictures'), once
        if Path(dst) == out / "summary.json" and not failed:
            failed.append(src)
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fails_on_the_summary)
    result = cli("inspect", run, "--checkpoint", "best")
    assert result.exit_code == 2 and "cannot be written: No space left on device" in result.stderr
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # the last inspection, whole
    monkeypatch.setattr(os, "replace", real)

    def ctrl_c_while_moving(src, dst):
        if Path(dst).name == "summary.json" and Path(dst).parent == out:
            os.kill(os.getpid(), signal.SIGINT)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", ctrl_c_while_moving)
    late = cli("inspect", run, "--checkpoint", "best")
    assert late.exit_code == 0, late.output
    assert f"note: {inspection.LATE_STOP}" in late.stderr
    assert json.loads((out / "summary.json").read_text())["checkpoint"] == "best"


def test_a_stopped_first_inspection_does_not_lock_out_its_out_folder(mlp_run, tmp_path, monkeypatch):
    """A Ctrl-C before any file was written left DIR/.lock, and the next --out DIR was refused as a folder
    holding other files."""
    from fashionmlp import inspection

    out = tmp_path / "pictures"

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(inspection, "_tensorboard", ctrl_c)
        stopped = cli("inspect", mlp_run, "--out", out)
    assert stopped.exit_code == 130 and {p.name for p in out.iterdir()} == {".lock"}
    again = cli("inspect", mlp_run, "--out", out)
    assert again.exit_code == 0, again.output
