"""`fashionmlp lr-find`: the learning-rate range test on the tiny data set."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashionmlp.lrfind import MAX_STEPS, RangeTest, lr_schedule, smoothing_beta, steepest_descent

from helpers import cli, run_dir_of

FILES = {"config.yaml", "lr_find.csv", "lr_find.json", "lr_find.png"}


def read_csv(folder: Path) -> list[dict[str, float]]:
    with open(folder / "lr_find.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    return [{k: float(v) for k, v in row.items()} for row in rows]


def lr_find(config: Path, runs: Path, *args):
    return cli("lr-find", "--config", config, "--runs-dir", runs, *args)


# ---------------------------------------------------------------- the pure parts


def test_schedule_is_exponential_from_start_to_end():
    lrs = lr_schedule(1e-6, 10.0, 200)
    assert len(lrs) == 200 and lrs[0] == pytest.approx(1e-6, rel=1e-12) and lrs[-1] == pytest.approx(10, rel=1e-12)
    assert np.diff(np.log(lrs)) == pytest.approx(np.full(199, math.log(1e7) / 199), rel=1e-9)
    assert lr_schedule(0.1, 1.0, 1).tolist() == [0.1]
    for start, end, steps in ((1e-6, 10.0, 2), (1e6, 1e12, 30), (1e-7, 10.0, 200)):  # the ends as given
        lrs = lr_schedule(start, end, steps)
        assert (lrs[0], lrs[-1]) == (start, end)
    extreme = lr_schedule(1e-300, 1e300, 5)  # end/start overflows a float; the schedule must not
    assert np.isfinite(extreme).all() and extreme[2] == pytest.approx(1.0)


def test_smoothing_spans_a_twentieth_of_the_steps():
    assert smoothing_beta(200) == pytest.approx(0.9)
    assert smoothing_beta(1000) == pytest.approx(0.98)
    assert smoothing_beta(20) == 0.0 and smoothing_beta(1) == 0.0


def test_steepest_descent_finds_the_steepest_point_before_the_minimum():
    lrs = lr_schedule(1e-5, 10.0, 121)  # 20 points per decade
    x = np.log10(lrs)
    # falls fastest at lr 1e-2, bottoms out near lr 1, then rises steeply (steeper than it ever fell)
    loss = 2 - np.tanh(x + 2) + np.where(x > 0, 40 * x ** 2, 0.0)
    assert steepest_descent(lrs.tolist(), loss.tolist()) == pytest.approx(1e-2, rel=0.13)  # within one step
    test = RangeTest(lrs.tolist(), loss.tolist(), loss.tolist(), "blew_up", 0.0)
    assert test.min_lr == pytest.approx(lrs[int(np.argmin(loss))])
    assert test.fell and test.steepest_lr == steepest_descent(lrs.tolist(), loss.tolist())
    flat = RangeTest(lrs.tolist(), (2.3 + 0.01 * np.sin(x * 40)).tolist(), (2.3 + 0.01 * np.sin(x * 40)).tolist(),
                     "end", 0.0)
    assert not flat.fell and flat.steepest_lr is None  # noise on a flat curve is no suggestion
    assert steepest_descent([0.1], [2.0]) is None  # one point has no slope
    assert steepest_descent([0.1, 0.2], [math.nan, math.nan]) is None


def test_the_suggestion_is_never_the_minimum_itself():
    """The window ended at the minimum, whose one-sided difference took the whole fall into it: 3 of 12 short
    range tests (30-50 steps) suggested the minimum's lr, a step before the loss blew up (0.838, then 8.9 at
    1.27)."""
    lrs = lr_schedule(1e-3, 1.0, 30).tolist()
    smoothed = [2.0 - 0.01 * i for i in range(25)] + [1.0, 8.9]  # a sudden last fall into the minimum, then up
    assert steepest_descent(lrs, smoothed) == lrs[24]  # the fall from step 23 to 25 is centred on step 24
    test = RangeTest(lrs[:27], smoothed, smoothed, "blew_up", 0.0, planned=30)
    assert test.suggested_lr == lrs[24] != test.min_lr == lrs[25]
    assert steepest_descent(lrs[:26], smoothed[:26]) == lrs[24]  # the minimum as the last point: the same


# ---------------------------------------------------------------- the command


def test_writes_only_its_folder_and_no_checkpoint(write_config, tmp_path):
    runs = tmp_path / "runs"
    (runs / "older-run").mkdir(parents=True)
    before = {p.relative_to(runs) for p in runs.rglob("*")}
    result = lr_find(write_config(optimizer={"name": "sgd", "lr": 0.05}), runs, "--steps", 30, "--start", 1e-4,
                     "--end", 1)
    assert result.exit_code == 0, result.output
    out = run_dir_of(result)
    assert out.parent == runs and re.fullmatch(r"lr-find-tiny-\d{8}-\d{6}", out.name)
    after = {p.relative_to(runs) for p in runs.rglob("*")}
    assert after - before == {out.relative_to(runs) / f for f in FILES} | {out.relative_to(runs)}
    assert not list(out.rglob("*.pt")) and not list(out.glob("events.*"))
    rows = read_csv(out)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0]["lr"] == pytest.approx(1e-4) and all(math.isfinite(r["loss"]) for r in rows[:-1])
    summary = json.loads((out / "lr_find.json").read_text())
    assert summary["steps_run"] == len(rows) and summary["optimizer"] == "sgd" and summary["seed"] == 0
    assert summary["threads"] == 1  # the curve repeats bit for bit at one thread count: it is recorded
    line = result.stdout.splitlines()[0]
    suggested = summary["suggested_lr"]
    assert suggested in [r["lr"] for r in rows]
    assert f"--set optimizer.lr={suggested:.3g}" in line and f"{summary['min_lr'] / 10:.3g}" in line
    assert Image.open(out / "lr_find.png").size == (800, 520)


def test_deterministic_for_a_seed(write_config, tmp_path):
    config = write_config(model={"name": "mlp", "hidden": [32, 32], "dropout": 0.2})  # dropout draws RNG too
    runs = [run_dir_of(lr_find(config, tmp_path / name, "--steps", 40)) for name in ("a", "b")]
    first, second = ((r / "lr_find.csv").read_bytes() for r in runs)
    assert first == second and len(first.splitlines()) > 10
    other = run_dir_of(lr_find(config, tmp_path / "c", "--steps", 40, "--set", "seed=1"))
    assert (other / "lr_find.csv").read_bytes() != first


@pytest.mark.parametrize("recipe", [{}, {"data": {"shift": 2, "flip": True}, "train": {"label_smoothing": 0.1},
                                     "model": {"batchnorm": True}}], ids=["plain", "augmented-smoothed-batchnorm"])
def test_starts_from_the_configs_initial_weights_and_batches(write_config, tmp_path, recipe):
    """The first loss of the range test is the first training step's loss: the same weights, the same batch
    (augmented as in train), the same loss."""
    config = write_config(**{**recipe, "train": {"epochs": 1, **recipe.get("train", {})}})
    trained = run_dir_of(cli("train", "--config", config, "--runs-dir", tmp_path / "train"))
    first_train_loss = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)["step_losses"][0]
    rows = read_csv(run_dir_of(lr_find(config, tmp_path / "lr", "--steps", 5)))
    assert rows[0]["loss"] == pytest.approx(float(first_train_loss), rel=1e-6)


def test_stops_when_the_loss_blows_up(write_config, tmp_path):
    result = lr_find(write_config(optimizer={"name": "sgd", "lr": 0.01}), tmp_path / "runs", "--end", 1e6,
                     "--steps", 400)
    assert result.exit_code == 0, result.output
    out = run_dir_of(result)
    rows = read_csv(out)
    summary = json.loads((out / "lr_find.json").read_text())
    assert len(rows) < 400 and summary["stop"] in ("blew_up", "non_finite")
    last, best = rows[-1], min(r["smoothed_loss"] for r in rows[:-1])
    assert not math.isfinite(last["loss"]) or last["smoothed_loss"] > 4 * best
    # every earlier step was within the rule, else it would have stopped there
    assert all(r["smoothed_loss"] <= 4 * min(q["smoothed_loss"] for q in rows[:i + 1])
               for i, r in enumerate(rows[:-1]))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("optimizer", [{"name": "sgd"}, {"name": "nesterov", "momentum": 0.9}, {"name": "adam"}])
def test_every_optimizer_and_model(write_config, tmp_path, model, optimizer):
    sections = {"model": {"name": model, "hidden": [16], "channels": [4, 8]}, "optimizer": optimizer}
    result = lr_find(write_config(**sections), tmp_path / "runs", "--steps", 20, "--start", 1e-4, "--end", 1)
    assert result.exit_code == 0, result.output
    rows = read_csv(run_dir_of(result))
    assert 2 <= len(rows) <= 20 and rows[0]["lr"] == pytest.approx(1e-4)
    lowest = min(r["smoothed_loss"] for r in rows)
    assert lowest < rows[0]["loss"]  # the optimizer did train the network
    if lowest <= 0.9 * rows[0]["smoothed_loss"]:  # enough of a fall for a suggestion (the tiny CNN with SGD: not)
        assert "--set optimizer.lr=" in result.stdout
    else:
        assert result.stdout.startswith("no suggestion: the smoothed loss never fell below 90%")


def test_no_suggestion_where_the_loss_never_falls(write_config, tmp_path):
    result = lr_find(write_config(optimizer={"name": "sgd"}), tmp_path / "runs", "--start", 1e-12, "--end", 1e-11,
                     "--steps", 30)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("no suggestion: the smoothed loss never fell below 90% of its first value "
                                    "between lr 1e-12 and 1e-11; try a larger --end")
    summary = json.loads((run_dir_of(result) / "lr_find.json").read_text())
    assert summary["suggested_lr"] is None and summary["steps_run"] == 30


def test_too_short_for_a_suggestion_says_so(write_config, tmp_path):
    result = lr_find(write_config(), tmp_path / "runs", "--steps", 1)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("no suggestion: 1 step(s) are too few to judge")
    assert len(read_csv(run_dir_of(result))) == 1


@pytest.mark.parametrize("args, message", [
    (["--steps", 6], "no suggestion: 6 step(s) are too few to judge (a fall and a rise of the loss need at least 20); "
                     "use more --steps (the default is 200)"),
    (["--steps", 3], "no suggestion: 3 step(s) are too few to judge"),  # it said "try a larger --end" (end 10)
    (["--steps", 40, "--start", 1e-3, "--end", 1e-2], "no suggestion: the smoothed loss was still falling at the end "
                                                      "of the range (lr 0.01): its minimum lies beyond --end"),
    (["--steps", 200, "--start", 10, "--end", 1e6], "no suggestion: the loss blew up after"),
], ids=["6 steps", "3 steps", "minimum beyond --end", "blew up at once"])
def test_no_suggestion_from_too_little_evidence(write_config, tmp_path, args, message):
    """Issue 24: --steps 6 suggested lr 10 (which diverges), --end 0.01 the last lr of the range."""
    result = lr_find(write_config(optimizer={"name": "nesterov", "lr": 0.01, "momentum": 0.9}), tmp_path / "runs",
                     *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(message), result.stdout
    summary = json.loads((run_dir_of(result) / "lr_find.json").read_text())
    assert summary["suggested_lr"] is None and summary["no_suggestion"] in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--start", "0"], "--start 0.0: a learning rate must be > 0"),
    (["--start", "-1e-3"], "--start -0.001: a learning rate must be > 0"),
    (["--start", "nan"], "--start nan: not a finite number"),
    (["--end", "inf"], "--end inf: not a finite number"),
    (["--start", "abc"], "--start 'abc': not a number"),
    (["--start", "1", "--end", "1"], "--end 1 must be larger than --start 1"),
    (["--start", "0.1", "--end", "0.01"], "--end 0.01 must be larger than --start 0.1"),
    # numpy's divide-by-zero warnings and a suggestion from equal lrs; 200 steps over 14 different lrs
    (["--start", "0.1", "--end", "0.10000000000000002", "--steps", "30"],
     "--start 0.1 and --end 0.10000000000000002 are too close for 30 different learning rates"),
    (["--start", "0.01", "--end", "0.0100000000000001"], "--start 0.01 and --end 0.0100000000000001 are too close"),
    (["--steps", "0"], f"--steps 0: out of range; allowed: 1 to {MAX_STEPS}"),
    (["--steps", str(MAX_STEPS + 1)], f"--steps {MAX_STEPS + 1}: out of range; allowed: 1 to {MAX_STEPS}"),
    (["--steps", "1.5"], "--steps '1.5': not a whole number"),
    (["--start", "1e-400"], "--start '1e-400' is too small for a 64-bit float (it reads as 0.0)"),
    (["--end", "1e400"], "--end '1e400' is too large for a 64-bit float (it reads as infinity)"),
    (["--start", "1e-13"], "--start 1e-13: out of range; allowed: 1e-12 to 1e+12"),
    (["--end", "2e12"], "--end 2e+12: out of range; allowed: 1e-12 to 1e+12"),
    (["--set", "name=../outside"], "name: '../outside' contains '/'; a run name is one folder name"),
    (["--set", "name=a/b"], "name: 'a/b' contains '/'; a run name is one folder name"),
    (["--set", "optimizer.lr=-1"], "optimizer.lr: -1.0 is out of range"),
])
def test_bad_options_are_one_line_and_leave_nothing(write_config, tmp_path, args, message):
    runs = tmp_path / "runs"
    result = lr_find(write_config(), runs, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output
    assert not runs.exists()
    assert not (tmp_path / "outside").exists() and not list(tmp_path.glob("*outside*"))


def test_config_is_required(tmp_path):
    result = cli("lr-find", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.output.startswith("error: --config is required")
    assert not (tmp_path / "runs").exists()


def test_progress_on_stderr_and_the_y_label_names_label_smoothing(write_config, tmp_path):
    result = lr_find(write_config(train={"label_smoothing": 0.1}), tmp_path / "runs", "--steps", 40)
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("lr-find: step ")]
    assert progress and progress[0].startswith("lr-find: step 4/40  lr ")
    assert not any(line.startswith("lr-find:") for line in result.stdout.splitlines())

    from fashionmlp.lrfind import RangeTest
    from fashionmlp.plots.lrfind import lr_find_figure

    test = RangeTest([1e-3, 1e-2], [2.3, 2.2], [2.3, 2.25], "end", 0.0, 2)
    assert lr_find_figure(test, None, None, label_smoothing=0.1).axes[0].get_ylabel() == \
        "training loss (cross-entropy with label\nsmoothing 0.1)"  # wrapped: it ran off the picture's top
    assert lr_find_figure(test, None, None).axes[0].get_ylabel() == "training loss (cross-entropy)"
    from fashionmlp.config.schema import DistillConfig

    taught = DistillConfig(teacher="runs/t", temperature=2.0, alpha=0.7)  # it said cross-entropy, starting at ~1
    assert lr_find_figure(test, None, None, distill=taught).axes[0].get_ylabel() == \
        "training loss (0.7 T² KL to the teacher\n+ 0.3 cross-entropy, T = 2)"


@pytest.mark.parametrize("start, end", [(1e-3, 1.4e-3), (1e-12, 1.39e-12), (0.02, 0.19), (1e-3, 1.00005e-3),
                                        (1e-3, 9.9e-3), (1e-12, 1.1e-12)])
def test_a_range_within_a_decade_has_few_short_tick_labels(start, end):
    """--start 0.001 --end 0.0014 labelled every minor tick as 1.3×10⁻³, 1.35×10⁻³, ...: they ran into each
    other (seven on an interrupted test from 1e-12)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fashionmlp.plots.lrfind import lr_find_figure

    lrs = list(np.geomspace(start, end, 30))
    losses = list(np.linspace(2.3, 1.8, 30))
    fig = lr_find_figure(RangeTest(lrs, losses, losses, "end", 0.98, 30), lrs[10], None)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    shown = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
             if t.get_text() and start <= t.get_position()[0] <= end]
    texts = [t.get_text() for t in shown]
    assert 2 <= len(shown) <= 6 and not any("10^" in t or "times" in t for t in texts), texts
    assert len(set(texts)) == len(texts), texts  # 1e-3 to 1.00005e-3 read "0.001" four times
    # each label says its tick's value: 1.025e-12 and 1.075e-12 read "1.02e-12" and "1.07e-12", as if uneven
    assert all(float(t.get_text()) == pytest.approx(t.get_position()[0], rel=1e-6) for t in shown), texts
    boxes = sorted((t.get_window_extent(renderer) for t in shown), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))  # no two labels overlap


