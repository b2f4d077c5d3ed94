"""The population's epoch loop: every active member takes its optimizer step on its own batch in one batched
forward and backward; each finished epoch is evaluated for all members at once and handed to each member's
recorder. A member that diverges, runs out of patience or is pruned stops costing compute: the stack is
rebuilt without it, and new members may take its place (a sweep's next trials): each cohort (the members of
one seed that joined together) draws its own batches, so every member's run is the one it would have alone."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from fashionmlp import status as st
from fashionmlp.data import epoch_order
from fashionmlp.engine import CHECK_FINITE_EVERY, first_nonfinite
from fashionmlp.optim import lr_at, set_lr
from fashionmlp.population.data import PopulationData, SeedGroup, group_batch
from fashionmlp.population.evaluate import evaluate_members
from fashionmlp.population.stack import Stack, Stepper, forward, member_losses
from fashionmlp.progress import EpochResult, PopulationProgress, StopRequest, evaluation_broke
from fashionmlp.recorder import RunRecorder, RunResult, Trainee
from fashionmlp.run import steps_per_epoch

if TYPE_CHECKING:
    from fashionmlp.config import RunConfig

Tensor = torch.Tensor
Prune = Callable[["Member", EpochResult], str | None]  # the status to end the run with there (pruned), or None
Refill = Callable[[int], list["Member"]]  # free places -> new members at their epoch 0 (or none)
Ended = Callable[["Member"], None]


@dataclass
class Member:
    """One model of a population, with everything a single run of it would have."""

    cfg: RunConfig
    trainee: Trainee  # its module's parameters are views of the stack; `rng` draws its dropout masks
    recorder: RunRecorder
    label: str  # how progress names it, e.g. "adam seed 1"
    losses: list[Tensor] = field(default_factory=list)  # this epoch's step losses (device scalars)
    result: RunResult | None = None  # how it ended, once it has
    joined: int = 0  # the population's epoch after which it joined (0: from the start)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def cohort(self) -> tuple[int, int]:
        """The members that see the same batches: one seed, joined together."""
        return self.seed, self.joined

    def evaluated(self) -> torch.nn.Module:
        return self.trainee.model if self.trainee.ema is None else self.trainee.ema.module


def restack(members: list[Member]) -> Stack:
    """A stack of `members` (after some left): their current values, their optimizers moved onto the new views."""
    old = [list(m.trainee.model.parameters()) for m in members]
    stack = Stack([m.trainee.model for m in members])
    for member, before in zip(members, old):
        optimizer = member.trainee.optimizer
        moved = dict(zip(map(id, before), member.trainee.model.parameters()))
        for group in optimizer.param_groups:
            group["params"] = [moved[id(p)] for p in group["params"]]
        for p in before:
            if p in optimizer.state:
                optimizer.state[moved[id(p)]] = optimizer.state.pop(p)
    stack.stepper = Stepper([m.trainee.optimizer for m in members])  # on the new views
    return stack


def run_population(members: list[Member], data: PopulationData, progress: PopulationProgress,
                   stop: StopRequest | None, prune: Prune | None = None, refill: Refill | None = None,
                   ended: Ended | None = None, capacity: int | None = None, final: bool = False) -> list[RunResult]:
    """Train every member from where its recorder stands (all at the same epoch) to the end of its run; the
    results of every member, those that joined after them included, in the order they came.
    `prune(member, result)` is told of each of a member's epochs and answers whether to stop it there (a
    sweep's pruner; after its last epoch the answer is ignored): the run then ends with the status it names
    ("pruned"; "interrupted" for a trial another worker took) and stops costing compute. `refill(places)`,
    asked after an epoch that left fewer than `capacity` members (default: as many as there are now), gives
    members that join from their epoch 1 on (a sweep's next trials); `ended(member)` is told of every run that
    ended, as it ends (not of those a stop interrupts: their results say so). `final`: no training follows in the
    command, so a stop after the last step (its pictures take half a second a member) has nothing to stop."""
    cfg, members = members[0].cfg, list(members)
    used, steps = steps_per_epoch(cfg, data.n_train)
    capacity = capacity or len(members)
    cohorts: dict[tuple[int, int], SeedGroup] = {}
    rounds, told = 0, set()
    try:  # (a failure in the set-up too is recorded beside every run: their summaries said 'running')
        _join(members, 0, data, cohorts)
        active = sorted(members, key=lambda m: m.cohort)  # the members of a cohort side by side: they share batches
        stack = restack(active)
        while active:
            rounds += 1
            progress.start_epoch(max(m.recorder.epoch for m in active) + 1, cfg.train.epochs, steps, len(active))
            for key in {m.cohort for m in active}:
                cohorts[key].order = epoch_order(data.n_train, cohorts[key].generator)[:used]
            started = time.perf_counter()
            active, stack, interrupted = _train_epoch(active, stack, data, cohorts, steps, progress, stop)
            seconds = time.perf_counter() - started
            for member in active:
                member.trainee.generator.set_state(cohorts[member.cohort].generator.get_state())
            if interrupted:
                reason = stop.reason if stop is not None else st.INTERRUPTED
                for member in active:
                    member.result = member.recorder.finish(reason)
                _tell_ended(members, told, ended)  # those that diverged in the interrupted epoch
                break
            if stop is not None and final and refill is None and all(m.recorder.epoch + 1 == cfg.train.epochs
                                                                     for m in active):
                stop.finishing = (f"evaluating the last epoch, then drawing the pictures of {len(active)} runs "
                                  "(about half a second a run) and writing the results")
            left = _end_epoch(active, data, seconds, progress, prune) if active else active
            _tell_ended(members, told, ended)
            joining = refill(capacity - len(left)) if refill and len(left) < capacity and not (
                stop is not None and stop.requested) else []
            _join(joining, rounds, data, cohorts)
            members += joining
            if len(left) != len(active) or joining:
                active = sorted(left + joining, key=lambda m: m.cohort)
                stack = restack(active) if active else stack
    except Exception as exc:  # a bug or a full disk: record it beside every unfinished run (crashed), then raise
        for member in members:
            if member.result is None:
                member.recorder.crashed(exc)
        raise
    finally:
        progress.close()
    return [m.result for m in members]


def _end_epoch(active: list[Member], data: PopulationData, seconds: float, progress: PopulationProgress,
               prune: Prune | None) -> list[Member]:
    """Each member's epoch evaluated and recorded (one whose evaluation is not finite diverged in its last
    steps, as in a single run), then judged; the members still training."""
    cfg = active[0].cfg
    results = _evaluate(active, data, seconds, cfg.train.eval_batch_size)
    for member, result in zip(active, results):
        broke = evaluation_broke(result)
        if broke is not None:
            member.result = member.recorder.finish(st.DIVERGED, broke)
    kept = [(m, r) for m, r in zip(active, results) if m.result is None]
    for member, result in kept:
        member.recorder.record(result)
    progress.end_epoch([(m.label, r) for m, r in kept], cfg.train.epochs)
    still = _after_epoch([m for m, _ in kept], [r for _, r in kept], prune, cfg.train.epochs)
    for member, _ in kept:  # a single run says so as it ends; a member's lines just stopped
        early = (member.result.summary.get("early_stopping") or {}) if member.result is not None else {}
        if early.get("stopped_after_epoch"):
            progress.stopped_early(member.label, early)
    return still


def _join(members: list[Member], joined: int, data: PopulationData, cohorts: dict) -> None:
    """Members starting after the population's epoch `joined`: their cohorts, each drawing its batches with its
    first member's data generator (as each would alone: its seed's split, its own order from its epoch 1)."""
    for member in members:
        if member.seed not in data.groups:
            raise ValueError(f"seed {member.seed} has no split in this population's data")
        member.joined = joined
        if member.cohort not in cohorts:
            cohorts[member.cohort] = dataclasses.replace(data.groups[member.seed],
                                                         generator=member.trainee.generator, order=None)


def _tell_ended(members: list[Member], told: set, ended: Ended | None) -> None:
    """`ended` of each run that ended since it was last asked, except runs a stop interrupted."""
    for member in members:
        if ended is not None and member.result is not None and id(member) not in told and \
                member.result.status != st.INTERRUPTED:
            told.add(id(member))
            ended(member)


def _after_epoch(active: list[Member], results: list, prune: Prune | None, epochs: int) -> list[Member]:
    """Each member judged by the pruner, then early stopping first, as in a single run; the members whose run
    ended (their last epoch, early stopping, pruning) get their result; those still training are returned."""
    for member, result in zip(active, results):
        ending = prune(member, result) if prune is not None else None
        if member.recorder.epoch >= epochs:
            member.result = member.recorder.finish(st.COMPLETED, None, False)
        elif member.recorder.out_of_patience():
            member.result = member.recorder.finish(st.COMPLETED, result, True)
        elif ending:
            member.result = member.recorder.finish(ending)
    return [m for m in active if m.result is None]


def _train_epoch(active: list[Member], stack: Stack, data: PopulationData, cohorts: dict, steps: int,
                 progress: PopulationProgress, stop: StopRequest | None) -> tuple[list[Member], Stack, bool]:
    """One epoch of optimizer steps; returns the members still training, their stack, and whether a stop was
    requested (the unfinished epoch is then dropped, as in a single run)."""
    cfg, template = active[0].cfg, active[0].trainee.model
    batch, total = cfg.train.batch_size, steps * cfg.train.epochs
    autocast = torch.bfloat16 if cfg.train.precision == "bf16" else None
    for member in active:
        member.losses = []
    members = _Members.of(active, stack, cfg.model.dropout)  # made again when one leaves
    for step in range(steps):
        if stop is not None and stop.requested:  # before each step: the epoch's last step ends the epoch whole
            # a loss that went non-finite since the last check is 'diverged', as in a single run
            gone = _diverged(active, step, total) if step else []
            active = [m for m in active if m not in gone]
            return active, stack, bool(active)  # the caller ends the runs left as interrupted
        batches = [group_batch(data, cohorts[key], step * batch, batch, cfg) for key in members.cohorts]
        x = torch.stack([images for images, _, _ in batches])  # (S, B, 1, 28, 28): each cohort's batch once
        y = torch.stack([labels for _, labels, _ in batches]).repeat_interleave(members.repeats, 0)
        distill = None
        if data.teacher is not None:  # (T, alpha, the teacher's logits of each member's batch)
            teacher = torch.stack([logits for _, _, logits in batches]).repeat_interleave(members.repeats, 0)
            distill = (*members.distill, teacher)
        for member in active:
            set_lr(member.trainee.optimizer, lr_at(member.cfg.optimizer, member.recorder.global_step + step, total))
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            logits = forward(template, stack.params, stack.buffers, x, members.sizes, True, members.rngs)
            losses = member_losses(logits, y, members.smoothing, distill)
        stack.count_batch()  # in the forward, as a single model's BatchNorm counts: before the EMA reads it
        stack.zero_grad()
        losses.sum().backward()
        stack.hand_out_grads()
        stack.stepper.step()  # every member's optimizer step, one call per optimizer class
        for member in active:
            if member.trainee.ema is not None:
                member.trainee.ema.update_parameters(member.trainee.model)
        for member, value in zip(active, losses.detach().unbind(0)):
            member.losses.append(value)
        progress.step(step + 1)
        if (step + 1) % CHECK_FINITE_EVERY == 0 or step + 1 == steps:
            diverged = _diverged(active, step + 1, total)
            if diverged:
                active = [m for m in active if m not in diverged]
                if active:
                    stack = restack(active)
                    members = _Members.of(active, stack, cfg.model.dropout)
        if not active:
            return active, stack, False
    return active, stack, False


@dataclass
class _Members:
    """What a step needs of the active members, made once per epoch (and again when one leaves), not per step:
    their cohorts in member order, how many members share each cohort's batch, and their per-member values."""

    cohorts: list[tuple[int, int]]
    sizes: list[int]
    repeats: Tensor  # sizes, on the device: each cohort's labels (and teacher logits) repeated per member
    smoothing: Tensor | None  # (N,) label smoothing, None when no member smooths
    distill: tuple[Tensor, Tensor]  # (N,) temperatures and alphas
    rngs: list[torch.Generator] | None  # each member's dropout generator, with dropout

    @classmethod
    def of(cls, active: list[Member], stack: Stack, dropout: float) -> _Members:
        like = next(iter(stack.params.values()))  # the members' device and dtype, which their images have too

        def values(pick) -> Tensor:
            return torch.tensor([pick(m.cfg) for m in active], device=like.device, dtype=like.dtype)

        cohorts = list(dict.fromkeys(m.cohort for m in active))
        sizes = [sum(m.cohort == key for m in active) for key in cohorts]
        smoothing = values(lambda c: c.train.label_smoothing)
        return cls(cohorts, sizes, torch.tensor(sizes, device=like.device),
                   smoothing if bool(smoothing.any()) else None,
                   (values(lambda c: c.distill.temperature), values(lambda c: c.distill.alpha)),
                   [m.trainee.rng for m in active] if dropout else None)


