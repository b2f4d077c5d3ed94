"""`fashionmlp compare-optimizers` on the tiny data set."""

import csv
import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fashionmlp.config import read_yaml
from fashionmlp.errors import ConfigError
from fashionmlp.study import default_study_dict, load_study

from helpers import cli, run_dir_of, scalars, summary

ROOT = Path(__file__).resolve().parents[1]


def study_config(tmp_path, tiny_data, **extra) -> Path:
    raw = default_study_dict("mlp")
    raw.update({"device": "cpu", "model": {"name": "mlp", "hidden": [32, 32]},
                "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 64, "threads": 1},
                "data": {"dir": str(tiny_data), "verify_md5": False, "download": False}, **extra})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class StopInEpoch2:
    """A stop request that comes in the second epoch of a tiny study's first run (10 steps an epoch)."""

    reason = "interrupted"
    asked = 0

    @property
    def requested(self) -> bool:
        self.asked += 1
        return self.asked > 10 + 3


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_data):
    tmp = tmp_path_factory.mktemp("study")
    result = cli("compare-optimizers", "--config", study_config(tmp, tiny_data), "--runs-dir", tmp / "runs",
                 "--set", "variants.sgd.lr=1e6")  # absurd lr: sgd must diverge, the others go on
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1]), result


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_shipped_study_configs_match_the_builtin_default(model):
    shipped = load_study(read_yaml(ROOT / "configs" / f"compare_{model}.yaml"))
    builtin = load_study(default_study_dict(model))
    assert shipped == builtin
    assert {n: (c.optimizer.name, c.optimizer.lr, c.optimizer.momentum) for n, c in shipped.variants.items()} == {
        "sgd": ("sgd", 0.01, 0.0), "nesterov": ("nesterov", 0.01, 0.9), "adam": ("adam", 0.01, 0.0),
        "adam_lr1": ("adam", 1.0, 0.0)}


def test_every_variant_has_a_full_run_folder(study):
    study_dir, _ = study
    assert study_dir.name.startswith("compare-mlp-")
    for name in ("sgd", "nesterov", "adam", "adam_lr1"):
        run = study_dir / name
        assert (run / "config.yaml").is_file() and (run / "summary.json").is_file(), name
        assert list(run.glob("events.out.tfevents.*"))


def test_same_initial_weights_and_first_batch(study):
    study_dir, _ = study
    prints = [summary(study_dir / n)["fingerprints"] for n in ("sgd", "nesterov", "adam", "adam_lr1")]
    assert all(p == prints[0] for p in prints) and len(prints[0]["initial_weights"]) == 64
    lrs = {n: yaml.safe_load((study_dir / n / "config.yaml").read_text())["optimizer"]["lr"]
           for n in ("sgd", "adam_lr1")}
    assert lrs == {"sgd": 1e6, "adam_lr1": 1.0}


def test_divergence_is_contained(study):
    study_dir, result = study
    s = summary(study_dir / "sgd")
    assert s["status"] == "diverged" and s["diverged"]["epoch"] == 1 and s["diverged"]["step"] >= 1
    assert summary(study_dir / "nesterov")["status"] == "completed"
    assert "diverged" in result.stdout


def test_summary_table_sorted_with_columns(study):
    study_dir, _ = study
    with open(study_dir / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["optimizer", "lr", "momentum", "n", "runs", "final_train_loss", "final_test_loss",
                             "final_test_accuracy", "final_test_accuracy_std", "best_test_accuracy",
                             "best_test_accuracy_std", "best_epoch", "seconds_per_epoch", "status"]
    assert {r["optimizer"] for r in rows} == {"sgd", "nesterov", "adam", "adam_lr1"}
    accs = [r["final_test_accuracy"] for r in rows]
    finite = [float(a) for a in accs if a]
    assert finite == sorted(finite, reverse=True) and accs[len(finite):] == [""]  # no mean (diverged) last
    statuses = {r["optimizer"]: r["status"] for r in rows}
    assert statuses["sgd"] == "diverged" and statuses["nesterov"] == "completed"
    md = (study_dir / "summary.md").read_text()
    assert md.count("\n| ") == 5 and "final test acc" in md  # header + 4 variants
    assert (study_dir / "comparison.png").stat().st_size > 10_000


def test_tensorboard_runs_overlay(study):
    study_dir, _ = study
    from helpers import accumulator

    for name in ("nesterov", "adam"):
        assert "accuracy/test" in scalars(study_dir / name)
        assert "_hparams_/session_start_info" in accumulator(study_dir / name).PluginTagToContent("hparams")


def test_seeds_give_mean_and_std(tmp_path, tiny_data):
    result = cli("compare-optimizers", "--config", study_config(tmp_path, tiny_data), "--runs-dir", tmp_path / "r",
                 "--optimizers", "adam,nesterov", "--seeds", "0,1", "--epochs", 1)
    assert result.exit_code == 0, result.output
    study_dir = Path(result.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in study_dir.iterdir() if p.is_dir()) == [
        "adam-seed0", "adam-seed1", "nesterov-seed0", "nesterov-seed1"]
    assert summary(study_dir / "adam-seed0")["fingerprints"] == summary(study_dir / "nesterov-seed0")["fingerprints"]
    assert summary(study_dir / "adam-seed0")["fingerprints"] != summary(study_dir / "adam-seed1")["fingerprints"]
    with open(study_dir / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["n"] == "2" for r in rows) and "±" in (study_dir / "summary.md").read_text()


def test_a_study_refuses_a_base_optimizer_override_it_would_ignore(tmp_path, tiny_data):
    """Each variant's optimizer section replaces the base's: --set optimizer.lr=... changed nothing, silently."""
    runs = tmp_path / "r"
    result = cli("compare-optimizers", "--config", study_config(tmp_path, tiny_data), "--runs-dir", runs,
                 "--set", "optimizer.lr=0.5")
    assert result.exit_code == 2 and "set it per variant, e.g. --set variants.adam.lr=..." in result.stderr
    assert not runs.exists()
    # written in the file, the same section was checked and then dropped: every variant ran a constant lr, no decay
    config = study_config(tmp_path, tiny_data, optimizer={"schedule": "onecycle", "warmup": 0.2, "weight_decay": 0.5})
    result = cli("compare-optimizers", "--config", config, "--runs-dir", runs)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and not runs.exists()
    assert "optimizer.schedule: 'onecycle' would be ignored: a study's optimizers are its variants" in result.stderr
    assert "e.g. variants.adam: {..., schedule: 'onecycle'}" in result.stderr
    # a training config with variants added: what every variant sets, or a default, is not lost and runs as before
    config = study_config(tmp_path, tiny_data, optimizer={"name": "adam", "lr": 0.5, "momentum": 0.0},
                          train={"epochs": 1, "batch_size": 32, "eval_batch_size": 64, "threads": 1})
    assert cli("compare-optimizers", "--config", config, "--runs-dir", runs, "--optimizers", "sgd").exit_code == 0


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--seeds", "0,,1", "an empty item (two commas together, or one at an end)"), ("--seeds", "1_0", "'1_0' is not a whole number"),
    ("--seeds", "+1", "'+1' is not a whole number"), ("--seeds", "1.5", "'1.5' is not a whole number"),
    ("--optimizers", "sgd,sgd", "sgd is listed more than once")])
def test_lists_are_read_as_written(tmp_path, tiny_data, option, value, why):
    """No guessing: Python's int() would take 1_0 as 10 and +1 as 1, and a blank item was silently dropped."""
    runs = tmp_path / "r"
    result = cli("compare-optimizers", "--config", study_config(tmp_path, tiny_data), "--runs-dir", runs,
                 option, value, "--epochs", 1)
    assert result.exit_code == 2 and result.stderr == f"error: {option} {value!r}: {why}" + (
        "; expected e.g. --seeds 0,1,2\n" if option == "--seeds" else "; give each once\n") and not runs.exists()


def test_model_and_a_set_model_name_that_contradict_it_are_refused(tmp_path):
    """--model cnn --set model.name=mlp trained an MLP with the CNN study's settings, silently (a config's
    model.name against --model was refused already)."""
    runs = tmp_path / "r"
    result = cli("compare-optimizers", "--model", "cnn", "--set", "model.name=mlp", "--runs-dir", runs)
    assert result.exit_code == 2 and result.stderr == "error: --model cnn contradicts --set model.name=mlp\n"
    assert not runs.exists()