def test_a_one_step_range_test_draws_its_point():
    """--steps 1: a line of one point, drawn without a marker, left the plot empty."""
    from fashionmlp.plots.lrfind import lr_find_figure

    one = RangeTest([1e-6], [2.3], [2.3], "end", 0.0, 1)
    figure = lr_find_figure(one, None, None)
    smoothed = [line for line in figure.axes[0].get_lines() if line.get_linewidth() == 1.8]
    assert len(smoothed) == 1 and smoothed[0].get_marker() == "o"
    figure.canvas.draw()  # its lr is the one tick (the ticks were 5e-06 and 1e-05 around a point at 1e-06)
    ticks = [(t.get_position()[0], t.get_text()) for t in figure.axes[0].get_xticklabels() if t.get_text()]
    assert ticks == [(1e-6, "1e-06")], ticks


def test_the_picture_says_why_there_is_no_suggestion_and_marks_only_lrs_tested():
    """No suggestion was a flat line without a word; 6 steps across 7 decades were a line ending low at lr 10; a
    minimum/10 outside the lrs tested stretched the axis to it."""
    from fashionmlp.plots.lrfind import lr_find_figure

    six = RangeTest(list(np.geomspace(1e-6, 10, 6)), [2.3] * 5 + [1.8], [2.3] * 5 + [1.8], "end", 0.0, 6)
    fig = lr_find_figure(six, None, None, config_lr=1e-2, no_suggestion="6 step(s) are too few to judge")
    ax = fig.axes[0]
    assert any(t.get_text() == "no suggestion: 6 step(s) are too few to judge" for t in ax.texts)
    assert [line.get_marker() for line in ax.get_lines() if line.get_linewidth() == 1.8] == ["o"]
    wide = RangeTest(list(np.geomspace(0.5, 2, 30)), [2.3] * 30, [2.3] * 30, "end", 0.0, 30)
    fig = lr_find_figure(wide, 1.0, 0.07)  # its minimum / 10, 0.007, is below the lrs tested
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "minimum of smoothed loss / 10: 0.007 (outside the lrs tested)" in texts
    assert fig.axes[0].get_xlim()[0] > 0.3 and not fig.axes[0].texts


