"""The population engine against its oracle, the single-run path: in float64 every member's per-step losses and
weights equal its own `train` run's (to 1e-9), whatever its seed, optimizer and recipe; and each member's run
folder is an ordinary one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fashionmlp.config import config_from_dict, with_values
from fashionmlp.errors import UserError
from fashionmlp.population import MemberSpec, resume_population, train_population
from fashionmlp.progress import PopulationProgress, StopRequest
from fashionmlp.run import train

from helpers import cli, summary, tiny_config

TOLERANCE = 1e-9  # relative, in float64: a batched kernel rounds differently, nothing more

MODELS = {"mlp": {"name": "mlp", "hidden": [32, 32], "dropout": 0.2},
          "cnn": {"name": "cnn", "channels": [4, 8], "hidden": [16], "batchnorm": True}}


def base(tiny_data, model: str, **train):
    return config_from_dict(tiny_config(tiny_data, model=MODELS[model],
                                        train={"epochs": 2, "precision": "fp64", "threads": 1, **train},
                                        data={"val_size": 64, "shift": 1, "flip": True}))


def variety(cfg):
    """Two seeds, four optimizers, and every per-member ingredient of the recipe."""
    return [
        with_values(cfg, {"seed": 0, "name": "sgd", "optimizer": {"name": "sgd", "lr": 0.05}}),
        with_values(cfg, {"seed": 0, "name": "adamw", "train.label_smoothing": 0.1, "train.ema": 0.9,
                          "train.tta": "flip", "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1,
                                                             "decay_params": "weights", "schedule": "onecycle",
                                                             "warmup": 0.2}}),
        with_values(cfg, {"seed": 1, "name": "nesterov", "train.patience": 5,
                          "optimizer": {"name": "nesterov", "lr": 0.02, "momentum": 0.9, "schedule": "cosine"}}),
        with_values(cfg, {"seed": 1, "name": "adam", "optimizer": {"name": "adam", "lr": 0.003}}),
    ]


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def assert_same_run(population_run: Path, single_run: Path, engine: str = "population") -> None:
    a, b = last(population_run), last(single_run)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    la, lb = a["step_losses"], b["step_losses"]
    assert len(la) == len(lb) > 0
    assert float(((la - lb).abs() / lb.abs()).max()) <= TOLERANCE
    for key, value in b["model"].items():
        if value.is_floating_point():
            scale = float(value.abs().max()) or 1.0
            assert float((a["model"][key] - value).abs().max()) <= TOLERANCE * scale, key
        else:
            assert torch.equal(a["model"][key], value), key
    sa, sb = summary(population_run), summary(single_run)
    assert sa["fingerprints"] == sb["fingerprints"]  # the same initial weights and first batch
    for key in ("test_accuracy", "val_accuracy"):
        assert sa["final"].get(key) == sb["final"].get(key), key
    assert sa["engine"] == engine and sb["engine"] == "single"  # what trained the last session


def test_batchnorm_counters_averaged_by_ema_equal_the_single_runs(tiny_data, tmp_path):
    """The population counted a BatchNorm batch after the EMA's update, a single model in its forward: the
    average's num_batches_tracked (an integer EMA, truncated) ended at 149 where the run alone has 150."""
    cfg = config_from_dict(tiny_config(tiny_data, model={"name": "mlp", "hidden": [16], "batchnorm": True},
                                       train={"epochs": 4, "batch_size": 8, "precision": "fp64", "threads": 1,
                                              "ema": 0.9}))
    members = [with_values(cfg, {"seed": seed, "name": f"m{seed}"}) for seed in (0, 1)]
    train_population([MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in members])
    for c in members:
        single = train(c, runs_dir=tmp_path / "single").run_dir
        assert_same_run(tmp_path / "population" / c.name, single)  # the integers with torch.equal
        counter = last(single)["model"]["2.num_batches_tracked"]
        assert int(counter) == 150 and torch.equal(last(tmp_path / "population" / c.name)["model"][
            "2.num_batches_tracked"], counter)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_member_equals_its_single_run_in_float64(tiny_data, tmp_path, model):
    members = variety(base(tiny_data, model))
    results = train_population([MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in members])
    assert [r.status for r in results] == ["completed"] * len(members)
    for cfg in members:
        single = train(cfg, runs_dir=tmp_path / "single")
        assert_same_run(tmp_path / "population" / cfg.name, single.run_dir)
    # members of one seed saw the same batches: the study's fairness
    assert summary(tmp_path / "population" / "sgd")["fingerprints"] == \
        summary(tmp_path / "population" / "adamw")["fingerprints"]