def _diverged(active: list[Member], steps_done: int, total: int) -> list[Member]:
    """Members whose loss stopped being finite since the last check: each run ends `diverged` here, as its
    single run would at the same check."""
    gone = []
    for member in active:
        start = steps_done - (steps_done % CHECK_FINITE_EVERY or CHECK_FINITE_EVERY)
        bad = first_nonfinite(member.losses, start)
        if bad is None:
            continue
        # the lr of the step whose loss stopped being finite (the check comes up to 50 steps later)
        lr = lr_at(member.cfg.optimizer, member.recorder.global_step + bad - 1, total)
        epoch = member.recorder.epoch + 1
        row = {"epoch": epoch, "train_loss": math.nan, "lr": lr, "seconds": 0.0}
        result = EpochResult(epoch, row, [float(v) for v in member.losses], math.nan, status=st.DIVERGED,
                             nonfinite_step=bad)
        member.result = member.recorder.finish(st.DIVERGED, result)
        gone.append(member)
    return gone


def _evaluate(active: list[Member], data: PopulationData, seconds: float, eval_batch_size: int) -> list[EpochResult]:
    """Each member's EpochResult: its training loss and learning rate, its share of the epoch's seconds, and
    its evaluation on the test images and its seed's validation images."""
    models = [m.evaluated() for m in active]
    tta = [m.cfg.train.tta == "flip" for m in active]
    tested = evaluate_members(models, data.test, tta, eval_batch_size)
    checked: list[dict | None] = [None] * len(active)
    for seed in {m.seed for m in active}:
        val = data.groups[seed].val
        if val is None:
            continue
        chosen = [i for i, m in enumerate(active) if m.seed == seed]
        for i, result in zip(chosen, evaluate_members([models[i] for i in chosen], val, [tta[i] for i in chosen],
                                                      eval_batch_size)):
            checked[i] = result
    share = seconds / len(active)  # this member's share of the epoch: the whole population's cost / members
    sizes = _batch_sizes(data, active[0].cfg)  # every member took the epoch's steps: the same batches' sizes
    results = []
    for member, test, val in zip(active, tested, checked):
        losses = torch.stack(member.losses).double().cpu()
        train_loss = float((losses * sizes).sum() / sizes.sum())
        epoch = member.recorder.epoch + 1
        row = {"epoch": epoch, "train_loss": train_loss, "lr": member.trainee.optimizer.param_groups[0]["lr"],
               "seconds": share, "test_loss": test["loss"], "test_accuracy": test["accuracy"]}
        if val is not None:
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        samples = float(sizes.sum())
        results.append(EpochResult(epoch, row, losses.tolist(), samples / share if share > 0 else math.nan,
                                   test["confusion"]))
    return results


def _batch_sizes(data: PopulationData, cfg: RunConfig) -> Tensor:
    """The images in each of an epoch's steps (the last batch may be shorter)."""
    used, steps = steps_per_epoch(cfg, data.n_train)
    sizes = torch.full((steps,), float(cfg.train.batch_size), dtype=torch.float64)
    sizes[-1] = used - cfg.train.batch_size * (steps - 1)
    return sizes