def test_notes_say_what_the_test_does_not_do_as_train(write_config, tmp_path):
    """The test sets the lr itself (a one-cycle config's schedule and warm-up are not used: its suggestion replaced
    the schedule's peak without a word), and 1000 steps over 200 images measured memorising."""
    tuned = write_config(optimizer={"name": "nesterov", "lr": 0.1, "momentum": 0.9, "schedule": "onecycle",
                                    "warmup": 0.2})
    result = lr_find(tuned, tmp_path / "runs", "--steps", 40)  # 320 images at batch 32: 4 passes
    assert result.exit_code == 0, result.output
    assert ("note: the range test sets the learning rate itself, so the config's schedule onecycle and warm-up 0.2 "
            "are not used: its suggestion is for a constant lr (optimizer.lr is that schedule's peak)") in result.stderr
    assert "note: the 40 steps pass over the 320 training images 4.0 times" in result.stderr
    notes = json.loads((run_dir_of(result) / "lr_find.json").read_text())["notes"]
    assert len(notes) == 2 and notes[1].startswith("the 40 steps pass over")
    plain = lr_find(write_config(name="plain.yaml"), tmp_path / "runs", "--steps", 10)  # one pass, constant lr
    assert plain.exit_code == 0 and "note:" not in plain.stderr
    # a batch larger than the data is the whole set: 30 steps are 30 passes (it said 3840.0 over 1 image)
    whole = lr_find(write_config(name="whole.yaml", train={"batch_size": 100000}), tmp_path / "runs", "--steps", 30)
    assert "note: the 30 steps pass over the 320 training images 30.0 times" in whole.stderr, whole.output


def test_an_interrupted_test_keeps_what_it_measured(write_config, tmp_path, monkeypatch):
    """Ctrl-C exited 130 with no word and no folder: every measured step was lost. A real SIGINT, during step 8."""
    import os
    import signal

    import fashionmlp.lrfind as lrfind

    steps = []

    def step_then_ctrl_c(*args, **kwargs):
        steps.append(1)
        if len(steps) == 8:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    real = lrfind.train_step
    monkeypatch.setattr(lrfind, "train_step", step_then_ctrl_c)
    result = lr_find(write_config(), tmp_path / "runs", "--steps", 40)
    assert result.exit_code == 130, result.output
    out = run_dir_of(result)
    assert len(read_csv(out)) == 8 and json.loads((out / "lr_find.json").read_text())["stop"] == "interrupted"
    assert "no suggestion: interrupted after 8 of 40 steps" in result.stdout and (out / "lr_find.png").is_file()
    assert "SIGINT: stopping after this step" in result.stderr