def test_three_seeds_on_two_threads_equal_their_single_runs_in_float64(tiny_data, tmp_path, monkeypatch):
    """Three seeds on two CPU threads: the first layer as one product per seed (population.stack._GroupedLinear),
    and members with equal optimizer settings stepped as one merged group; each still equals its single run."""
    import fashionmlp.population.stack as stack

    used = []
    monkeypatch.setattr(stack._GroupedLinear, "forward",
                        staticmethod(lambda ctx, *a, f=stack._GroupedLinear.forward: used.append(1) or f(ctx, *a)))
    cfg = base(tiny_data, "mlp", threads=2)
    members = variety(cfg) + [with_values(m, {"seed": 2, "name": f"{m.name}2"}) for m in variety(cfg)[::3]]
    results = train_population([MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in members])
    assert [r.status for r in results] == ["completed"] * len(members) and used
    for cfg in members:
        assert_same_run(tmp_path / "population" / cfg.name, train(cfg, runs_dir=tmp_path / "single").run_dir)


def test_grouped_first_layer_equals_the_batched_product_in_float64():
    from fashionmlp.population.stack import _GroupedLinear

    torch.manual_seed(0)
    images = torch.randn(3, 784, 16, dtype=torch.float64)
    weight = torch.randn(3, 20, 784, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, 20, 1, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 20, 16, dtype=torch.float64)
    expected = torch.baddbmm(bias, weight, images)
    grads = torch.autograd.grad((expected * upstream).sum(), (weight, bias))
    got = _GroupedLinear.apply(images, weight, bias)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)
    for a, b in zip(torch.autograd.grad((got * upstream).sum(), (weight, bias)), grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_members_that_join_a_running_population_equal_their_single_runs_in_float64(tiny_data, tmp_path):
    """A member pruned after its first epoch leaves a place; a new member (the same seed as the one that left,
    so a cohort of its own: its batches from its own epoch 1) joins and trains its whole run beside the one
    still going. Every completed member equals its single run; `ended` hears of each run as it ends."""
    cfg = base(tiny_data, "mlp")
    first = [with_values(cfg, {"seed": 0, "name": "a", "optimizer": {"name": "sgd", "lr": 0.05}}),
             with_values(cfg, {"seed": 1, "name": "b", "optimizer": {"name": "nesterov", "lr": 0.02, "momentum": 0.9,
                                                                    "schedule": "cosine"}})]
    late = [with_values(cfg, {"seed": 0, "name": "c", "train.ema": 0.9, "train.label_smoothing": 0.1,
                              "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1,
                                            "decay_params": "weights", "schedule": "onecycle", "warmup": 0.2}})]
    spec = {c.name: MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in first + late}
    asked, ended = [], []

    def more(places: int):
        asked.append(places)
        return [spec[c.name] for c in late[:places]] if len(asked) == 1 else []

    results = train_population([spec["a"], spec["b"]], prune=lambda m, r: "pruned" if m.cfg.name == "a" else None, more=more,
                               ended=lambda m: ended.append((m.cfg.name, m.recorder.epoch, m.result.status)))
    assert [r.status for r in results] == ["pruned", "completed", "completed"]
    assert ended == [("a", 1, "pruned"), ("b", 2, "completed"), ("c", 2, "completed")]
    assert asked == [1, 1, 2]  # after each epoch that left a place: a's, b's, then c's end
    for cfg in (first[1], late[0]):
        assert_same_run(tmp_path / "population" / cfg.name, train(cfg, runs_dir=tmp_path / "single").run_dir)


def test_a_diverging_member_stops_and_the_others_go_on(tiny_data, tmp_path):
    cfg = base(tiny_data, "mlp", epochs=3)
    members = [with_values(cfg, {"name": "wild", "optimizer": {"name": "sgd", "lr": 1e30}}),
               with_values(cfg, {"name": "calm", "optimizer": {"name": "sgd", "lr": 0.05}})]
    results = train_population([MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in members])
    assert [r.status for r in results] == ["diverged", "completed"]
    for cfg in members:
        single = train(cfg, runs_dir=tmp_path / "single")
        assert single.status == summary(tmp_path / "population" / cfg.name)["status"]
        if single.status == "diverged":
            assert summary(tmp_path / "population" / cfg.name)["diverged"] == single.summary["diverged"]
        else:
            assert_same_run(tmp_path / "population" / cfg.name, single.run_dir)


