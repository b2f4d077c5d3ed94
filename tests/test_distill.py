"""Knowledge distillation (distill.teacher): the loss against its formula, the teacher checked like any saved run,
its record in the student's folder, exact resume, and the population engine against the single run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from test_population import assert_same_run

from fashionmlp.config import config_from_dict, with_values
from fashionmlp.distill import distill_loss, soft_targets
from fashionmlp.errors import UserError
from fashionmlp.population import MemberSpec, train_population
from fashionmlp.run import train
from fashionmlp.teacher import weights_fingerprint

from helpers import cli, run_dir_of, summary, tiny_config

TEACHER = {"train": {"tta": "flip", "precision": "fp64"}}  # fp64: the population test compares to 1e-9


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory) -> Path:
    """A trained teacher run (flip TTA: two views per image)."""
    cfg = config_from_dict(tiny_config(tiny_data, name="teacher", **TEACHER))
    return train(cfg, runs_dir=tmp_path_factory.mktemp("teacher")).run_dir


def student(tiny_data, teacher: Path | None, **sections) -> dict:
    cfg = tiny_config(tiny_data, name="student", **sections)
    if teacher is not None:
        cfg["distill"] = {"teacher": str(teacher), "temperature": 2.0, "alpha": 0.7, **cfg.get("distill", {})}
    return cfg


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def test_the_loss_is_alpha_t2_kl_plus_the_rest_cross_entropy():
    torch.manual_seed(0)
    z, views = torch.randn(5, 10, dtype=torch.float64), torch.randn(5, 2, 10, dtype=torch.float64)
    y = torch.tensor([0, 3, 9, 3, 1])
    t, a, eps = 3.0, 0.6, 0.1
    p = (views / t).softmax(-1).mean(1)  # the teacher's TTA: the mean softmax of the two views
    q = (z / t).softmax(-1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    target = F.one_hot(y, 10).double() * (1 - eps) + eps / 10
    ce = -(target * z.log_softmax(-1)).sum(1).mean()
    expected = a * t * t * kl + (1 - a) * ce
    assert torch.allclose(distill_loss(z, y, views, t, a, eps), expected, rtol=1e-12)
    assert torch.allclose(soft_targets(views, t).exp(), p, rtol=1e-12)
    assert torch.equal(distill_loss(z, y, views, t, 0.0, eps), F.cross_entropy(z, y, label_smoothing=eps))
    # alpha 1: the teacher alone; a student that matches it at T has zero loss
    assert float(distill_loss(views[:, 0] * 1.0, y, views[:, :1], t, 1.0)) == pytest.approx(0.0, abs=1e-12)


def test_the_gradient_at_high_temperature_matches_logits_over_t():
    """Hinton et al.'s limit: for large T the gradient of T^2 KL tends to (z - v) / (classes * B), each row
    centred (the error shrinks as 1/T)."""
    torch.manual_seed(1)
    z = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 1, 10, dtype=torch.float64)
    distill_loss(z, torch.zeros(4, dtype=torch.long), v, 1e4, 1.0).backward()
    centred = (z - z.mean(1, keepdim=True)) - (v[:, 0] - v[:, 0].mean(1, keepdim=True))
    assert torch.allclose(z.grad * 4 * 10, centred.detach(), atol=1e-3)


def test_a_distilled_run_records_its_teacher(tiny_data, teacher, tmp_path):
    run = train(config_from_dict(student(tiny_data, teacher)), runs_dir=tmp_path).run_dir
    weights = torch.load(teacher / "checkpoints" / "last.pt", weights_only=True)["model"]
    fingerprint = weights_fingerprint(weights)
    saved = yaml.safe_load((run / "config.yaml").read_text())["distill"]
    assert saved == {"teacher": str(teacher), "temperature": 2.0, "alpha": 0.7, "checkpoint": "auto",
                     "fingerprint": fingerprint}
    record = summary(run)["distill"]
    assert record["fingerprint"] == fingerprint and record["tta"] is True and record["epoch"] == 2
    assert record["checkpoint"].endswith("checkpoints/last.pt")  # auto: the teacher has no validation split
    assert (record["temperature"], record["alpha"]) == (2.0, 0.7)
    # the teacher took nothing from the student's generators: the same initial weights and batches
    plain = train(config_from_dict(student(tiny_data, None)), runs_dir=tmp_path / "plain").run_dir
    assert summary(run)["fingerprints"] == summary(plain)["fingerprints"]
    assert not torch.equal(last(run)["step_losses"], last(plain)["step_losses"])  # and it learned otherwise


def test_alpha_zero_is_exactly_the_run_without_a_teacher(tiny_data, teacher, tmp_path):
    cfg = student(tiny_data, teacher, data={"shift": 1, "flip": True}, train={"label_smoothing": 0.1})
    cfg["distill"]["alpha"] = 0.0
    taught = train(config_from_dict(cfg), runs_dir=tmp_path / "a").run_dir
    del cfg["distill"]
    plain = train(config_from_dict(cfg), runs_dir=tmp_path / "b").run_dir
    a, b = last(taught), last(plain)
    assert torch.equal(a["step_losses"], b["step_losses"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])


@pytest.mark.parametrize("augment", [False, True], ids=["cached", "per-batch"])
def test_resume_is_exact_with_distillation(tiny_data, teacher, tmp_path, augment):
    data = {"shift": 1, "flip": True} if augment else {}
    cfg = config_from_dict(student(tiny_data, teacher, data=data, train={"epochs": 3}))
    straight = train(cfg, runs_dir=tmp_path / "straight").run_dir
    first = train(with_values(cfg, {"train.epochs": 1}), runs_dir=tmp_path / "resumed").run_dir
    result = cli("train", "--resume", first, "--epochs", 3)
    assert result.exit_code == 0, result.output
    a, b = last(first), last(straight)
    assert torch.equal(a["step_losses"], b["step_losses"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert summary(first)["distill"] == summary(straight)["distill"]


def _resume_is_refused(run: Path, why: str) -> None:
    """`train --resume run --epochs 2` is one error line saying `why`, and leaves last.pt as it was."""
    before = (run / "checkpoints" / "last.pt").read_bytes()
    result = cli("train", "--resume", run, "--epochs", 2)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and why in result.stderr
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_a_changed_teacher_stops_the_resume(tiny_data, teacher, tmp_path):
    import shutil

    taught = tmp_path / "teacher"
    shutil.copytree(teacher, taught)
    cfg = config_from_dict(student(tiny_data, taught, train={"epochs": 1}))
    run = train(cfg, runs_dir=tmp_path / "runs").run_dir
    state = torch.load(taught / "checkpoints" / "last.pt", weights_only=True)
    state["model"]["0.weight" if "0.weight" in state["model"] else next(iter(state["model"]))] += 1.0
    torch.save(state, taught / "checkpoints" / "last.pt")
    _resume_is_refused(run, "the teacher changed since the config was written")


def test_a_run_cannot_be_made_its_own_teacher(tiny_data, teacher, tmp_path):
    """A student whose config.yaml was edited to name itself as its teacher (as the docs say to do for a moved
    teacher) resumed, taught by its own last.pt, then could never resume again (its pin no longer held)."""
    run = train(config_from_dict(student(tiny_data, teacher, train={"epochs": 1})), runs_dir=tmp_path / "runs").run_dir
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["distill"] = {**saved["distill"], "teacher": str(run), "fingerprint": None}
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    _resume_is_refused(run, "names the run itself as distill.teacher")


def test_a_teachers_weights_of_other_shapes_are_named_as_the_teachers(tiny_data, teacher, tmp_path):
    """The message was "<file>: checkpoint does not fit the configured model", which reads as the student's."""
    import shutil

    crafted = shutil.copytree(teacher, tmp_path / "five-classes")
    for path in (crafted / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        weight, bias = [k for k in state["model"] if k.endswith("weight")][-1], [
            k for k in state["model"] if k.endswith("bias")][-1]
        state["model"][weight], state["model"][bias] = state["model"][weight][:5], state["model"][bias][:5]
        torch.save(state, path)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(student(tiny_data, crafted)))
    result = cli("train", "--config", cfg, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: distill.teacher {str(crafted)!r}: ") and "does not fit" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_moved_teacher_is_named_and_found_again_by_its_weights(tiny_data, teacher, tmp_path):
    """A student whose teacher's folder moved could never be resumed: "no such folder; train a teacher first",
    and with config.yaml pointed at the new folder, "the checkpoint was made with distill.teacher: <old>"."""
    import shutil

    old, new = tmp_path / "teacher", tmp_path / "moved" / "teacher"
    shutil.copytree(teacher, old)
    cfg = config_from_dict(student(tiny_data, old, train={"epochs": 3}))
    straight = train(cfg, runs_dir=tmp_path / "straight").run_dir
    run = train(with_values(cfg, {"train.epochs": 1}), runs_dir=tmp_path / "runs").run_dir
    new.parent.mkdir()
    old.rename(new)
    lost = cli("train", "--resume", run, "--epochs", 3)
    assert lost.exit_code == 2 and lost.stderr.count("\n") == 1, lost.output
    assert "is not there: put it back, or name the folder it is in now in distill.teacher" in lost.stderr
    assert "train a teacher first" not in lost.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["distill"]["teacher"] = str(new)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    found = cli("train", "--resume", run, "--epochs", 3)
    assert found.exit_code == 0, found.output
    assert torch.equal(last(run)["step_losses"], last(straight)["step_losses"])  # the same teacher, taught on


def _untrained(tmp_path: Path, teacher: Path) -> Path:
    import shutil

    run = tmp_path / "untrained"
    shutil.copytree(teacher, run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["epoch"] = 0
    torch.save(state, run / "checkpoints" / "last.pt")
    return run


def _without_best(tmp_path: Path, teacher: Path, which: str = "best") -> Path:
    import shutil

    run = tmp_path / f"no{which}"
    shutil.copytree(teacher, run)
    (run / "checkpoints" / f"{which}.pt").unlink()
    return run


def _not_finite(tmp_path: Path, teacher: Path) -> Path:
    """A teacher whose checkpoint holds NaN weights (a run that diverged in its last steps, before runs ending
    so were marked diverged, ended "completed" with them)."""
    import shutil

    run = tmp_path / "nan"
    shutil.copytree(teacher, run)
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)
        first = next(iter(state["model"]))
        state["model"][first] = torch.full_like(state["model"][first], float("nan"))
        torch.save(state, run / "checkpoints" / name)
    return run


def _mismatched(tmp_path: Path, teacher: Path) -> Path:
    import shutil

    run = tmp_path / "mismatched"
    shutil.copytree(teacher, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["hidden"] = [7]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


BAD_TEACHERS = {  # what distill.teacher (or its neighbours) says -> the one line it gets
    "missing folder": (lambda tmp, t: {"teacher": str(tmp / "nowhere")}, "no such folder; train a teacher first"),
    "a run's name without its timestamp": (lambda tmp, t: {"teacher": str(t.parent / "teacher")},
                                           "no such folder; runs of that name: "),
    "not a run": (lambda tmp, t: {"teacher": str(tmp)}, "is not a fashionmlp run"),
    "a file": (lambda tmp, t: {"teacher": str(t / "checkpoints" / "last.pt")},
               "is a file, not a directory; pass its run folder"),
    "no best.pt": (lambda tmp, t: {"teacher": str(_without_best(tmp, t)), "checkpoint": "best"},
                   "it has no checkpoints/best.pt; distill.checkpoint: last uses its last.pt"),
    # it said "--checkpoint best", an option of evaluate's that train does not have
    "no last.pt": (lambda tmp, t: {"teacher": str(_without_best(tmp, t, "last")), "checkpoint": "last"},
                   "it has no checkpoints/last.pt; distill.checkpoint: best uses its best.pt"),
    "untrained": (lambda tmp, t: {"teacher": str(_untrained(tmp, t))}, "an untrained model cannot teach"),
    "config does not fit": (lambda tmp, t: {"teacher": str(_mismatched(tmp, t))}, "does not fit the configured model"),
    "NaN weights": (lambda tmp, t: {"teacher": str(_not_finite(tmp, t))}, "holds weights that are not finite"),
    "pinned to other weights": (lambda tmp, t: {"teacher": str(t), "fingerprint": "a" * 64},
                                "the teacher changed since the config was written (a new run taught by its weights "
                                "as they are now: --set distill.fingerprint=null)"),
    "fingerprint alone": (lambda tmp, t: {"fingerprint": "a" * 64}, "set without distill.teacher"),
    "bad fingerprint": (lambda tmp, t: {"teacher": str(t), "fingerprint": "abc"}, "is not a SHA-256"),
    "empty teacher": (lambda tmp, t: {"teacher": ""}, "'' is not a run folder"),
    "temperature 0": (lambda tmp, t: {"teacher": str(t), "temperature": 0}, "distill.temperature: 0"),
    "alpha above 1": (lambda tmp, t: {"teacher": str(t), "alpha": 1.5}, "distill.alpha: 1.5 is out of range"),
    "unknown checkpoint": (lambda tmp, t: {"teacher": str(t), "checkpoint": "first"}, "distill.checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_TEACHERS), ids=list(BAD_TEACHERS))
@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_a_bad_teacher_gets_one_line_and_exit_2_before_any_folder(tiny_data, teacher, tmp_path, case, command):
    make, message = BAD_TEACHERS[case]
    cfg = tiny_config(tiny_data, distill=make(tmp_path, teacher))
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = cli(command, "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()
    if case in TEACHER_NAMED:  # which key gave the file ("checkpoint does not fit" alone did not say)
        assert result.stderr.startswith("error: distill.teacher '"), result.stderr


TEACHER_NAMED = ("missing folder", "a run's name without its timestamp", "not a run", "a file", "no best.pt",
                 "untrained", "config does not fit", "NaN weights", "pinned to other weights")


def test_a_run_given_by_its_name_lists_the_folders_of_that_name(tiny_data, teacher, tmp_path):
    cfg = tiny_config(tiny_data, distill={"teacher": str(teacher.parent / "teacher")})
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = cli("train", "--config", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(f"runs of that name: {teacher}"), result.stderr


def test_a_validation_split_the_teacher_trained_on_gets_a_note(tiny_data, teacher, tmp_path):
    run = train(config_from_dict(student(tiny_data, teacher, data={"val_size": 32})), runs_dir=tmp_path).run_dir
    assert any("did not hold out this run's validation images" in n for n in summary(run)["notes"])
    # not lr-find's: a range test reports no validation numbers for the note to be about
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(student(tiny_data, teacher, data={"val_size": 32})))
    found = cli("lr-find", "--config", path, "--runs-dir", tmp_path / "lrf", "--steps", 20)
    assert found.exit_code == 0 and "validation images" not in found.stderr, found.output


@pytest.mark.parametrize("augment", [False, True], ids=["cached", "per-batch"])
def test_population_members_equal_their_single_runs_in_float64(tiny_data, teacher, tmp_path, augment):
    data = {"val_size": 32, **({"shift": 1, "flip": True} if augment else {})}
    base = config_from_dict(student(tiny_data, teacher, data=data,
                                    train={"precision": "fp64", "label_smoothing": 0.1}))
    members = [
        with_values(base, {"name": "t2", "seed": 0}),
        with_values(base, {"name": "t4", "seed": 0, "distill.temperature": 4.0, "distill.alpha": 0.3,
                           "optimizer.name": "nesterov", "optimizer.momentum": 0.9, "optimizer.lr": 0.05}),
        with_values(base, {"name": "t1", "seed": 1, "distill.temperature": 1.0, "distill.alpha": 1.0}),
    ]
    results = train_population([MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in members])
    assert [r.status for r in results] == ["completed"] * 3
    for cfg in members:
        single = train(cfg, runs_dir=tmp_path / "single")
        assert_same_run(tmp_path / "population" / cfg.name, single.run_dir)
        assert summary(tmp_path / "population" / cfg.name)["distill"] == summary(single.run_dir)["distill"]


def test_members_with_other_teachers_are_refused(tiny_data, teacher, tmp_path):
    from fashionmlp.errors import UserError

    base = config_from_dict(student(tiny_data, teacher))
    with pytest.raises(UserError, match="differ in distill.teacher"):
        train_population([MemberSpec(base, tmp_path / "a", "a"),
                          MemberSpec(with_values(base, {"distill.teacher": None}), tmp_path / "b", "b")])
    assert not (tmp_path / "a").exists()


def test_compare_optimizers_and_lr_find_take_a_teacher(tiny_data, teacher, tmp_path):
    from test_compare import study_config

    study = study_config(tmp_path, tiny_data, distill={"teacher": str(teacher), "temperature": 2.0, "alpha": 0.7})
    result = cli("compare-optimizers", "--config", study, "--optimizers", "sgd,adam", "--seeds", "0,1",
                 "--runs-dir", tmp_path / "runs", "--engine", "population")
    assert result.exit_code == 0, result.output
    runs = [p for p in (tmp_path / "runs").rglob("summary.json") if (p.parent / "checkpoints").is_dir()]
    records = [json.loads(p.read_text()).get("distill") for p in runs]
    assert len(records) == 4 and all(r and r["temperature"] == 2.0 for r in records)
    (summary_md,) = (tmp_path / "runs").glob("compare-*/summary.md")
    assert f"Taught by {teacher.name} (T=2, alpha=0.7): the train loss is the distillation loss" in \
        summary_md.read_text()
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(student(tiny_data, teacher)))
    result = cli("lr-find", "--config", path, "--runs-dir", tmp_path / "lr", "--steps", 30)
    assert result.exit_code == 0, result.output
    out = run_dir_of(result)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["distill"]["fingerprint"] == summary_fingerprint(teacher)
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert len(rows) > 1 and all(math.isfinite(float(r.split(",")[2])) for r in rows[1:])


def summary_fingerprint(teacher: Path) -> str:
    return weights_fingerprint(torch.load(teacher / "checkpoints" / "last.pt", weights_only=True)["model"])


def test_flips_alone_use_the_cached_logits_of_a_tta_teacher(tiny_data, teacher, tmp_path, monkeypatch):
    """A TTA teacher scores an image and its mirror alike: a flipped batch's soft targets are the cached ones,
    so the run equals the one that asks the teacher on every batch."""
    from fashionmlp import distill, run

    cfg = config_from_dict(student(tiny_data, teacher, data={"flip": True}, train={"precision": "fp64"}))
    calls = []
    original = distill.Teacher.logits
    monkeypatch.setattr(distill.Teacher, "logits", lambda self, x, *a: calls.append(len(x)) or original(self, x, *a))
    cached = train(cfg, runs_dir=tmp_path / "cached").run_dir
    assert calls == [summary(cached)["data"]["train_size"]]  # once, for every training image
    monkeypatch.setattr(run, "cached_logits", lambda *args: None)
    per_batch = train(cfg, runs_dir=tmp_path / "per_batch").run_dir
    assert len(calls) > 2  # then once per batch
    assert_same_run(cached, per_batch, engine="single")


SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "mlp_distilled.yaml"


def test_the_shipped_config_without_its_teacher_says_how_to_make_one(tiny_data, teacher, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where runs/cnn_tuned does not exist
    result = cli("train", "--config", SHIPPED, "--set", "data.verify_md5=false", "--data-dir", tiny_data)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "distill.teacher 'runs/cnn_tuned': no such folder; train a teacher first (e.g. fashionmlp train " \
           "--config configs/cnn_tuned.yaml)" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_shipped_config_trains_with_the_teacher_it_is_given(tiny_data, teacher, tmp_path):
    result = cli("train", "--config", SHIPPED, "--set", f"distill.teacher={teacher}", "--set", "train.batch_size=32",
                 "--set", "data.verify_md5=false", "--epochs", "1", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    recorded = summary(run_dir_of(result))["distill"]
    assert (recorded["temperature"], recorded["alpha"], recorded["tta"]) == (2.0, 0.7, True)
    assert recorded["teacher"] == str(teacher.resolve())


def test_a_taught_run_resumes_from_another_working_folder(tiny_data, teacher, tmp_path, monkeypatch):
    """config.yaml records the teacher's folder resolved: a relative path given in one folder still finds it
    when the run is resumed from another."""
    monkeypatch.chdir(teacher.parent)
    cfg = config_from_dict(student(tiny_data, teacher.relative_to(teacher.parent), train={"epochs": 1}))
    run = train(cfg, runs_dir=tmp_path / "runs").run_dir
    assert yaml.safe_load((run / "config.yaml").read_text())["distill"]["teacher"] == str(teacher.resolve())
    monkeypatch.chdir(tmp_path)
    result = cli("train", "--resume", run, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert summary(run)["epochs"] == 2


def test_a_teacher_set_to_nothing_is_refused_not_ignored(tiny_data, tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_data)))
    result = cli("train", "--config", path, "--set", "distill.teacher=", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--set 'distill.teacher=': no value after '='; give one, or distill.teacher=null for none" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_refused_resume_is_one_line_even_when_its_schedule_would_be_replanned(tiny_data, teacher, tmp_path):
    import shutil

    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    cfg = config_from_dict(student(tiny_data, mine, train={"epochs": 1},
                                   optimizer={"schedule": "onecycle", "warmup": 0.2}))
    run = train(cfg, runs_dir=tmp_path / "runs").run_dir
    state = torch.load(mine / "checkpoints" / "last.pt", weights_only=True)
    state["model"] = {k: v + 1 for k, v in state["model"].items()}  # the teacher changed since
    torch.save(state, mine / "checkpoints" / "last.pt")
    result = cli("train", "--resume", run, "--epochs", "2")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "the teacher changed since the config was written" in result.stderr


def test_a_teacher_whose_best_was_chosen_on_the_test_set_gets_a_note(tiny_data, teacher, tmp_path):
    cfg = config_from_dict(student(tiny_data, teacher, distill={"checkpoint": "best"}))
    run = train(cfg, runs_dir=tmp_path).run_dir
    assert any("the test set chose the teacher's weights" in n for n in summary(run)["notes"])
    plain = train(config_from_dict(student(tiny_data, teacher)), runs_dir=tmp_path / "auto").run_dir
    assert not any("the test set chose" in n for n in summary(plain).get("notes", []))


@pytest.mark.parametrize("status, said", [
    ("crashed", "is crashed, not completed"),
    # kill -9 leaves 'running': the note said the teacher was training, as evaluate does not
    ("running", "is running (still training, or its process died without a word), not completed")])
def test_a_teacher_whose_run_did_not_complete_gets_a_note(tiny_data, teacher, tmp_path, status, said):
    """A crashed or interrupted teacher still teaches with its last finished epoch; the student's summary says so."""
    import shutil

    unfinished = tmp_path / "teacher"
    shutil.copytree(teacher, unfinished)
    (unfinished / "summary.json").write_text(json.dumps({**summary(teacher), "status": status}))
    run = train(config_from_dict(student(tiny_data, unfinished)), runs_dir=tmp_path / "runs").run_dir
    assert any(f"{said}: it teaches with the weights of its epoch" in n for n in summary(run)["notes"])
    plain = train(config_from_dict(student(tiny_data, teacher)), runs_dir=tmp_path / "plain").run_dir
    assert not any("not completed" in n for n in summary(plain).get("notes", []))


def test_an_interrupted_taught_population_resumes_from_its_unpinned_config(tiny_data, teacher, tmp_path, monkeypatch):
    """A study's resume hands each member its config as study.yaml gives it (the teacher as the user typed it,
    no fingerprint), while the member's checkpoints record it pinned: the resume was refused as a mismatch."""
    from test_population import StopAfter

    from fashionmlp.population import resume_population

    monkeypatch.chdir(teacher.parent)  # the teacher's folder given relative to the working folder
    cfg = config_from_dict({**student(tiny_data, teacher, train={"epochs": 2}),
                            "distill": {"teacher": teacher.name, "temperature": 2.0, "alpha": 0.7}})
    specs = [MemberSpec(with_values(cfg, {"seed": s}), tmp_path / f"seed{s}", f"seed {s}") for s in (0, 1)]
    assert {r.status for r in train_population(specs, stop=StopAfter(10 + 3))} == {"interrupted"}
    kept = (teacher / "checkpoints" / "last.pt").read_bytes()
    state = torch.load(teacher / "checkpoints" / "last.pt", weights_only=True)
    state["model"] = {k: v + 1 if i == 0 else v for i, (k, v) in enumerate(state["model"].items())}
    torch.save(state, teacher / "checkpoints" / "last.pt")  # the teacher's weights change meanwhile
    try:  # said as such (it blamed the members' config.yaml)
        with pytest.raises(UserError, match="the teacher changed since the config was written"):
            resume_population(specs)
    finally:
        (teacher / "checkpoints" / "last.pt").write_bytes(kept)
    assert {r.status for r in resume_population(specs)} == {"completed"}
    for spec in specs:
        saved = yaml.safe_load((spec.run_dir / "config.yaml").read_text())["distill"]
        assert saved["teacher"] == str(teacher.resolve()) and saved["fingerprint"] == summary(spec.run_dir)[
            "distill"]["fingerprint"]
        assert cli("evaluate", spec.run_dir, "--checkpoint", "best").exit_code == 0


def test_a_sequential_study_teaches_every_run_with_the_teacher_it_started_with(tiny_data, teacher, tmp_path,
                                                                               monkeypatch):
    """A teacher still training taught each run of a sequential study with whatever epoch it had saved when that
    run started (four fingerprints in one study, exit 0), and study.yaml kept the teacher's path as typed (a
    --resume from another working folder failed half-way). Its notes were in the runs' summaries alone."""
    import shutil

    from test_compare import study_config

    import fashionmlp.study.run as study_run

    changing = tmp_path / "teacher"
    shutil.copytree(teacher, changing)
    monkeypatch.chdir(tmp_path)
    started = summary_fingerprint(changing)
    real_train = study_run.train

    def train_then_the_teacher_saves_an_epoch(*args, **kwargs):
        result = real_train(*args, **kwargs)
        state = torch.load(changing / "checkpoints" / "last.pt", weights_only=True)
        state["model"] = {k: v + 0.5 if i == 0 else v for i, (k, v) in enumerate(state["model"].items())}
        torch.save(state, changing / "checkpoints" / "last.pt")
        (changing / "summary.json").write_text(json.dumps({**summary(teacher), "status": "completed"}))
        return result

    monkeypatch.setattr(study_run, "train", train_then_the_teacher_saves_an_epoch)
    (changing / "summary.json").write_text(json.dumps({**summary(teacher), "status": "interrupted"}))
    config = study_config(tmp_path, tiny_data, distill={"teacher": "teacher", "temperature": 2.0, "alpha": 0.7,
                                                          "checkpoint": "last"})
    result = cli("compare-optimizers", "--config", config, "--optimizers", "sgd,adam", "--seeds", "0,1",
                 "--runs-dir", "runs", "--engine", "sequential")
    assert result.exit_code == 0, result.output
    (study_dir,) = (tmp_path / "runs").iterdir()
    members = [p.parent for p in study_dir.rglob("summary.json") if (p.parent / "checkpoints").is_dir()]
    assert len(members) == 4 and {summary(m)["distill"]["fingerprint"] for m in members} == {started}
    pinned = yaml.safe_load((study_dir / "study.yaml").read_text())["base"]["distill"]
    assert pinned["teacher"] == str(changing.resolve()) and pinned["fingerprint"] == started
    said = "is interrupted, not completed: it teaches with the weights of its epoch"
    assert result.stderr.count(said) == 1 and said in (study_dir / "summary.md").read_text()
    # the teacher finished meanwhile; the weights that taught every run are still those of its unfinished run
    assert all(any(said in n for n in summary(m)["notes"]) for m in members)


def test_a_continued_study_teaches_with_one_teacher_checked_before_anything_trains(tiny_data, teacher, tmp_path,
                                                                                  monkeypatch):
    """A continued study reloaded the teacher for each run: with a study.yaml written before teachers were pinned,
    a teacher training on meanwhile taught each new run with another epoch, silently."""
    import shutil

    from test_compare import study_config
    from test_population import StopAfter

    import fashionmlp.study.run as study_run
    from fashionmlp.study import load_study, resume_study, run_study

    moving = tmp_path / "teacher"
    shutil.copytree(teacher, moving)
    raw = yaml.safe_load(study_config(tmp_path, tiny_data, distill={
        "teacher": str(moving), "temperature": 2.0, "alpha": 0.7, "checkpoint": "last"}).read_text())
    stopped = run_study(load_study(raw, only=["sgd", "adam"]), seeds=[0, 1], runs_dir=tmp_path / "runs",
                        engine="sequential", stop=StopAfter(10 + 3))  # in the first run's second epoch
    assert stopped.interrupted
    saved = yaml.safe_load((stopped.study_dir / "study.yaml").read_text())
    for section in [saved["base"], *saved["variants"].values()]:
        section["distill"]["fingerprint"] = None  # as study.yaml was written before 2026-11-30's last session
    (stopped.study_dir / "study.yaml").write_text(yaml.safe_dump(saved))
    last = moving / "checkpoints" / "last.pt"
    kept = last.read_bytes()

    def teacher_saves_an_epoch() -> None:
        state = torch.load(last, weights_only=True)
        state["model"] = {k: v + 0.5 if i == 0 else v for i, (k, v) in enumerate(state["model"].items())}
        torch.save(state, last)

    teacher_saves_an_epoch()  # changed before the resume: refused before any run trains
    files = {p: p.read_bytes() for p in stopped.study_dir.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="the teacher changed since the config was written"):
        resume_study(stopped.study_dir)
    assert {p: p.read_bytes() for p in stopped.study_dir.rglob("*") if p.is_file()} == files
    last.write_bytes(kept)
    for name in ("train", "resume"):  # and changing while the study goes on: the runs keep the one it loaded
        real = getattr(study_run, name)
        monkeypatch.setattr(study_run, name, lambda *a, real=real, **k: (real(*a, **k), teacher_saves_an_epoch())[0])
    done = resume_study(stopped.study_dir)
    assert not done.interrupted
    prints = {summary(o.run_dir)["distill"]["fingerprint"] for o in done.outcomes}
    assert len(done.outcomes) == 4 and prints == {summary_fingerprint(teacher)}
