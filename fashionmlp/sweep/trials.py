"""A worker's batch of trials: asked from the study together (ask/tell), each configured from its sampled values,
trained in its own run folder (those of one shape together, on the population engine), then told.

The pruner judges each trial after each epoch, alone or as a member of a population; a pruned member stops
costing compute. A stop request fails every unfinished trial of the batch and queues its values again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashionmlp import status as st
from fashionmlp.errors import ConfigError, UserError
from fashionmlp.population import MemberSpec, resume_population, setup_population, train_population
from fashionmlp.population.run import SHARED, shared_values
from fashionmlp.progress import PopulationProgress, Progress, StopRequest
from fashionmlp.recorder import RunResult
from fashionmlp.resume import resume
from fashionmlp.run import train
from fashionmlp.sweep.backend import TrialState, optuna
from fashionmlp.sweep.owners import _owner
from fashionmlp.sweep.retries import Earlier, Stopped, resumable
from fashionmlp.sweep.space import trial_config
from fashionmlp.sweep.spec import SweepSpec
from fashionmlp.sweep.storage import OWNER

Echo = Callable[[str], None]


@dataclass
class Asked:
    """A trial asked from the study, with the run it trains."""

    trial: Any  # optuna.Trial
    cfg: Any  # RunConfig
    run_dir: Path
    continues: Stopped | None = None  # the run this retry continues, in the stead of cfg and run_dir


class TrialStop:
    """A trial's stop request: the user's (Ctrl-C, SIGTERM), or the pruner's verdict (the run then ends
    "pruned")."""

    def __init__(self, user: StopRequest):
        self.user = user
        self.pruned = False
        self.taken = False  # another worker failed the trial meanwhile: the run ends interrupted (continuable)

    @property
    def requested(self) -> bool:  # read by engine.train_one_epoch before every step
        return self.pruned or self.taken or self.user.requested

    @property
    def reason(self) -> str:  # read by run.run_epochs when the run stops
        return st.INTERRUPTED if self.user.requested or self.taken else st.PRUNED


TAKEN = "taken"  # judge's verdict for a trial another worker failed meanwhile


def judge(trial, spec: SweepSpec, result, epochs: int, echo: Echo) -> bool | str:
    """Report a trial's finished epoch to the study (and a line to `echo`); True when the pruner stops it, TAKEN
    when another worker had failed it meanwhile (its values are queued again: the run stops)."""
    value = result.metrics[spec.metric]
    echo(f"trial {trial.number:>3} epoch {result.epoch}/{epochs}  {spec.metric} {value:.4f}  "
         f"{result.metrics['seconds']:.1f}s")
    try:
        trial.report(value, result.epoch)
    except optuna.exceptions.UpdateFinishedTrialError:  # a traceback ended the worker; its next trials unrun
        echo(f"trial {trial.number:>3}: it was failed meanwhile (its heartbeats were not recorded for longer than "
             "the grace period: suspended, or cut off from the database) and its values queued again; this run "
             "stops here")
        return TAKEN
    return result.epoch < epochs and trial.should_prune()


def report_earlier(trial, spec: SweepSpec, history: list[dict]) -> None:
    """The epochs a continued run finished before it stopped, reported to the study as its own."""
    for row in history:
        trial.report(row[spec.metric], int(row["epoch"]))


class Report(Progress):
    """A single trial's progress: each epoch judged (the run stops before the next epoch's first step when
    pruned); a continued run's `earlier` epochs reported once it has started."""

    def __init__(self, trial, spec: SweepSpec, stop: TrialStop, echo: Echo, earlier: list[dict] | None = None):
        self.trial, self.spec, self.stop, self.echo, self.earlier = trial, spec, stop, echo, earlier

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.earlier:
            report_earlier(self.trial, self.spec, self.earlier)
            self.earlier = None

    def end_epoch(self, result, epochs: int) -> None:
        verdict = judge(self.trial, self.spec, result, epochs, self.echo)
        if verdict == TAKEN:
            self.stop.taken = True
        elif verdict:
            self.stop.pruned = True