@pytest.mark.parametrize("seeds", ["0,0", "0,2,0", "3, 3"])
def test_repeated_seeds_are_refused_before_any_folder(tmp_path, tiny_data, seeds):
    runs = tmp_path / "r"
    result = cli("compare-optimizers", "--config", study_config(tmp_path, tiny_data), "--runs-dir", runs,
                 "--optimizers", "sgd", "--seeds", seeds, "--epochs", 1)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --seeds") and "listed more than once" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not runs.exists()


@pytest.mark.parametrize("overrides,message", [
    (["variants.rmsprop.lr=1"], "no variant 'rmsprop'"),
    # the key as typed (it said 'optimizer.lrr', a key the user never wrote)
    (["variants.adam.lrr=1"], r"^--set 'variants.adam.lrr=1': unknown optimizer key 'variants.adam.lrr' \(did you mean 'lr'\?\)"),
    (["variants.adam.lr=-1"], "optimizer.lr: -1.0 is out of range"),
    (["variants.adam={lrr: 1}"], r"unknown optimizer key 'variants.adam.lrr' \(did you mean 'lr'\?\)"),
    (["variants.adam.epochs=3"], r"unknown optimizer key 'variants.adam.epochs' \(it is a key of another section: "
                                 r"train.epochs\)"),
    (["variants.adam=0.1"], r"expected variants.<name>.<optimizer key>=VALUE, or variants.<name>=\{"),
])
def test_bad_study_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_study(default_study_dict("mlp"), overrides)


def test_an_edit_of_a_variant_left_out_by_optimizers_is_refused():
    """--optimizers adam --set variants.sgd.lr=-5 ran with exit 0: the edit was neither checked nor used."""
    for edit in ("variants.sgd.lr=-5", "variants.adam_lr1.betas=[0.9,1.0]"):
        with pytest.raises(ConfigError, match=r"variant '(sgd|adam_lr1)' is not among --optimizers adam,nesterov, "
                                              r"so the edit would not be used"):
            load_study(default_study_dict("mlp"), [edit], only=["adam", "nesterov"])
    assert load_study(default_study_dict("mlp"), ["variants.adam.lr=0.1"], only=["adam"]).variants["adam"].optimizer.lr == 0.1


def test_a_mapping_edits_a_variants_section():
    """--set 'variants.adam={lr: 0.1}' was refused, though a mapping edits a section everywhere else."""
    study = load_study(default_study_dict("mlp"), ["variants.adam={lr: 0.1, weight_decay: 0.001}"])
    adam = study.variants["adam"].optimizer
    assert (adam.name, adam.lr, adam.weight_decay) == ("adam", 0.1, 0.001)  # the rest of the section kept
    assert study.variants["sgd"].optimizer == load_study(default_study_dict("mlp")).variants["sgd"].optimizer


@pytest.mark.parametrize("edit", ["variants={}", "variants=null", "variants={adam: {lr: 0.1}}"])
def test_a_set_of_variants_itself_says_how_to_edit_one(edit):
    """`--set 'variants={}'` said "unknown config key 'variants'", the study config's own key."""
    with pytest.raises(ConfigError, match=rf"^--set '{re.escape(edit)}': the variants are the study config's; edit "
                                          r"one's keys, e.g. --set variants.adam.lr=0.1 \(--optimizers picks"):
        load_study(default_study_dict("mlp"), [edit], only=["adam"])


def test_an_unknown_key_in_a_variant_section_is_named_as_written():
    raw = default_study_dict("mlp")
    raw["variants"]["adam"] = {"name": "adam", "lrr": 0.001}  # it said "unknown config key 'optimizer.lrr'"
    with pytest.raises(ConfigError, match=r"^unknown optimizer key 'variants.adam.lrr' \(did you mean 'lr'\?\)"):
        load_study(raw)


def test_failed_to_learn_on_real_data(real_data, tmp_path):
    result = cli("compare-optimizers", "--model", "mlp", "--epochs", 1, "--device", "cpu", "--data-dir", real_data,
                 "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    with open(Path(result.stdout.strip().splitlines()[-1]) / "summary.csv") as fh:
        rows = {r["optimizer"]: r for r in csv.DictReader(fh)}
    assert rows["adam_lr1"]["status"] == "failed to learn"
    assert float(rows["adam_lr1"]["final_test_accuracy"]) < 0.12
    for name in ("sgd", "nesterov", "adam"):
        assert rows[name]["status"] == "completed" and float(rows[name]["final_test_accuracy"]) > 0.7
    assert float(rows["nesterov"]["final_test_accuracy"]) > float(rows["sgd"]["final_test_accuracy"])


def test_comparison_bands_are_the_sample_std_and_epochs_are_whole():
    from fashionmlp.plots import comparison, seed_spread

    acc = np.array([[0.5, 0.6, 0.7], [0.6, 0.8, np.nan], [0.7, 0.7, 0.9]])
    mean, std = seed_spread(acc)
    assert mean.tolist() == pytest.approx([0.6, 0.7, 0.8])
    assert std.tolist() == pytest.approx([np.std([0.5, 0.6, 0.7], ddof=1), np.std([0.6, 0.8, 0.7], ddof=1),
                                          np.std([0.7, 0.9], ddof=1)])  # ddof 1, as the table's ± says
    assert np.isnan(seed_spread(np.array([[1.0], [np.nan]]))[1][0])  # one seed: no spread
    series = {"sgd": {"epochs": [1, 2, 3], "train_loss": acc + 1, "test_accuracy": acc, "status": "completed"}}
    fig = comparison(series, "t")
    ax_loss, ax_acc = fig.axes[:2]
    band = ax_acc.collections[0].get_paths()[0].vertices
    tops = {x: y for x, y in band if x in (1.0, 2.0, 3.0) and y > 100 * mean[int(x) - 1]}
    assert tops[1.0] == pytest.approx(100 * (mean[0] + std[0]))
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax_acc.get_xticks())  # no 1.2, 1.4 ... on a short study
    # a seed without epoch 3: the band there is over the seeds that reached it (it said "over 3 seeds")
    assert "band: mean ± sample std over the seeds at each epoch (up to 3)" in [
        t.get_text() for t in fig.legends[0].get_texts()]
    full = comparison({"sgd": {**series["sgd"], "test_accuracy": np.nan_to_num(acc, nan=0.9)}}, "t")
    assert "band: mean ± sample std over 3 seeds" in [t.get_text() for t in full.legends[0].get_texts()]
    assert ax_acc.get_legend() is None  # the legend sits below the panels, not over a curve


@pytest.mark.parametrize(("low", "high"), [(0.4, 2.3), (2.1, 2.3), (0.3, 20000.0)])
def test_log_scale_loss_axes_read_as_plain_numbers(low, high):
    """A loss range inside a decade was labelled 2.25×10⁰ and 6e-01 on every tick."""
    from fashionmlp.plots import comparison
    from fashionmlp.plots.run import loss_curve

    loss = np.array([[high, (low * high) ** 0.5, low]])
    fig = comparison({"sgd": {"epochs": [1, 2, 3], "train_loss": loss, "test_accuracy": loss * 0 + 0.5,
                              "status": "completed"}}, "t")
    history = [{"epoch": e, "train_loss": v, "test_loss": v, "test_accuracy": 0.5} for e, v in
               zip((1, 2, 3), loss[0])]
    curve = loss_curve(history, list(np.geomspace(high, low, 30)), "t")
    for ax in (fig.axes[0], curve.axes[0]):
        ax.figure.canvas.draw()
        labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
        assert labels and not any("times" in t or "e-" in t or "$" in t for t in labels), labels
        assert all(float(t.replace(",", "")) >= 1e6 for t in labels if "e+" in t), labels  # 1e+06 on: powers
        assert all(float(t.replace(",", "")) > 0 for t in labels)


@pytest.mark.parametrize(("low", "high", "expect"), [(1.5576, 1.5939, "1.575"), (0.17, 2000.0, "0.2"),
                                                     (0.9990, 1.0004, "0.9994"), (0.85, 1.55, "1.2")])
