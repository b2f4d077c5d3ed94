"""A worker's batch of trials: asked from the study together (ask/tell), each configured from its sampled values,
trained in its own run folder (those of one shape together, on the population engine), then told.

The pruner judges each trial after each epoch, alone or as a member of a population; a pruned member stops
costing compute. A stop request fails every unfinished trial of the batch and queues its values again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashionmlp import status as st
from fashionmlp.config import load_config
from fashionmlp.errors import ConfigError, UserError
from fashionmlp.population import MemberSpec, resume_population, setup_population, train_population
from fashionmlp.population.run import SHARED, shared_values
from fashionmlp.progress import PopulationProgress, Progress, StopRequest
from fashionmlp.recorder import RunResult
from fashionmlp.resume import resume
from fashionmlp.run import train
from fashionmlp.sweep.backend import TrialState
from fashionmlp.sweep.space import trial_config
from fashionmlp.sweep.spec import SweepSpec
from fashionmlp.sweep.storage import OWNER, _owner
from fashionmlp.tracking import read_metrics

Echo = Callable[[str], None]


@dataclass
class Asked:
    """A trial asked from the study, with the run it trains."""

    trial: Any  # optuna.Trial
    cfg: Any  # RunConfig
    run_dir: Path
    continued: list[dict] | None = None  # run_dir is a stopped trial's, which this retry continues: its epochs


class TrialStop:
    """A trial's stop request: the user's (Ctrl-C, SIGTERM), or the pruner's verdict (the run then ends
    "pruned")."""

    def __init__(self, user: StopRequest):
        self.user = user
        self.pruned = False

    @property
    def requested(self) -> bool:  # read by engine.fit after every step
        return self.pruned or self.user.requested

    @property
    def reason(self) -> str:  # read by run.run_epochs when the run stops
        return st.INTERRUPTED if self.user.requested else st.PRUNED


def judge(trial, spec: SweepSpec, result, epochs: int, echo: Echo) -> bool:
    """Report a trial's finished epoch to the study (and a line to `echo`); True when the pruner stops it."""
    value = result.metrics[spec.metric]
    echo(f"trial {trial.number:>3} epoch {result.epoch}/{epochs}  {spec.metric} {value:.4f}  "
         f"{result.metrics['seconds']:.1f}s")
    trial.report(value, result.epoch)
    return result.epoch < epochs and trial.should_prune()


class Report(Progress):
    """A single trial's progress: each epoch judged (the run stops after the next step when pruned; that
    unfinished epoch is dropped)."""

    def __init__(self, trial, spec: SweepSpec, stop: TrialStop, echo: Echo):
        self.trial, self.spec, self.stop, self.echo = trial, spec, stop, echo

    def end_epoch(self, result, epochs: int) -> None:
        if judge(self.trial, self.spec, result, epochs, self.echo):
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
        return None
    run_dir = sweep_dir / name
    stopped = None if continues is None else resumable(Path(continues), cfg, sweep_dir)
    continued = None
    if stopped is not None:  # its run's config (the trial's, but for the name of the run)
        run_dir, (continued, cfg) = Path(continues), stopped
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    return Asked(trial, cfg, run_dir, continued)


def resumable(run_dir: Path, cfg, sweep_dir: Path) -> tuple[list[dict], Any] | None:
    """The finished epochs (metrics.csv's rows) and the config of the run folder of the trial a retried trial
    repeats, when the retry can continue it: a folder of this machine's sweep (the storage is data: it never
    points a run anywhere else), stopped (interrupted, or its worker killed) after an epoch at least, trained
    from the trial's own config (its name aside); None otherwise."""
    if not run_dir.resolve().is_relative_to(Path(sweep_dir).resolve()):
        return None
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        saved = load_config(run_dir / "config.yaml")
        finished = read_metrics(run_dir / "metrics.csv")
    except (OSError, ValueError, UserError):
        return None
    # the thread count it started with is kept (the same order of additions: it ends where it would have)
    same = dataclasses.replace(saved, name=cfg.name, train=dataclasses.replace(
        saved.train, threads=cfg.train.threads)).to_dict() == cfg.to_dict()
    stopped = isinstance(summary, dict) and summary.get("status") in (st.INTERRUPTED, st.KILLED)
    return (finished, saved) if same and stopped and finished and (run_dir / "checkpoints" / "last.pt").is_file() \
        else None


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
    groups: dict[str, list[Asked]] = {}
    continuing: dict[tuple[str, int], list[Asked]] = {}  # retries continuing stopped runs: by shape and epoch
    for a in asked:
        if a.continued:
            continuing.setdefault((shape(a.cfg), int(a.continued[-1]["epoch"])), []).append(a)
        else:
            groups.setdefault(shape(a.cfg), []).append(a)
    results: dict[int, RunResult] = {}
    for group in continuing.values():
        if not stop.requested:
            results.update(_continue(group, spec, population, data_dir, stop, echo, command))
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
              command: str | None) -> dict[int, RunResult]:
    """Retries continuing the run folders of the trials they repeat (of one shape, at one epoch), as `train
    --resume` does, together when `population` > 1 (they were stopped together); the epochs those runs
    finished are reported to the study first, so the pruner judges each trial on every epoch."""
    for a in group:
        for row in a.continued:
            a.trial.report(row[spec.metric], int(row["epoch"]))
        echo(f"trial {a.trial.number:>3} continues {a.run_dir.name} after its epoch {int(a.continued[-1]['epoch'])}")
    if population > 1 and len(group) > 1:
        trials = {a.run_dir: a for a in group}

        def prune(member, result) -> bool:
            return judge(trials[member.recorder.run_dir].trial, spec, result, member.cfg.train.epochs, echo)

        results = resume_population([_member(a) for a in group], data_dir=data_dir, progress=PopulationProgress(),
                                    stop=stop, command=command, prune=prune)
        return {trials[result.run_dir].trial.number: result for result in results}
    results = {}
    for a in group:
        if stop.requested:
            break
        trial_stop = TrialStop(stop)
        results[a.trial.number] = resume(a.run_dir, data_dir=data_dir, stop=trial_stop, command=command,
                                         notify=echo, progress=Report(a.trial, spec, trial_stop, echo))
    return results


def _train_population(group: list[Asked], spec: SweepSpec, data_dir, full, stop: StopRequest, echo: Echo,
                      command: str | None, more: Callable[[int], list[Asked]] | None = None,
                      ended: Callable[[Asked, RunResult], None] | None = None,
                      capacity: int = 0) -> dict[int, RunResult]:
    """Trials of one shape, trained together; each judged by the pruner after each epoch, and (with `more`)
    the places of those that ended taken by the study's next trials."""
    trials = {a.run_dir: a for a in group}
    epochs = group[0].cfg.train.epochs

    def prune(member, result) -> bool:
        return judge(trials[member.recorder.run_dir].trial, spec, result, epochs, echo)

    def joining(places: int) -> list[MemberSpec]:
        new = more(places)
        trials.update((a.run_dir, a) for a in new)
        return [_member(a) for a in new]

    def on_end(member) -> None:
        if ended is not None:
            ended(trials[member.recorder.run_dir], member.result)

    setup = setup_population([a.cfg for a in group], data_dir, full, capacity=capacity)
    results = train_population([_member(a) for a in group], setup=setup, progress=PopulationProgress(), stop=stop,
                               command=command, prune=prune, more=joining if more is not None else None,
                               ended=on_end, capacity=capacity)
    return {trials[result.run_dir].trial.number: result for result in results}


def _member(a: Asked) -> MemberSpec:
    return MemberSpec(a.cfg, a.run_dir, f"trial {a.trial.number} ")