def configure(trial, spec: SweepSpec, study: str, sweep_dir: Path, threads: int,
              continues: str | None = None) -> Asked | None:
    """Mark the trial as this process's, draw its values and make its config; a combination of values that no
    config accepts fails the trial (None). `continues`: the run folder of the stopped trial this one retries,
    which it continues when it can (resumable) instead of training again from the start."""
    trial.set_user_attr(OWNER, _owner(trial.number))
    trial.set_user_attr("status", st.RUNNING)  # replaces what a retried trial inherited
    trial.set_user_attr("epochs", None)  # known when the run ends
    trial.set_user_attr("seconds", None)  # the run's own, likewise
    values = {p.key: p.suggest(trial) for p in spec.params}
    name = f"trial-{trial.number:04d}"
    try:
        cfg = trial_config(spec, values, f"{study}-{name}", threads)
    except ConfigError as exc:
        trial.set_user_attr("error", str(exc))
        trial.set_user_attr("run_dir", None)  # it trains none (a retry inherits the stopped trial's)
        return None
    run_dir = sweep_dir / name
    stopped = None if continues is None else resumable(Path(continues), cfg, sweep_dir)
    trial.set_user_attr("run_dir", str((run_dir if stopped is None else stopped.run_dir).resolve()))
    return Asked(trial, cfg, run_dir, stopped)


def duplicate_of(trial, books) -> int | None:
    """The lower-numbered trial with the same grid point as `trial` (a FrozenTrial) that is not failed, if any
    (two processes that created the study at once may both have queued the grid; the lower number trains it)."""
    mine = trial.system_attrs.get("fixed_params")
    if mine is None:
        return None
    for other in books.get_trials(deepcopy=False):
        if other.number < trial.number and other.state != TrialState.FAIL and \
                other.system_attrs.get("fixed_params") == mine:
            return other.number
    return None


def shape(cfg) -> str:
    """What trials must share to train as one population."""
    return json.dumps(shared_values(cfg), sort_keys=True)


def keeps_shape(spec: SweepSpec) -> bool:
    """Whether every trial of the search space has one shape (no key it searches is one a population shares):
    then a trial asked later can join a running population in the place of one that ended."""
    return not any(p.key == key or p.key.startswith(key + ".") for p in spec.params for key in SHARED)


def train_batch(asked: list[Asked], spec: SweepSpec, population: int, data, data_dir, full, stop: StopRequest,
                echo: Echo, command: str | None, more: Callable[[int], list[Asked]] | None = None,
                ended: Callable[[Asked, RunResult], None] | None = None) -> dict[int, RunResult]:
    """Train the asked trials: those of one shape as one population (when `population` > 1), the others one
    after another; trial number -> its run's result. Stops early when asked to (the rest are not started).
    With `more` (only for a space that keeps_shape), a population takes `more(places)`'s trials in the places
    of those that ended, up to `population` at once; `ended` hears of each of its trials as it ends."""
    continuing: dict[tuple, list[Asked]] = {}  # retries continuing stopped runs: by shape and epoch
    for a in asked:
        if a.continues is not None:  # one that only writes its end does so alone
            key = (shape(a.cfg), a.continues.epoch) if not a.continues.finishing else (a.trial.number,)
            continuing.setdefault(key, []).append(a)
    results: dict[int, RunResult] = {}
    for group in continuing.values():
        if not stop.requested:
            results.update(_continue(group, spec, population, data_dir, stop, echo, command, ended))
    groups: dict[str, list[Asked]] = {}  # the rest, and the retries whose run could not be continued after all
    for a in asked:
        if a.continues is None and a.trial.number not in results:
            groups.setdefault(shape(a.cfg), []).append(a)
    for group in groups.values():
        if stop.requested:
            break
        if population > 1 and len(group) > 1:
            results.update(_train_population(group, spec, data_dir, full(), stop, echo, command,
                                             more, ended, population))
            continue
        for a in group:
            if stop.requested:
                break
            trial_stop = TrialStop(stop)
            results[a.trial.number] = train(a.cfg, run_dir=a.run_dir, data=data, stop=trial_stop, command=command,
                                            progress=Report(a.trial, spec, trial_stop, echo))
    return results