def test_log_loss_labels_are_distinct_and_reach_the_curves(low, high, expect):
    """Labels at 1.555, 1.56, 1.565 read "1.56", "1.56" (3 digits), the mean 1.575 sat on a "1.57"; a study
    whose failed variant reached 2,000 labelled 1, 10, 100, 1,000 only, its useful curves (0.17-1) unlabelled;
    a loss from 0.85 to 1.55 read 0.9 and 1 only (a log axis's ticks of that decade)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fashionmlp.plots import comparison

    loss = np.array([[high, (low * high) ** 0.5, low]])
    fig = comparison({"sgd": {"epochs": [1, 2, 3], "train_loss": loss, "test_accuracy": loss * 0 + 0.5,
                              "status": "completed"}}, "t")
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    bottom, top = ax.get_ylim()
    ticks = [(t.get_text(), t.get_position()[1]) for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
             if t.get_text() and bottom <= t.get_position()[1] <= top]
    texts = [text for text, _ in ticks]
    assert expect in texts and len(set(texts)) == len(texts), texts
    assert all(abs(float(text.replace(",", "")) / at - 1) < 1e-3 for text, at in ticks), ticks
    assert 4 <= len(ticks) <= 16, texts  # 1, 2, 5 a decade, not every minor tick of 4 decades (36)


def test_a_seed_that_stops_is_marked_where_the_mean_loses_it():
    """One seed of four diverged in its first epoch, another after epoch 1: the legend said "up to 4" (the runs,
    not the seeds an epoch's mean is over), the mean loss fell 5,000-fold where the second left it with nothing
    to say so, and a variant with no finished epoch was a legend entry alone."""
    from fashionmlp.plots import comparison

    nan = np.nan
    loss = np.array([[nan] * 3, [14875.0, nan, nan], [2.7, 2.6, 2.5], [2.8, 2.7, 2.6]])
    acc = np.array([[nan] * 3, [0.3, nan, nan], [0.2, 0.19, 0.21], [0.18, 0.19, 0.2]])
    fig = comparison({"nest": {"epochs": [1, 2, 3], "train_loss": loss, "test_accuracy": acc,
                               "status": "completed (2), diverged (2)"},
                      "nest_1": {"epochs": [1, 2, 3], "train_loss": loss * nan, "test_accuracy": acc * nan,
                                 "status": "diverged"}}, "t")
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("band: mean ± sample std over the seeds at each epoch (up to 3)") for t in texts), texts
    assert "nest: completed (2), diverged (2)" in texts and "nest_1: diverged, no epoch finished" in texts
    assert any(t.startswith("from here the mean is over fewer seeds") for t in texts)
    for ax, at in zip(fig.axes[:2], (2.65, 19.0)):  # a ring at epoch 2, on the mean of the two seeds left
        rings = [line for line in ax.get_lines() if line.get_marker() == "o" and line.get_markerfacecolor() == "none"]
        assert len(rings) == 1 and list(rings[0].get_xdata()) == [2] and rings[0].get_ydata()[0] == pytest.approx(at)
    steady = comparison({"sgd": {"epochs": [1, 2], "train_loss": np.ones((2, 2)), "test_accuracy": np.ones((2, 2)),
                                 "status": "completed"}}, "t")
    assert not any("fewer seeds" in t.get_text() for t in steady.legends[0].get_texts())


def test_a_runs_loss_curve_marks_its_result_epoch_and_chance():
    """Early stopping's result (the restored epoch 5 of 8) was not marked: the last point read as the result; a
    run near chance had an accuracy axis of 10-14% where its wiggle looked like learning."""
    from fashionmlp.plots.run import loss_curve

    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1 / e, "test_accuracy": 0.8, "val_loss": 1 / e,
                "val_accuracy": 0.8} for e in range(1, 9)]
    fig = loss_curve(history, [1.0] * 80, "t", result_epoch=5, stopped_after=8)
    texts = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert "the run's result: epoch 5 (best validation accuracy; its weights restored, stopped early after " \
           "epoch 8)" in texts and "chance (10%)" not in texts, texts
    assert [list(line.get_xdata()) for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"] == [[5, 5]]
    last = loss_curve(history, [1.0] * 80, "t", result_epoch=8)  # the last epoch is the result: nothing to mark
    assert not any("result" in t.get_text() for t in last.legends[0].get_texts())
    failed = [{"epoch": e, "train_loss": 2.3, "test_loss": 2.3, "test_accuracy": a} for e, a in
              enumerate((0.1389, 0.12, 0.1009), 1)]
    fig = loss_curve(failed, [2.3] * 30, "t")
    assert "chance (10%)" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert fig.axes[1].get_ylim() == (0, 30)


def test_a_long_title_stays_above_the_mlp_weight_tiles():
    """A 96-character run name wrapped its weights.png title to 4 lines, the last drawn over the first row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fashionmlp.plots.model import mlp_weights_figure

    for units, name in ((100, "wide_mlp_" + "with_a_long_name_" * 5 + "x" * 2 + "-20261201-082554"), (100, "mlp")):
        fig = mlp_weights_figure(np.ones((units, 784)), "What the MLP's first layer learned: the first 100 of 256 "
                                 f"units, each unit's 784 input weights as a 28x28 image\n{name} (last.pt, epoch 2)")
        renderer = FigureCanvasAgg(fig).get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        tiles = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes[:units])
        assert title.y0 >= tiles, (units, title.y0, tiles)


def _reaches_past_its_edges(fig) -> bool:
    """Whether anything drawn in the figure (titles, labels, tick labels, legends) lies past its edges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    drawn, box = fig.get_tightbbox(canvas.get_renderer()), fig.bbox_inches  # both in inches
    return drawn.x0 < box.x0 - 0.01 or drawn.y0 < box.y0 - 0.01 or drawn.x1 > box.x1 + 0.01 or drawn.y1 > box.y1 + 0.01


def test_a_long_run_name_and_training_note_stay_inside_the_pictures():
    """A 100-character run name ran off both sides of every title, and a distilled run's legend entry (label
    smoothing, augmentation, T and alpha) was wider than the loss curve itself."""
    from fashionmlp.plots import comparison
    from fashionmlp.plots.run import confusion_matrix, loss_curve

    name = "a_very_long_experiment_name_" * 3 + "x" * 16 + "-20261130-143328"
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1 / e, "test_accuracy": 0.5} for e in (1, 2, 3)]
    curve = loss_curve(history, list(np.geomspace(2, 0.3, 30)), f"{name}: mlp, nesterov lr=0.1",
                       "label smoothing 0.1, augmented images, distilled: T=2, alpha=0.7", True)
    matrix = confusion_matrix(np.eye(10, dtype=int).tolist(), f"{name}: mlp, nesterov lr=0.1")
    study = comparison({"sgd": {"epochs": [1, 2], "train_loss": np.array([[1.0, 0.5]]),
                                "test_accuracy": np.array([[0.5, 0.6]]), "status": "completed"}}, name)
    for fig in (curve, matrix, study):
        assert not _reaches_past_its_edges(fig)
    assert "\n" in curve.axes[0].get_title()  # wrapped, not shrunk away


def test_many_variants_legend_stays_inside_the_study_picture():
    """8 variants (one with a 75-character name, two with status notes) gave a 6-column legend wider than the
    picture: entries were cut on both sides and no curve could be told from another."""
    from fashionmlp.plots import comparison

    names = ["sgd", "nesterov", "adam", "adamw_wd", "adam_lr1", "adam_lr1000", "sgd_lr_2",
             "nesterov_momentum_0_9_cosine_schedule_with_warmup_and_weight_decay_variant"]
    statuses = {"adam_lr1": "completed (1), failed to learn (1)", "sgd_lr_2": "diverged"}
    loss = np.array([[1.0, 0.5, 0.4], [1.2, 0.6, np.nan]])
    fig = comparison({n: {"epochs": [1, 2, 3], "train_loss": loss, "test_accuracy": loss / 2,
                          "status": statuses.get(n, "completed")} for n in names}, "t")
    assert not _reaches_past_its_edges(fig)
    (legend,) = fig.legends
    texts = [t.get_text().replace("\n", "") for t in legend.get_texts()]
    # 8 variants, chance, the band, the ring where a seed stopped after epoch 2
    assert all(any(t.startswith(n) for t in texts) for n in names) and len(legend.get_texts()) == 11


def test_a_run_with_a_validation_split_shows_its_validation_accuracy():
    """A sweep's trials are scored on validation accuracy, which their loss curves did not show."""
    from fashionmlp.plots.run import loss_curve

    rows = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1 / e, "test_accuracy": 0.5, "val_accuracy": 0.4 + e / 10,
             "val_loss": 2 / e} for e in (1, 2)]
    fig = loss_curve(rows, [], "t")
    loss = next(line for line in fig.axes[0].get_lines() if line.get_label() == "validation loss")
    assert list(loss.get_ydata()) == [2, 1]
    line = next(line for line in fig.axes[1].get_lines() if line.get_label() == "validation accuracy")
    assert list(line.get_ydata()) == pytest.approx([50, 60]) and fig.axes[1].get_ylabel() == "accuracy (%)"
    # a colour per split, a line style per quantity: the validation loss and accuracy were told apart by their
    # markers alone; then validation accuracy red beside test accuracy green, a red-green pair
    test = next(line for line in fig.axes[1].get_lines() if line.get_label() == "test accuracy")
    assert line.get_color() == loss.get_color() != test.get_color()
    assert (loss.get_linestyle(), line.get_linestyle(), test.get_linestyle()) == ("-", "--", "--")
    colours = {x.get_color() for ax in fig.axes for x in ax.get_lines()}
    assert not {"tab:red", "tab:green"} <= colours
    plain = loss_curve([{k: v for k, v in r.items() if not k.startswith("val_")} for r in rows], [], "t")
    assert plain.axes[1].get_ylabel() == "test accuracy (%)" and len(plain.axes[1].get_lines()) == 1