def test_early_stopping_is_per_member(tiny_data, tmp_path):
    cfg = base(tiny_data, "mlp", epochs=6)
    members = [with_values(cfg, {"name": "patient", "optimizer": {"name": "sgd", "lr": 0.05}}),
               with_values(cfg, {"name": "stopped", "train.patience": 1,
                                 "optimizer": {"name": "sgd", "lr": 1e-5}})]  # barely moves: no better val acc
    results = train_population([MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in members])
    stopped = summary(tmp_path / "population" / "stopped")
    assert results[1].status == "completed" and stopped["early_stopping"]["stopped_after_epoch"] < 6
    assert summary(tmp_path / "population" / "patient")["epochs"] == 6
    for cfg in members:
        assert_same_run(tmp_path / "population" / cfg.name, train(cfg, runs_dir=tmp_path / "single").run_dir)


class StopAfter(StopRequest):
    """Requested once `steps` optimizer steps have been asked about."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    @property
    def requested(self) -> bool:
        self.steps -= 1
        return self.steps < 0

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


def test_a_stop_in_the_epoch_a_member_diverged_tells_its_end_and_not_the_interrupted_ones(tiny_data, tmp_path):
    """`ended` hears of a run that diverged in the epoch a stop interrupts (a sweep tells it to the study), not of
    the runs the stop interrupted (a sweep queues those again)."""
    cfg = base(tiny_data, "mlp")
    members = [with_values(cfg, {"name": "wild", "optimizer": {"name": "sgd", "lr": 1e30}}),
               with_values(cfg, {"name": "calm", "optimizer": {"name": "sgd", "lr": 0.05}})]
    ended = []
    results = train_population([MemberSpec(c, tmp_path / c.name, c.name) for c in members],
                               stop=StopAfter(7), ended=lambda m: ended.append(m.cfg.name))  # 8 steps an epoch
    assert [r.status for r in results] == ["diverged", "interrupted"]
    assert ended == ["wild"]


def test_a_member_that_diverged_before_a_stop_between_checks_is_diverged_as_its_single_run(tiny_data, tmp_path):
    """The loss is checked every 50 steps: a stop at step 7 of an epoch of 8, after a member's loss went NaN,
    recorded the member 'interrupted' (exit 130, a resume command) where its single run says 'diverged'."""
    cfg = base(tiny_data, "mlp")
    members = [with_values(cfg, {"name": "wild", "optimizer": {"name": "sgd", "lr": 1e30}}),
               with_values(cfg, {"name": "calm", "optimizer": {"name": "sgd", "lr": 0.05}})]
    results = train_population([MemberSpec(c, tmp_path / c.name, c.name) for c in members], stop=StopAfter(6))
    single = train(members[0], runs_dir=tmp_path / "single", stop=StopAfter(6))
    assert single.status == "diverged", single.summary
    assert [r.status for r in results] == ["diverged", "interrupted"]
    assert summary(tmp_path / "wild")["diverged"] == single.summary["diverged"]


@pytest.mark.parametrize("engine", ["single", "population"])
def test_a_stop_during_an_epochs_last_step_keeps_the_epoch(tiny_data, tmp_path, monkeypatch, engine):
    """Ctrl-C while the epoch's last step ran: the step finished, then the whole epoch was dropped (a full-batch
    run lost an epoch to every Ctrl-C). The epoch is evaluated and saved; the next one does not start."""
    from fashionmlp import engine as single_engine
    from fashionmlp.population.stack import Stepper

    stop, steps = StopRequest(), []

    def counted(step):
        def during_the_step(*args, **kwargs):
            steps.append(1)
            if len(steps) == 8:  # 8 steps an epoch: the request comes while epoch 1's last step runs
                stop.request()
            return step(*args, **kwargs)
        return during_the_step

    if engine == "single":
        monkeypatch.setattr(single_engine, "train_step", counted(single_engine.train_step))
    else:
        monkeypatch.setattr(Stepper, "step", counted(Stepper.step))
    cfg = base(tiny_data, "mlp", epochs=3)
    members = [with_values(cfg, {"name": f"seed{s}", "seed": s}) for s in (0, 1)]
    if engine == "single":
        ends = [train(members[0], run_dir=tmp_path / "seed0", stop=stop)]
    else:
        ends = train_population([MemberSpec(c, tmp_path / c.name, c.name) for c in members], stop=stop)
    assert {r.status for r in ends} == {"interrupted"} and len(steps) == 8
    for result in ends:
        assert result.summary["epochs"] == 1 and last(result.run_dir)["epoch"] == 1


def test_interrupt_then_resume_the_population_or_one_member(tiny_data, tmp_path):
    members = variety(base(tiny_data, "mlp", epochs=3))
    specs = [MemberSpec(c, tmp_path / "population" / c.name, c.name) for c in members]
    results = train_population(specs, stop=StopAfter(8 + 3))  # 8 steps per epoch: stops in epoch 2
    assert {r.status for r in results} == {"interrupted"}
    assert all(last(s.run_dir)["epoch"] == 1 for s in specs)
    alone = cli("train", "--resume", specs[2].run_dir)  # one member continues by itself
    assert alone.exit_code == 0, alone.output
    resumed = resume_population(specs[:2] + specs[3:])  # the others together
    assert {r.status for r in resumed} == {"completed"}
    for i, cfg in enumerate(members):
        assert_same_run(tmp_path / "population" / cfg.name, train(cfg, runs_dir=tmp_path / "single").run_dir,
                        "single" if i == 2 else "population")


def test_member_folders_are_ordinary_runs(tiny_data, tmp_path):
    cfg = config_from_dict(tiny_config(tiny_data, train={"epochs": 1}))
    specs = [MemberSpec(with_values(cfg, {"seed": s}), tmp_path / f"seed{s}", f"seed {s}") for s in (0, 1)]
    train_population(specs)
    for spec in specs:
        run = spec.run_dir
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
        assert (run / "loss_curve.png").is_file() and list(run.glob("events.out.tfevents.*"))
        for command in (["evaluate", run], ["predict", run, "--index", "0"], ["inspect", run]):
            result = cli(*command)
            assert result.exit_code == 0, result.output
    # each checkpoint holds its own member's tensors, not the stack they are views of: a single run's size
    single = train(specs[0].cfg, runs_dir=tmp_path / "single").run_dir / "checkpoints" / "last.pt"
    member = specs[0].run_dir / "checkpoints" / "last.pt"
    assert abs(member.stat().st_size - single.stat().st_size) < 0.05 * single.stat().st_size
    for tensor in last(specs[0].run_dir)["model"].values():
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def test_members_of_different_shapes_are_refused(tiny_data, tmp_path):
    cfg = config_from_dict(tiny_config(tiny_data))
    specs = [MemberSpec(cfg, tmp_path / "a", "a"),
             MemberSpec(with_values(cfg, {"train.batch_size": 16}), tmp_path / "b", "b")]
    with pytest.raises(UserError, match=r"members differ in train.batch_size \(32 and 16\)"):
        train_population(specs)
    assert not (tmp_path / "a").exists()


def test_a_population_too_large_for_memory_is_refused_naming_what_fits(tiny_data, tmp_path, monkeypatch):
    from fashionmlp import device

    cfg = config_from_dict(tiny_config(tiny_data))
    per_model, shared = device.memory_parts(cfg, 480, 320)
    import fashionmlp.population.run

    small = lambda dev: (2**30 * 10, "this machine's")  # noqa: E731
    per_model = (9 * 2**30 - shared) / 3.5  # 3.5 models in the 9 GiB (90%) a population may use
    for module in (device, fashionmlp.population.run):
        monkeypatch.setattr(module, "memory_parts", lambda *args: (per_model, shared))
    monkeypatch.setattr(device, "memory_total", small)
    specs = [MemberSpec(with_values(cfg, {"seed": s}), tmp_path / str(s), str(s)) for s in range(5)]
    with pytest.raises(UserError, match=r"a population of 5 of these models needs about 12.9 GiB, more than the "
                                        r"9.0 GiB it may use \(90% of this machine's 10.0 GiB\); at most 3 fit at "
                                        "once"):  # it said "more than cpu has"
        train_population(specs)
    assert not any(tmp_path.iterdir())


def test_one_shared_step_per_optimizer_class_equals_each_optimizer_stepping_alone():
    """population.stack.Stepper: the members' groups and state, stepped in one call per class (groups with the
    same settings merged), bit for bit as their own step() calls, with the state left in each member's optimizer
    (its checkpoint)."""
    from fashionmlp.config import load_config
    from fashionmlp.optim import build_optimizer, set_lr
    from fashionmlp.population.stack import Stepper

    sections = [{"optimizer.name": "sgd", "optimizer.momentum": 0.9},
                {"optimizer.name": "nesterov", "optimizer.momentum": 0.5, "optimizer.weight_decay": 1e-3},
                {"optimizer.name": "adam", "optimizer.lr": 1e-3},
                {"optimizer.name": "adamw", "optimizer.lr": 2e-3, "optimizer.decay_params": "weights"}] * 2

    def members(seed: int):
        torch.manual_seed(seed)
        models = [torch.nn.Linear(5, 3) for _ in sections]
        return models, [build_optimizer(load_config(None, values=s).optimizer, m.parameters())
                        for m, s in zip(models, sections)]

    alone, alone_opts = members(0)
    shared, shared_opts = members(0)
    stepper = Stepper(shared_opts)
    assert len(stepper.shared) == 3  # SGD (sgd and nesterov), Adam, AdamW
    set_lr(shared_opts[-1], 5e-3)  # one of the two adamw members changes its lr: its groups no longer merge
    set_lr(alone_opts[-1], 5e-3)
    for step in range(3):
        torch.manual_seed(100 + step)
        grads = [[torch.randn_like(p) for p in m.parameters()] for m in alone]
        for models in (alone, shared):
            for m, gs in zip(models, grads):
                for p, g in zip(m.parameters(), gs):
                    p.grad = g.clone()
        for opt in alone_opts:
            opt.step()
        stepper.step()
        # sgd, nesterov, adam: the two members' groups merged; adamw: 2 decay groups x 2 lrs
        assert [len(opt.param_groups) for opt, _ in stepper.shared] == [2, 1, 4]
    for a, b, oa, ob in zip(alone, shared, alone_opts, shared_opts):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
        sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
        assert sa.keys() == sb.keys() and len(sa) == 2
        for key in sa:
            assert all(torch.equal(torch.as_tensor(sa[key][k]), torch.as_tensor(sb[key][k])) for k in sa[key])


def test_bf16_logits_give_the_float32_loss_a_single_run_computes():
    """Under bf16 autocast a single run's F.cross_entropy computes in float32; the population's own loss kept
    bf16 (epoch train losses such as 1.192375 = 2384.75 / 2000, and other gradients)."""
    from fashionmlp.population.stack import member_losses

    torch.manual_seed(0)
    logits = torch.randn(3, 10, 16).to(torch.bfloat16)  # (N, 10, B)
    y = torch.randint(0, 10, (3, 16))
    smoothing = torch.tensor([0.0, 0.1, 0.2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = member_losses(logits, y, smoothing)
        single = [F.cross_entropy(logits[i].t(), y[i], label_smoothing=float(smoothing[i])) for i in range(3)]
    assert losses.dtype == torch.float32
    assert torch.allclose(losses, torch.stack(single), rtol=1e-6, atol=0)


@pytest.mark.parametrize("final", [True, False])
def test_only_a_commands_last_population_says_a_stop_has_nothing_left_to_stop(tiny_data, tmp_path, final):
    """A stop after a population's last step has nothing left to stop only where no training follows in the
    command: a continued study trains one population per epoch group, then the fresh runs, and every later Ctrl-C
    said "the training has ended" while it stopped the training in progress."""
    from fashionmlp.progress import StopRequest

    cfg = config_from_dict(tiny_config(tiny_data, train={"epochs": 2, "batch_size": 32, "threads": 1}))
    members = [with_values(cfg, {"seed": seed, "name": f"m{seed}"}) for seed in (0, 1)]
    stop, seen = StopRequest(), []

    class Watch(PopulationProgress):
        def start_epoch(self, epoch, epochs, steps, members):
            seen.append(stop.finishing)

        def end_epoch(self, results, epochs):
            seen.append(stop.finishing)

    train_population([MemberSpec(c, tmp_path / c.name, c.name) for c in members], progress=Watch(), stop=stop,
                     final=final)
    assert seen[:3] == [None, None, None]  # epoch 1, its end, epoch 2
    assert (seen[3] is not None) == final and (not final or seen[3].startswith("evaluating the last epoch"))