def _continue(group: list[Asked], spec: SweepSpec, population: int, data_dir, stop: StopRequest, echo: Echo,
              command: str | None, ended: Callable[[Asked, RunResult], None] | None) -> dict[int, RunResult]:
    """Retries continuing the runs of the trials they repeat (of one shape, at one epoch), as `train --resume`
    does: together when `population` > 1 (they were stopped together), each told to `ended` as it ends. A run
    that `--resume` refuses after all (e.g. its folder held by another process a moment) is dropped from its
    retry, which trains from the start in its own folder (its continues cleared)."""
    for a in group:
        echo(f"trial {a.trial.number:>3} continues {a.continues.run_dir.name} after its epoch {a.continues.epoch}")
    results: dict[int, RunResult] = {}
    try:
        if population > 1 and len(group) > 1:
            return _continue_population(group, spec, data_dir, stop, echo, command, ended)
        for a in group:
            if stop.requested:
                break
            trial_stop = TrialStop(stop)
            if a.continues.finishing:  # no epoch to start: its end only
                report_earlier(a.trial, spec, a.continues.history)
            results[a.trial.number] = resume(a.continues.run_dir, data_dir=data_dir, stop=trial_stop, command=command,
                                             notify=echo, progress=Report(a.trial, spec, trial_stop, echo,
                                                                          a.continues.history))
            if ended is not None:
                ended(a, results[a.trial.number])
            a.continues = None  # done with it: what is left of the group (on a refusal) trains from the start
        return results
    except UserError as exc:
        for a in group:
            if a.continues is not None:
                echo(f"trial {a.trial.number:>3} cannot continue {a.continues.run_dir.name} ({exc}); it trains from "
                     f"the start in {a.run_dir.name}")
                a.trial.set_user_attr("run_dir", str(a.run_dir.resolve()))
                a.continues = None
        return results


def _continue_population(group: list[Asked], spec: SweepSpec, data_dir, stop: StopRequest, echo: Echo,
                         command: str | None, ended: Callable[[Asked, RunResult], None] | None
                         ) -> dict[int, RunResult]:
    trials = {a.continues.run_dir: a for a in group}
    judged = _Judged(trials, spec, echo, ended)
    earlier = Earlier(lambda: [report_earlier(a.trial, spec, a.continues.history) for a in group])
    members = [MemberSpec(a.continues.cfg, a.continues.run_dir, f"trial {a.trial.number} ") for a in group]
    results = resume_population(members, data_dir=data_dir, progress=earlier, stop=stop, command=command,
                                prune=judged.prune, ended=judged.on_end)
    for a in group:
        a.continues = None
    return {trials[result.run_dir].trial.number: result for result in results}


@dataclass
class _Judged:
    """A population's trials judged by the pruner after each epoch, and told to `ended` as each ends."""

    trials: dict[Path, Asked]  # by run folder
    spec: SweepSpec
    echo: Echo
    ended: Callable[[Asked, RunResult], None] | None

    def prune(self, member, result) -> str | None:
        """The status the member's run ends with after this epoch, if it ends: pruned, or interrupted when another
        worker took the trial meanwhile (it said pruned; its values are queued again, as for a single trial)."""
        verdict = judge(self.trials[member.recorder.run_dir].trial, self.spec, result, member.cfg.train.epochs,
                        self.echo)
        return st.INTERRUPTED if verdict == TAKEN else st.PRUNED if verdict else None

    def on_end(self, member) -> None:
        if self.ended is not None:
            self.ended(self.trials[member.recorder.run_dir], member.result)


def _train_population(group: list[Asked], spec: SweepSpec, data_dir, full, stop: StopRequest, echo: Echo,
                      command: str | None, more: Callable[[int], list[Asked]] | None = None,
                      ended: Callable[[Asked, RunResult], None] | None = None,
                      capacity: int = 0) -> dict[int, RunResult]:
    """Trials of one shape, trained together; each judged by the pruner after each epoch, and (with `more`)
    the places of those that ended taken by the study's next trials."""
    trials = {a.run_dir: a for a in group}
    judged = _Judged(trials, spec, echo, ended)

    def joining(places: int) -> list[MemberSpec]:
        new = more(places)
        trials.update((a.run_dir, a) for a in new)
        return [_member(a) for a in new]

    setup = setup_population([a.cfg for a in group], data_dir, full, capacity=capacity)
    results = train_population([_member(a) for a in group], setup=setup, progress=PopulationProgress(), stop=stop,
                               command=command, prune=judged.prune, more=joining if more is not None else None,
                               ended=judged.on_end, capacity=capacity)
    return {trials[result.run_dir].trial.number: result for result in results}


def _member(a: Asked) -> MemberSpec:
    return MemberSpec(a.cfg, a.run_dir, f"trial {a.trial.number} ")