def test_a_diverging_loss_axis_reads_in_powers_of_ten():
    """A loss of 1e33 was labelled 9,999,999,999,999,999,635,896,294,965,248."""
    from fashionmlp.plots.run import loss_curve

    history = [{"epoch": e, "train_loss": v, "test_loss": v, "test_accuracy": 0.1} for e, v in
               ((1, 2.3), (2, 1e12), (3, 1e33))]
    ax = loss_curve(history, [], "t").axes[0]
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(len(t) <= 7 for t in labels), labels
    assert max(float(t.replace(",", "")) for t in labels) >= 1e28, labels


def test_a_loss_curve_smooths_only_where_an_epoch_has_steps_to_smooth():
    """Under 20 steps an epoch the window was 1: the "smoothed" line was the raw one, drawn over it."""
    from fashionmlp.plots import loss_curve

    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.1 / e, "test_accuracy": 0.5} for e in (1, 2)]
    labels = lambda steps: [line.get_label() for line in loss_curve(history, list(np.geomspace(2, 0.5, steps)),  # noqa: E731
                                                                     "t").axes[0].lines]
    assert "train loss (smoothed)" not in labels(30) and "train loss (per step)" in labels(30)  # 15 an epoch
    assert {"train loss (smoothed)", "train loss (per step)"} <= set(labels(40))  # 20 an epoch: a window of 2


def test_a_short_runs_loss_curve_marks_whole_epochs():
    """Three epochs were marked 0.0, 0.5, 1.0, ... 3.0: half epochs a run never ended."""
    from fashionmlp.plots.run import loss_curve

    history = [{"epoch": e, "train_loss": 2 / e, "test_loss": 2 / e, "test_accuracy": 0.5} for e in (1, 2, 3)]
    ax = loss_curve(history, list(np.geomspace(2.3, 0.6, 30)), "t").axes[0]
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [0, 1, 2, 3], ticks
    twenty = [{**history[0], "epoch": e} for e in range(1, 21)]  # integer ticks alone gave 0, 3, ..., 18
    ax = loss_curve(twenty, [], "t").axes[0]
    ax.figure.canvas.draw()
    assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [5, 10, 15, 20]


def test_a_one_epoch_comparison_shows_the_spread_as_bars_at_epoch_1():
    from fashionmlp.plots import comparison

    acc = np.array([[0.5], [0.6], [0.8]])
    fig = comparison({"sgd": {"epochs": [1], "train_loss": acc + 1, "test_accuracy": acc, "status": "completed"}},
                     "t")
    ax_acc = fig.axes[1]
    fig.canvas.draw()
    assert ax_acc.get_xlim() == (0.5, 1.5) and ax_acc.get_xticks().tolist() == [1]
    caps = [line.get_ydata()[0] for line in ax_acc.lines if line.get_marker() == "_"]
    low = acc.mean() - acc.std(ddof=1)  # mean - std (it stopped at the lowest seed, labelled mean ± std)
    assert low < acc.min() and sorted(caps) == pytest.approx([100 * low, 100 * (acc.mean() + acc.std(ddof=1))])
    assert any(t.get_text().startswith("bars: mean ± sample std over 3 seeds") for t in fig.legends[0].get_texts())
    two = comparison({name: {"epochs": [1], "train_loss": acc + 1, "test_accuracy": acc, "status": "completed"}
                      for name in ("sgd", "adam")}, "t")  # both bars stood at x = 1, one over the other
    xs = sorted({float(line.get_xdata()[0]) for line in two.axes[1].lines if line.get_marker() == "o"})
    assert len(xs) == 2 and 0.5 < xs[0] < 1 < xs[1] < 1.5


def test_a_study_with_no_finished_epoch_says_so_in_its_picture():
    """Every seed diverged in its first epoch: two empty panels, and a legend explaining bars that were not
    there."""
    from fashionmlp.plots import comparison

    none = np.full((2, 0), np.nan)
    fig = comparison({"divg": {"epochs": [], "train_loss": none, "test_accuracy": none, "status": "diverged"}}, "t")
    for ax in fig.axes:
        assert [t.get_text() for t in ax.texts] == ["no epoch finished:\nevery run diverged in its first epoch"]
    assert not any("mean ± sample std" in t.get_text() for t in fig.legends[0].get_texts())


def test_the_bands_are_mean_plus_minus_std_except_a_loss_band_that_would_reach_zero():
    from fashionmlp.plots.study import band_low

    values = np.array([[0.1, 1.0], [0.2, 100.0]])  # two seeds, two epochs
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
    assert band_low(mean, std, values, loss=False) == pytest.approx(mean - std)  # accuracy: as labelled
    assert mean[1] - std[1] < 0 < mean[0] - std[0]
    assert band_low(mean, std, values, loss=True) == pytest.approx([mean[0] - std[0], 1.0])  # lowest seed there


# ---------------------------------------------------------------- engines, train --seeds, resume (issue 20)


def study_rows(study_dir: Path) -> dict[str, dict]:
    with open(study_dir / "summary.csv") as fh:
        return {r.get("optimizer") or r["config"]: r for r in csv.DictReader(fh)}


def test_population_and_sequential_studies_agree_in_float64(tmp_path, tiny_data):
    config = study_config(tmp_path, tiny_data)
    dirs = {}
    for engine in ("population", "sequential"):
        result = cli("compare-optimizers", "--config", config, "--runs-dir", tmp_path / engine, "--engine", engine,
                     "--seeds", "0,1", "--epochs", 2, "--set", "train.precision=fp64")
        assert result.exit_code == 0, result.output
        dirs[engine] = Path(result.stdout.strip().splitlines()[-1])
        assert summary(dirs[engine] / "adam-seed1")["engine"] == ("population" if engine == "population" else "single")
    a, b = study_rows(dirs["population"]), study_rows(dirs["sequential"])
    assert set(a) == set(b) == {"sgd", "nesterov", "adam", "adam_lr1"}
    for name in a:
        for key in ("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy"):
            assert float(a[name][key]) == pytest.approx(float(b[name][key]), rel=1e-9), (name, key)
    assert "Trained on the population engine, 8 models at once" in (dirs["population"] / "summary.md").read_text()


def test_a_torchvision_loader_group_with_dropout_trains_what_its_seeds_train_alone(write_config, tmp_path):
    """The population serves its batches itself and drew the dropout masks without the DataLoader's draw from the
    global generator that a run alone made each epoch: its members were other runs than their own `train`, and
    their summary.json named the torchvision loader that never served them."""
    path = write_config(data={"loader": "torchvision"}, model={"dropout": 0.2},
                        train={"epochs": 2, "precision": "fp64"})
    result = cli("train", "--config", path, "--seeds", "0,1", "--runs-dir", tmp_path / "group", "--engine",
                 "population")
    assert result.exit_code == 0, result.output
    group = Path(result.stdout.strip().splitlines()[-1])
    for seed in (0, 1):
        member = group / f"seed{seed}"
        assert summary(member)["engine"] == "population" and summary(member)["data"]["loader"] == "fast"
        alone = cli("train", "--config", member / "config.yaml", "--runs-dir", tmp_path / "alone")
        assert alone.exit_code == 0, alone.output
        assert summary(run_dir_of(alone))["data"]["loader"] == "torchvision"
        a, b = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"]
                for r in (member, run_dir_of(alone)))
        for key in a:  # the torchvision loader rounds its images to float32 on the way: close, not equal
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-5), key


def test_auto_engine_trains_the_cnn_one_run_after_another_on_a_cpu_and_says_so(tmp_path, tiny_data):
    config = study_config(tmp_path, tiny_data, model={"name": "cnn", "channels": [4, 8], "hidden": [16]})
    result = cli("compare-optimizers", "--config", config, "--runs-dir", tmp_path / "r", "--optimizers", "sgd",
                 "--epochs", 1)
    assert result.exit_code == 0, result.output
    assert "note: the CNN trains no faster batched on a CPU" in result.stderr
    study_dir = Path(result.stdout.strip().splitlines()[-1])
    assert json.loads((study_dir / "study.json").read_text())["engine"] == "sequential"


def test_train_seeds_writes_a_group_with_mean_and_std(write_config, tmp_path):
    result = cli("train", "--config", write_config(train={"epochs": 2}), "--seeds", "0,1,2", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    group = Path(result.stdout.strip().splitlines()[-1])
    assert group.name.startswith("tiny-seeds-")
    assert sorted(p.name for p in group.iterdir() if p.is_dir()) == ["seed0", "seed1", "seed2"]
    finals = [summary(group / f"seed{s}")["final"]["test_accuracy"] for s in range(3)]
    row = study_rows(group)["tiny"]
    assert row["n"] == "3" and float(row["final_test_accuracy"]) == pytest.approx(statistics.fmean(finals))
    assert float(row["final_test_accuracy_std"]) == pytest.approx(statistics.stdev(finals))
    assert "(mean ± std, n = 3)" in result.stdout and "best" in result.stdout
    from helpers import accumulator

    acc = accumulator(group)  # TensorBoard: the mean curve with its band, as a custom-scalars Margin chart
    assert {"tiny/test_accuracy/mean", "tiny/test_accuracy/lower", "tiny/test_accuracy/upper"} <= set(
        acc.Tags()["scalars"])
    means = [e.value for e in acc.Scalars("tiny/test_accuracy/mean")]
    assert means[-1] == pytest.approx(statistics.fmean(finals), abs=1e-6)
    assert [e.step for e in acc.Scalars("tiny/test_accuracy/mean")] == [10, 20]  # the runs' optimizer steps
    assert "custom_scalars__config__" in acc.PluginTagToContent("custom_scalars")
    # one run extended alone would stand in the table beside runs of fewer epochs
    longer = cli("train", "--resume", group / "seed1", "--epochs", "3")
    assert longer.exit_code == 2 and "is one of the study" in longer.stderr and summary(group / "seed1")["epochs"] == 2
    done = cli("train", "--resume", group / "seed1")  # it suggested --epochs, which the line above refuses
    assert done.exit_code == 2 and "copy the run folder out of the study" in done.stderr and "--epochs N" not in \
        done.stderr


def test_margin_charts_say_over_how_many_seeds_and_skip_variants_with_no_curve(tmp_path):
    """The charts said 'over 3 seed(s)' where two seeds had stopped early (a one-seed 'band'), named a loss band
    cut at the lowest seed mean ± std, and laid out empty charts for a variant whose runs all diverged at once."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    from fashionmlp.study.report import tensorboard_margins

    nan = np.nan
    series = {"stops": {"epochs": [1, 2, 3], "train_loss": np.array([[1.0, 0.5, 0.4], [1.2, 0.6, nan]]),
                        "test_accuracy": np.array([[0.5, 0.6, 0.7], [0.5, 0.6, nan]])},
              "cut": {"epochs": [1], "train_loss": np.array([[0.1], [3.0]]), "test_accuracy": np.array([[0.5], [0.7]])},
              "dead": {"epochs": [1], "train_loss": np.array([[nan], [nan]]), "test_accuracy": np.array([[nan], [nan]])}}
    tensorboard_margins(tmp_path, series, per_epoch=10)
    from helpers import accumulator

    acc = accumulator(tmp_path)
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    titles = {chart.title for category in layout.category for chart in category.chart}
    assert titles == {"stops: mean ± std over the seeds at each epoch (up to 2)", "cut: mean ± std over 2 seeds",
                      "cut: mean ± std over 2 seeds; a loss band that would reach 0 stops at the lowest seed"}
    assert not any(tag.startswith("dead/") for tag in acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("cut/train_loss/lower")] == pytest.approx([0.1])


def test_resuming_a_seeds_folder_names_the_one_option_it_takes(write_config, tmp_path):
    """`--resume <a --seeds folder> --seeds 5,6` (or --set, --name, ...) said only --epochs, --device and
    --data-dir may be given, while --epochs and --device are refused there too."""
    result = cli("train", "--config", write_config(train={"epochs": 1}), "--seeds", "0,1", "--runs-dir", tmp_path)
    group = Path(result.stdout.strip().splitlines()[-1])
    for extra in (["--seeds", "5,6"], ["--set", "train.epochs=2"], ["--name", "x"], ["--epochs", "2"],
                  ["--device", "cpu"]):
        refused = cli("train", "--resume", group, *extra)
        assert refused.exit_code == 2 and refused.stderr == (
            "error: --resume of a study folder (train --seeds, compare-optimizers) continues its runs as they were "
            "planned; only --data-dir may be given with it\n"), (extra, refused.stderr)


def test_a_study_resumed_by_the_other_command_is_reported_as_it_began(write_config, tmp_path, tiny_data):
    """compare-optimizers --resume of a `train --seeds` group titled its table "Optimizer comparison" and left
    out the per-seed lines (and train --resume of a comparison titled it by the folder's name)."""
    cfg = write_config(train={"epochs": 1})
    group = Path(cli("train", "--config", cfg, "--seeds", "0,1", "--runs-dir", tmp_path).stdout.strip().splitlines()[-1])
    study = Path(cli("compare-optimizers", "--config", study_config(tmp_path, tiny_data), "--optimizers", "sgd",
                     "--epochs", "1", "--runs-dir", tmp_path).stdout.strip().splitlines()[-1])
    for command in ("train", "compare-optimizers"):
        seeds = cli(command, "--resume", group)
        assert seeds.exit_code == 0, seeds.output
        assert f"{group.name}: mean ± std over the seeds" in seeds.stdout and "Optimizer comparison" not in seeds.stdout
        assert "tiny: final test accuracy" in seeds.stdout and "(mean ± std, n = 2)" in seeds.stdout
        compared = cli(command, "--resume", study)
        assert compared.exit_code == 0, compared.output
        assert "Optimizer comparison: mlp, 1 epoch" in compared.stdout and "mean ± std over the seeds" not in compared.stdout


def test_a_study_member_given_fewer_epochs_than_it_has_is_told_to_resume_without_them(write_config, tmp_path):
    """It was told to copy the folder out of the study "to extend it alone", which a shorter run is not (and a
    finished one cannot be resumed at all: it is not told to resume without --epochs)."""
    result = cli("train", "--config", write_config(train={"epochs": 2}), "--seeds", "0,1", "--runs-dir", tmp_path)
    member = Path(result.stdout.strip().splitlines()[-1]) / "seed0"
    fewer = cli("train", "--resume", member, "--epochs", "1")
    assert fewer.exit_code == 2 and fewer.stderr.endswith(
        "--epochs 1 is fewer than the 2 epochs the run already has; a study's runs all train to one length (without "
        "--epochs, --resume continues an unfinished one)\n"), fewer.stderr
    same = cli("train", "--resume", member, "--epochs", "2")
    assert same.exit_code == 2 and same.stderr.endswith("copy the run folder out of the study to extend it alone (its "
                                                        "table averages runs of one length)\n"), same.stderr


def test_compare_resume_of_no_folder_or_of_a_run_says_which(write_config, tmp_path):
    """Both were "not a study folder (it needs study.yaml and study.json ...)"."""
    gone = cli("compare-optimizers", "--resume", tmp_path / "nothing")
    assert gone.exit_code == 2 and gone.stderr == (f"error: --resume {str(tmp_path / 'nothing')!r}: no such folder; "
                                                   "pass a study folder such as runs/compare-mlp-20260101-120000\n")
    run = Path(cli("train", "--config", write_config(), "--runs-dir", tmp_path).stdout.strip().splitlines()[-1])
    member = cli("compare-optimizers", "--resume", run)
    assert member.exit_code == 2 and member.stderr == (
        f"error: --resume {str(run)!r} is a run folder, not a study folder: `fashionmlp train --resume` continues it\n")


def test_train_seeds_with_early_stopping_stops_each_seed_on_its_own(write_config, tmp_path):
    """Every seed with train.patience (the first included: the population's shared data must not carry it)."""
    cfg = write_config(train={"epochs": 6, "patience": 1}, data={"val_size": 64},
                       optimizer={"name": "sgd", "lr": 1e-5})  # barely moves: no better val accuracy, it stops
    result = cli("train", "--config", cfg, "--seeds", "0,1", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    group = Path(result.stdout.strip().splitlines()[-1])
    for seed in (0, 1):
        stopped = summary(group / f"seed{seed}")
        early = stopped["early_stopping"]
        assert stopped["status"] == "completed" and early["stopped_after_epoch"] < 6
        # said as a single run says it (the population's lines for that seed just stopped)
        assert (f"seed {seed}: stopped early after epoch {early['stopped_after_epoch']} (no better validation "
                f"accuracy in 1 epoch); best weights restored from epoch {early['restored_epoch']}") in result.stdout
    # the row's best: each run's epoch chosen on validation (it took each run's highest *test* accuracy, which
    # could be an epoch after the one early stopping restored)
    bests = [summary(group / f"seed{seed}")["best"] for seed in (0, 1)]
    row = study_rows(group)["tiny"]
    assert float(row["best_test_accuracy"]) == pytest.approx(statistics.fmean(b["test_accuracy"] for b in bests))
    assert float(row["best_epoch"]) == pytest.approx(statistics.fmean(b["epoch"] for b in bests))
    assert "the epoch early stopping restored" in (group / "summary.md").read_text()


def test_train_seeds_means_only_finished_runs_and_exits_3_when_a_seed_diverges(write_config, tmp_path):
    result = cli("train", "--config", write_config(optimizer={"name": "sgd", "lr": 1e9}), "--seeds", "0,1",
                 "--runs-dir", tmp_path)
    assert result.exit_code == 3, result.output
    assert "tiny: no run finished (diverged)" in result.stdout and "nan" not in result.stdout
    assert result.stderr.count("diverged: seed ") == 2 and "try a lower learning rate" in result.stderr
    group = Path(result.stdout.strip().splitlines()[-1])
    row = study_rows(group)["tiny"]
    assert (row["n"], row["runs"], row["status"], row["final_test_accuracy"]) == ("0", "2", "diverged", "")
    assert (group / "summary.csv").read_text().startswith("config,lr,")  # it said optimizer, holding the config
    assert "nan" not in "".join(row.values())  # no run at its end: no means, empty cells as a missing std


def test_a_variant_row_averages_its_finished_runs_and_counts_them():
    from fashionmlp.config import config_from_dict
    from fashionmlp.study import VariantOutcome, seeds_study, summarize

    def outcome(seed, status, accuracy, epochs):
        history = [{"epoch": e, "test_accuracy": accuracy - 0.01 * (epochs - e), "seconds": 1.0}
                   for e in range(1, epochs + 1)]
        final = {"train_loss": 0.5, "test_loss": 0.4, "test_accuracy": accuracy if epochs else None}
        return VariantOutcome("x", seed, Path(f"seed{seed}"), status, history, {"final": final})

    study = seeds_study(config_from_dict({"name": "x"}))
    outcomes = [outcome(0, "completed", 0.80, 3), outcome(1, "diverged", 0.30, 1),
                outcome(2, "completed", 0.84, 3), outcome(3, "interrupted", 0.70, 2)]
    row = summarize(outcomes, study)[0]
    assert (row["n"], row["runs"]) == (2, 4)
    assert row["final_test_accuracy"] == pytest.approx(0.82)
    assert row["final_test_accuracy_std"] == pytest.approx(statistics.stdev([0.80, 0.84]))
    assert row["status"] == "completed (2), diverged (1), interrupted (1)"
    assert row["best_test_accuracy"] == pytest.approx(0.82) and row["best_epoch"] == 3  # finished runs' bests only
    from fashionmlp.study import table_rows

    assert table_rows([row])[1][0][6] == "82.00% ± 2.83% (3)"
    # seeds whose best epochs differ: their range, not a mean epoch such as "(1.3)"
    spread = summarize([outcome(0, "completed", 0.80, 3), outcome(1, "completed", 0.84, 5)], study)[0]
    assert spread["best_epoch"] == 4.0 and table_rows([spread])[1][0][6] == "82.00% ± 2.83% (3-5)"


def test_theseeds_report_of_mixed_runs_exits_3_and_names_what_did_not_finish(tmp_path, capsys):
    from fashionmlp.cli.runs import seeds_report
    from fashionmlp.study import StudyResult

    row = {"optimizer": "tiny", "lr": 0.1, "momentum": None, "n": 2, "runs": 4, "final_train_loss": 0.5,
           "final_test_loss": 0.4, "final_test_accuracy": 0.82, "final_test_accuracy_std": 0.02,
           "best_test_accuracy": 0.83, "best_test_accuracy_std": 0.01, "best_epoch": 3.0,
           "seconds_per_epoch": 0.1, "status": "completed (2), diverged (1), interrupted (1)"}
    diverged = {"diverged": {"epoch": 2, "step": 9, "lr": 0.1, "last_good_epoch": 1}}
    from fashionmlp.study import VariantOutcome

    outcomes = [VariantOutcome("tiny", 0, tmp_path / "seed0", "completed", [], {}),
                VariantOutcome("tiny", 1, tmp_path / "seed1", "diverged", [], diverged),
                VariantOutcome("tiny", 2, tmp_path / "seed2", "completed", [], {}),
                VariantOutcome("tiny", 3, tmp_path / "seed3", "interrupted", [], {})]
    assert seeds_report(StudyResult(tmp_path, [row], outcomes, kind="seeds")) == 3
    out, err = capsys.readouterr()
    assert "(mean ± std, n = 2; 2 of the 4 runs did not finish: diverged (1), interrupted (1))" in out
    assert "diverged: seed 1, the loss became non-finite at epoch 2, step 9" in err
    interrupted = StudyResult(tmp_path, [row], outcomes, interrupted=True, kind="seeds")
    assert seeds_report(interrupted) == 130  # a stop outranks a divergence: resume it first


def test_a_mixed_row_says_how_many_of_its_runs_each_status_concerns(tmp_path):
    from fashionmlp.config import config_from_dict
    from fashionmlp.study import VariantOutcome, seeds_study, summarize
    from fashionmlp.study.report import _status_note

    def outcome(seed, status, accuracy):
        final = {"train_loss": 0.5, "test_loss": 0.4, "test_accuracy": accuracy}
        return VariantOutcome("x", seed, tmp_path / f"seed{seed}", status, [{"epoch": 1, "test_accuracy": accuracy,
                                                                           "seconds": 1.0}], {"final": final})

    outcomes = [outcome(0, "completed", 0.8), outcome(1, "completed", 0.8), outcome(2, "failed to learn", 0.11)]
    row = summarize(outcomes, seeds_study(config_from_dict({"name": "x"})))[0]
    assert _status_note(row, outcomes) == ("1 of its 3 runs ended at 11.00% on average, within 2 percentage points "
                                           "of chance (10%): the network did not learn.")
    # a stop before two more runs finished an epoch: they count, as not started (it said "completed", runs 1)
    row = summarize(outcomes[:1], seeds_study(config_from_dict({"name": "x"})), planned=3)[0]
    assert (row["n"], row["runs"], row["status"]) == (1, 3, "completed (1), not started (2)")
    assert _status_note(row, outcomes[:1]) == "2 of its 3 runs did not start (--resume trains them)."
    from fashionmlp.cli.runs import seeds_line  # train --seeds' line said "2 of the 3 runs did not finish: "

    assert seeds_line(row, outcomes[:1]).endswith("(n = 1; 2 of the 3 runs did not finish: not started (2))")


def test_a_variant_a_stop_kept_from_starting_keeps_its_row(tmp_path, tiny_data):
    """An interrupted sequential study's table, summary.md and summary.csv left out the variants whose first run
    had not started, saying nothing of them."""
    from fashionmlp.study import load_study, run_study

    study = load_study(yaml.safe_load(study_config(tmp_path, tiny_data).read_text()), only=["nesterov", "adam"])

    stopped = run_study(study, seeds=[0, 1], runs_dir=tmp_path / "runs", engine="sequential", stop=StopInEpoch2())
    assert stopped.interrupted
    rows = {row["optimizer"]: row for row in stopped.rows}
    assert (rows["adam"]["n"], rows["adam"]["runs"], rows["adam"]["status"]) == (0, 2, "not started")
    assert rows["nesterov"]["status"] == "interrupted (1), not started (1)"
    assert set(study_rows(stopped.study_dir)) == {"nesterov", "adam"}
    assert "| adam |" in (stopped.study_dir / "summary.md").read_text()
    assert (stopped.study_dir / "comparison.png").is_file()


def test_engine_is_refused_where_it_chooses_nothing(write_config, tmp_path):
    alone = cli("train", "--config", write_config(), "--engine", "sequential", "--runs-dir", tmp_path / "a")
    assert alone.exit_code == 2 and "--engine sequential" in alone.stderr and not (tmp_path / "a").exists()
    run = cli("train", "--config", write_config(), "--seeds", "0,1", "--runs-dir", tmp_path / "g")
    group = Path(run.stdout.strip().splitlines()[-1])
    again = cli("train", "--resume", group / "seed0", "--engine", "population")
    assert again.exit_code == 2 and "only --epochs, --device and --data-dir" in again.stderr
    whole = cli("train", "--resume", group, "--engine", "sequential")  # a --seeds folder takes --data-dir alone
    assert whole.exit_code == 2 and "only --data-dir may be given with it" in whole.stderr
    bogus = cli("train", "--config", write_config(), "--engine", "bogus", "--runs-dir", tmp_path / "b")
    assert bogus.exit_code == 2 and "--engine: 'bogus' is not allowed" in bogus.stderr


def test_a_study_on_a_subset_says_how_many_images_its_runs_trained_on(write_config, tmp_path):
    cfg = write_config(train={"epochs": 1}, data={"subset": 100, "val_size": 20})
    run = cli("train", "--config", cfg, "--seeds", "0,1", "--runs-dir", tmp_path)
    group = Path(run.stdout.strip().splitlines()[-1])
    assert ", 80 training images (data.subset)," in (group / "summary.md").read_text()  # 100 less 20 held out


def test_a_study_folder_given_for_a_run_points_at_its_runs(write_config, tmp_path):
    run = cli("train", "--config", write_config(train={"epochs": 1}), "--seeds", "0,1", "--runs-dir", tmp_path)
    group = Path(run.stdout.strip().splitlines()[-1])
    for command in ("evaluate", "inspect"):
        result = cli(command, group)
        assert result.exit_code == 2 and f"pass one of its runs, e.g. '{group / 'seed0'}'" in result.stderr


def test_resuming_seeds_whose_run_lost_its_checkpoint_is_refused_before_anything_trains(write_config, tmp_path):
    run = cli("train", "--config", write_config(train={"epochs": 3}), "--seeds", "0,1", "--runs-dir", tmp_path)
    group = Path(run.stdout.strip().splitlines()[-1])
    for seed in (0, 1):  # as if interrupted after epoch 1
        (group / f"seed{seed}" / "summary.json").write_text(json.dumps({**summary(group / f"seed{seed}"),
                                                                         "status": "interrupted"}))
    (group / "seed1" / "checkpoints" / "last.pt").unlink()
    before = (group / "seed0" / "metrics.csv").read_text()
    result = cli("train", "--resume", group)
    assert result.exit_code == 2, result.output
    assert "seed1" in result.stderr and "no checkpoints/last.pt" in result.stderr
    assert (group / "seed0" / "metrics.csv").read_text() == before and summary(group / "seed0")["status"] == (
        "interrupted")


def test_seed_and_seeds_together_are_refused(write_config, tmp_path):
    result = cli("train", "--config", write_config(), "--seeds", "0,1", "--seed", 3, "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "or --seeds LIST, not both" in result.stderr
    result = cli("train", "--config", write_config(), "--seeds", "0,1", "--set", "seed=3", "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "give --seed N (or --set seed=N) or --seeds LIST" in result.stderr
    # compare-optimizers trained seeds 0 and 1 and dropped seed=3 without a word
    result = cli("compare-optimizers", "--model", "mlp", "--seeds", "0,1", "--set", "seed=3", "--runs-dir", tmp_path / "c")
    assert result.exit_code == 2 and result.stderr == "error: give --set seed=N or --seeds LIST, not both\n"
    assert not (tmp_path / "c").exists()
    bad = cli("compare-optimizers", "--model", "mlp", "--engine", "turbo", "--runs-dir", tmp_path / "x")
    assert bad.exit_code == 2 and "--engine: 'turbo' is not allowed" in bad.stderr and not (tmp_path / "x").exists()


def test_an_interrupted_study_resumes_exactly(tmp_path, tiny_data):
    from fashionmlp.study import load_study, resume_study, run_study

    raw = yaml.safe_load(study_config(tmp_path, tiny_data).read_text())
    raw["train"] = {**raw["train"], "precision": "fp64", "epochs": 3}
    study = load_study(raw, only=["nesterov", "adam"])

    stopped = run_study(study, seeds=[0, 1], runs_dir=tmp_path / "a", stop=StopInEpoch2())
    assert stopped.interrupted and {summary(o.run_dir)["status"] for o in stopped.outcomes} == {"interrupted"}
    assert "Trained on the population engine, 4 models at once" in (stopped.study_dir / "summary.md").read_text()
    alone = cli("train", "--resume", stopped.study_dir / "adam-seed1")  # one run finishes by itself
    assert alone.exit_code == 0, alone.output
    resumed = resume_study(stopped.study_dir)
    straight = run_study(study, seeds=[0, 1], runs_dir=tmp_path / "b")
    assert not resumed.interrupted
    # summary.md said all four trained at once (the run continued alone says `engine: single`)
    assert ("Trained on the population engine, 3 models at once: s/epoch is each model's share of the population's "
            "epoch; adam-seed1 last trained alone (train --resume), at its own s/epoch.") \
        in (resumed.study_dir / "summary.md").read_text()
    a, b = study_rows(resumed.study_dir), study_rows(straight.study_dir)
    for name in ("nesterov", "adam"):
        assert float(a[name]["final_test_loss"]) == pytest.approx(float(b[name]["final_test_loss"]), rel=1e-9)
    # every run finished (e.g. killed while it wrote its report): the report is written again, not refused
    for name in ("summary.csv", "comparison.png"):
        (resumed.study_dir / name).unlink()
    again = cli("compare-optimizers", "--resume", resumed.study_dir)
    assert again.exit_code == 0 and "every run of the study has finished: its report" in again.output
    assert study_rows(resumed.study_dir) == a and (resumed.study_dir / "comparison.png").is_file()
    epochs = study.base.train.epochs  # the table's title as when it began, not the folder's name
    assert f"Optimizer comparison: {study.base.model.name}, {epochs} epoch{'s' * (epochs != 1)}" in again.stdout


def test_a_study_whose_member_config_was_edited_is_not_resumed_over_the_edit(tmp_path, tiny_data):
    """A member's config.yaml edited (optimizer.lr 0.01 -> 0.02) before `compare-optimizers --resume`: the study
    continued it as study.yaml plans and wrote its config.yaml back over the edit, exit 0, without a word, where
    `train --resume` of the run alone refuses the edit. The device, the data folder and the teacher's folder may
    differ (a run continued alone with --device or --data-dir, a teacher that moved)."""
    from fashionmlp.study import load_study, run_study

    raw = yaml.safe_load(study_config(tmp_path, tiny_data).read_text())
    raw["train"] = {**raw["train"], "epochs": 3}
    stopped = run_study(load_study(raw, only=["sgd", "adam"]), seeds=[0], runs_dir=tmp_path / "a",
                        stop=StopInEpoch2())
    (member,) = [o.run_dir for o in stopped.outcomes if (o.run_dir / "checkpoints" / "last.pt").is_file()][:1]
    config = member / "config.yaml"
    text = config.read_text()
    lr = yaml.safe_load(text)["optimizer"]["lr"]
    config.write_text(text.replace(f"lr: {lr}", f"lr: {2 * lr}").replace("device: auto", "device: cpu"))
    refused = cli("compare-optimizers", "--resume", stopped.study_dir)
    assert refused.exit_code == 2 and refused.stderr == (
        f"error: --resume {str(stopped.study_dir)!r}: {member.name}/config.yaml was edited (optimizer.lr: {2 * lr!r} "
        f"where study.yaml has {lr!r}); a study's runs continue as study.yaml plans them: undo the edit, or copy the "
        "run folder out of the study and continue it alone (fashionmlp train --resume)\n"), refused.output
    assert f"lr: {2 * lr}" in config.read_text()  # the edit is still there
    config.write_text(text)
    resumed = cli("compare-optimizers", "--resume", stopped.study_dir)
    assert resumed.exit_code == 0, resumed.output


def test_a_row_with_no_finished_run_leaves_the_others_their_common_n():
    from fashionmlp.study import table_rows

    def row(name, n, status):
        finite = n > 0
        return {"optimizer": name, "lr": 0.1, "momentum": None, "n": n, "runs": 3, "final_train_loss": 0.5,
                "final_test_loss": 0.4, "final_test_accuracy": 0.8 if finite else float("nan"),
                "final_test_accuracy_std": 0.01 if finite else float("nan"),
                "best_test_accuracy": 0.81 if finite else float("nan"),
                "best_test_accuracy_std": 0.01 if finite else float("nan"), "best_epoch": 2.0 if finite else None,
                "seconds_per_epoch": 0.1, "status": status}

    header, cells = table_rows([row("adam", 3, "completed"), row("sgd", 0, "diverged")])
    assert header[5] == "final test acc (mean ± std, n=3)"
    assert cells[0][5] == "80.00% ± 1.00%" and cells[1][5] == "-"


def test_a_rows_best_is_each_runs_own_best_epoch_not_its_highest_test_accuracy():
    """With a validation split a run's best epoch is chosen on it; the row took each run's highest test
    accuracy instead (72.22% at epochs 2-5 where the runs' own bests were 72.05%)."""
    from fashionmlp.config import config_from_dict
    from fashionmlp.study import VariantOutcome, seeds_study, summarize

    history = [{"epoch": e, "test_accuracy": a, "seconds": 1.0} for e, a in ((1, 0.70), (2, 0.72), (3, 0.75))]
    best = {"epoch": 2, "test_accuracy": 0.72, "val_accuracy": 0.74}  # validation chose epoch 2
    final = {"train_loss": 0.5, "test_loss": 0.4, "test_accuracy": 0.72}
    runs = [VariantOutcome("x", s, Path(f"seed{s}"), "completed", history, {"final": final, "best": best})
            for s in (0, 1)]
    row = summarize(runs, seeds_study(config_from_dict({"name": "x", "data": {"val_size": 10}})))[0]
    assert row["best_test_accuracy"] == pytest.approx(0.72) and row["best_epochs"] == (2, 2)


def test_a_study_folder_edited_by_hand_is_refused_and_a_missing_run_is_announced(write_config, tmp_path):
    """study.json and study.yaml from someone else: seeds that orphan the runs, junk seeds or engine, unknown
    keys, a run folder that is a link to another were each taken silently (the link made the run's lock name
    this very process as "another process"); a deleted run trained anew without a word."""
    import shutil

    run = cli("train", "--config", write_config(train={"epochs": 2}), "--seeds", "0,1", "--runs-dir", tmp_path / "r")
    group = Path(run.stdout.strip().splitlines()[-1])
    meta, raw = json.loads((group / "study.json").read_text()), (group / "study.yaml").read_text()
    edits = {
        "seeds [5]": (lambda: (group / "study.json").write_text(json.dumps({**meta, "seeds": [5]})),
                      "the run 'seed0' is not one that study.json and study.yaml plan (seed5)"),
        "seeds [true]": (lambda: (group / "study.json").write_text(json.dumps({**meta, "seeds": [True, False]})),
                         "study.json's seeds [True, False] are not a list of seeds"),
        "engine warp": (lambda: (group / "study.json").write_text(json.dumps({**meta, "engine": "warp"})),
                        "study.json's engine 'warp' is not one of population, sequential"),
        "unknown key": (lambda: (group / "study.yaml").write_text(raw + "foo: 1\n"),
                        "study.yaml has keys a study does not: foo"),
        "a link": (lambda: (shutil.rmtree(group / "seed1"), (group / "seed1").symlink_to(group / "seed0")),
                   "'seed1' is a symbolic link"),
    }
    for name, (edit, message) in edits.items():
        keep = tmp_path / "keep"
        shutil.copytree(group, keep, symlinks=True)
        edit()
        result = cli("train", "--resume", group)
        assert result.exit_code == 2 and message in result.stderr, (name, result.output)
        shutil.rmtree(group)
        keep.rename(group)
    shutil.rmtree(group / "seed1")
    result = cli("train", "--resume", group)
    assert result.exit_code == 0 and "note: seed 1 has no run folder yet (seed1): it trains from its first epoch" in (
        result.stderr), result.output


@pytest.mark.parametrize("name,message", [
    ("k=v", "holds '='"),  # accepted, then --set 'variants.k=v.lr=0.5' found no variant 'k'
    ("a,b", "holds ','"),  # --optimizers a,b splits it
    ("a.b", "holds '.'"),
    (True, "name True is not text (YAML reads yes, no, on, off and numbers so); quote the name as you wrote it"),  # yes: said "True"
    (123, "name 123 is not text"),
])
def test_variant_names_that_cannot_be_addressed_are_refused(name, message):
    raw = default_study_dict("mlp")
    raw["variants"][name] = raw["variants"].pop("sgd")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_study(raw)


@pytest.mark.parametrize("variant", ["../../escaped", "/tmp/absolute", ".."])
def test_a_study_yaml_variant_that_names_a_path_is_refused(tmp_path, tiny_data, variant):
    """A variant's name is a folder in the study folder: one from someone else's study.yaml that is a path
    (`../..`, absolute) trained a run outside the runs folder on --resume."""
    runs = tmp_path / "deep" / "runs"
    result = cli("compare-optimizers", "--config", study_config(tmp_path, tiny_data), "--runs-dir", runs,
                 "--optimizers", "sgd", "--epochs", "1")
    assert result.exit_code == 0, result.output
    group = Path(result.stdout.strip().splitlines()[-1])
    raw = yaml.safe_load((group / "study.yaml").read_text())
    raw["variants"][variant] = raw["variants"]["sgd"]
    (group / "study.yaml").write_text(yaml.safe_dump(raw))
    before = sorted(tmp_path.rglob("*"))
    result = cli("compare-optimizers", "--resume", group)
    assert result.exit_code == 2 and f"study.yaml: variant {variant!r}" in result.stderr, result.output
    assert "\n" not in result.stderr.strip() and sorted(tmp_path.rglob("*")) == before


def test_tables_fold_long_cells_instead_of_cutting_them(capsys, monkeypatch):
    """Printed to a file (80 columns), a diverged variant's final loss read '16599388945…' (10x too small when
    copied) and names were cut to 'nesterov_mo…'."""
    from fashionmlp.cli.show import print_table

    monkeypatch.setenv("COLUMNS", "80")  # rich's width otherwise: a wide CI terminal had room for every cell
    from fashionmlp.study.report import _num

    assert _num(165993889459.1361) == "1.66e+11" and _num(0.51234) == "0.5123" and _num(None) == "-"
    name = "nesterov_momentum_0_9_cosine_schedule"
    header = ["optimizer", "lr", "momentum", "final train loss", "final test loss", "final test acc", "status"]
    print_table("t", header, [[name, "0.01", "0.9", "123456789012.1234", "0.4", "88.00%", "completed"]],
                left=("optimizer", "status"), width=40)
    out = capsys.readouterr().out
    assert "…" not in out
    cells = "".join(line.split("│")[1].strip() for line in out.splitlines() if line.count("│") > 2)
    assert cells.startswith(name)  # the first column's pieces, read down, give the whole name


def test_a_study_in_use_is_not_resumed_a_second_time(tmp_path, tiny_data):
    """Two --resume of one study at once: the later crashed on the run folder the other had just made
    (FileExistsError), or said that run was 'not a fashionmlp run'."""
    from test_population import StopAfter

    from fashionmlp.runlock import lock_run_dir
    from fashionmlp.study import load_study, run_study

    study = load_study(yaml.safe_load(study_config(tmp_path, tiny_data).read_text()), only=["sgd", "adam"])
    stopped = run_study(study, seeds=[0], runs_dir=tmp_path / "runs", stop=StopAfter(3))
    assert stopped.interrupted
    files = {p: p.read_bytes() for p in stopped.study_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    with lock_run_dir(stopped.study_dir, "study folder"):  # as another process resuming it holds it
        result = cli("compare-optimizers", "--resume", stopped.study_dir)
    assert result.exit_code == 2 and "study folder" in result.stderr and "is in use by another process" in \
        result.stderr
    assert {p: p.read_bytes() for p in stopped.study_dir.rglob("*") if p.is_file() and p.name != ".lock"} == files
    assert cli("compare-optimizers", "--resume", stopped.study_dir).exit_code == 0


def test_a_groups_loss_curves_name_their_seeds(write_config, tmp_path, monkeypatch):
    """A study's members had the same title on every loss curve and confusion matrix."""
    from fashionmlp import recorder

    titles = []
    real = recorder.loss_curve
    monkeypatch.setattr(recorder, "loss_curve", lambda *a, **k: (titles.append(a[2]), real(*a, **k))[1])
    result = cli("train", "--config", write_config(train={"epochs": 1}), "--seeds", "0,1", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(titles) == ["tiny: mlp, adam lr=0.01, seed 0", "tiny: mlp, adam lr=0.01, seed 1"]
