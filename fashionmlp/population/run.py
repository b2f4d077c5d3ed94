"""Training a population: N models of one shape, each with its own seed, optimizer section, label smoothing,
EMA, TTA and patience, each into its own ordinary run folder; and continuing one (`resume_population`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from fashionmlp.checkpoint import load_checkpoint, make_ema
from fashionmlp.config import RunConfig, whole_training_set, with_values
from fashionmlp.data import FashionMNIST
from fashionmlp.device import largest_population, memory_parts, more_than_usable, prepare_model
from fashionmlp.distill import Teacher
from fashionmlp.engine import seed_everything
from fashionmlp.errors import UserError
from fashionmlp.optim import build_optimizer
from fashionmlp.population.data import PopulationData, population_data
from fashionmlp.population.loop import Ended, Member, Prune, run_population
from fashionmlp.progress import PopulationProgress, StopRequest
from fashionmlp.recorder import RunRecorder, RunResult, Trainee
from fashionmlp.resume import check_resumable, previous_summary, restore_trainee
from fashionmlp.run import recipe_notes
from fashionmlp.runlock import lock_run_dir
from fashionmlp.savedrun import check_fits, check_run_dir, refuse_links
from fashionmlp.session import Session, prepare
from fashionmlp.teacher import check_same_teacher, pinned, teacher_note

# What every member of a population shares: the network, the batches' shape and count, the data, the device.
SHARED = ("model", "train.batch_size", "train.epochs", "train.eval_batch_size", "train.precision",
          "train.channels_last", "train.threads", "data", "device", "distill.teacher", "distill.checkpoint",
          "distill.fingerprint")


@dataclass(frozen=True)
class MemberSpec:
    cfg: RunConfig
    run_dir: Path  # a new folder to make, or (resume) the member's run folder
    label: str  # how progress names it, e.g. "adam seed 1"


def shared_values(cfg: RunConfig) -> dict:
    """The config's value of each SHARED key: what members of one population must have equal."""
    tree, values = cfg.to_dict(), {}
    for key in SHARED:
        node = tree
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


def check_one_shape(cfgs: list[RunConfig]) -> None:
    """A population trains models of one shape together; anything else is a UserError naming the key."""
    shared = [shared_values(cfg) for cfg in cfgs]
    for key in SHARED:
        values = [each[key] for each in shared]
        if any(v != values[0] for v in values):
            raise UserError(f"a population trains models of one shape together, and its members differ in {key} "
                            f"({values[0]!r} and {next(v for v in values if v != values[0])!r})")


def check_population_memory(cfg: RunConfig, n: int, session: Session) -> None:
    """Refuse, before any folder exists, a population that cannot fit, naming the largest that can."""
    data = session.data
    n_train, n_images = len(data.train.labels), len(data.train.labels) + len(data.test.labels)
    fits = largest_population(cfg, session.device, n_images, n_train)
    if n > fits:
        per_model, shared = memory_parts(cfg, n_images, n_train)
        raise UserError(f"a population of {n} of these models needs about {(n * per_model + shared) / 2**30:,.1f} "
                        f"GiB, {more_than_usable(session.device)}; at most {fits} fit at once (--engine sequential "
                        "trains one at a time)")


def setup_population(cfgs: list[RunConfig], data_dir: str | Path | None = None, data: FashionMNIST | None = None,
                     threads: int | None = None, capacity: int = 0, teacher: Teacher | None = None
                     ) -> tuple[Session, PopulationData]:
    """Every check a population of these configs must pass, before any folder exists (one shape, the data, the
    memory of all of them at once, or of `capacity` members when more will join); returns the shared session
    (device, the whole training set, threads, the teacher: `teacher` when a study loaded it already) and the
    population's data."""
    check_one_shape(cfgs)
    session = prepare(whole_training_set(cfgs[0]), data_dir=data_dir, data=data, threads=threads, teacher=teacher)
    if session.teacher is not None:  # prepare checked the first member's pin: every member learns from it
        for cfg in cfgs[1:]:
            check_same_teacher(cfg, session.teacher)
    check_population_memory(cfgs[0], max(len(cfgs), capacity), session)
    seeds = sorted({cfg.seed for cfg in cfgs})
    return session, population_data(session.data, cfgs[0], seeds, session.device, session.teacher)


def taught(cfg: RunConfig, session: Session) -> RunConfig:
    """A member's config as its run folder records it: with the fingerprint of the teacher, when one teaches."""
    return cfg if session.teacher is None else pinned(cfg, session.teacher)


def _pinned_as_saved(cfg: RunConfig, state: dict) -> RunConfig:
    """`cfg` (e.g. a study's, its teacher as the user typed it) with the teacher's fingerprint its checkpoint
    recorded, so that loading the teacher checks its weights against it."""
    saved = ((state.get("config") or {}).get("distill") or {}).get("fingerprint")
    if cfg.distill.teacher is None or cfg.distill.fingerprint is not None or not isinstance(saved, str):
        return cfg
    return with_values(cfg, {"distill.fingerprint": saved})


def member_notes(cfg: RunConfig, session: Session, n_train: int) -> dict:
    """A member recorder's notes (the session's, and the teacher's about this member's validation images) and
    its teacher's record."""
    notes = list(session.notes) + recipe_notes(cfg, n_train)
    if session.teacher is None:
        return {"notes": notes}
    note = teacher_note(cfg, session.teacher)
    return {"notes": notes + ([note] if note else []), "distill": session.teacher.info(cfg)}


def train_population(specs: list[MemberSpec], *, data_dir: str | Path | None = None,
                     setup: tuple[Session, PopulationData] | None = None, progress: PopulationProgress | None = None,
                     stop: StopRequest | None = None, command: str | None = None, prune: Prune | None = None,
                     more: Callable[[int], list[MemberSpec]] | None = None, ended: Ended | None = None,
                     capacity: int = 0, teacher: Teacher | None = None, final: bool = False) -> list[RunResult]:
    """Train every member into its new run folder, all at once; each folder is what `train` would have made
    from the member's config (the same initial weights, batches, augmentation and dropout masks). `setup` is
    setup_population's result, when the caller checked before making folders (with `capacity`, when `more`
    may bring members); `prune`, `ended` as in run_population; `more(places)` gives the specs of members that
    join when others have left (of the same shape; up to `capacity` at once, default the first ones' count).
    The results of every member, those that joined included, in the order they came; `teacher` as in
    setup_population, `final` as in run_population."""
    session, pdata = setup or setup_population([s.cfg for s in specs], data_dir, capacity=capacity, teacher=teacher)
    with ExitStack() as locks:
        members: list[Member] = []
        with _crash_recorded(members):
            for spec in specs:
                members.append(_new_member(spec, session, pdata, command, locks))

        def refill(places: int) -> list[Member]:
            joining = more(places)
            if len(joining) > places:
                raise ValueError(f"{len(joining)} members for {places} places")
            check_one_shape([specs[0].cfg] + [s.cfg for s in joining])
            joined: list[Member] = []
            with _crash_recorded(joined):
                for spec in joining:
                    joined.append(_new_member(spec, session, pdata, command, locks))
            return joined

        return run_population(members, pdata, progress or PopulationProgress(), stop, prune,
                              refill if more is not None else None, ended, capacity or len(specs), final)


@contextmanager
def _crash_recorded(members: list[Member]) -> Iterator[None]:
    """A failure while members are made (the next one's model, say) recorded beside each one made already: their
    summary.json said 'running' for ever."""
    try:
        yield
    except Exception as exc:
        for member in members:
            member.recorder.crashed(exc)
        raise


def _new_member(spec: MemberSpec, session: Session, pdata: PopulationData, command: str | None,
                locks: ExitStack) -> Member:
    """A member as `train` would start its run: its folder (locked), initial weights, optimizer, generators."""
    cfg = taught(spec.cfg, session)
    seed_everything(cfg.seed)  # as `train`: the initial weights, then the dropout masks, from the seed
    model = prepare_model(cfg, session.device)
    rng = torch.Generator()
    rng.set_state(torch.get_rng_state())
    trainee = Trainee(model, build_optimizer(cfg.optimizer, model.parameters()),
                      torch.Generator().manual_seed(cfg.seed), make_ema(model, cfg.train.ema), rng)
    spec.run_dir.mkdir(parents=True, exist_ok=False)
    locks.enter_context(lock_run_dir(spec.run_dir))
    recorder = RunRecorder(spec.run_dir, cfg, trainee, pdata.info, session.device, session.threads, command,
                           engine="population", **member_notes(cfg, session, pdata.n_train)).start()
    return Member(cfg, trainee, recorder, spec.label)


def resume_population(specs: list[MemberSpec], *, data_dir: str | Path | None = None,
                      progress: PopulationProgress | None = None, stop: StopRequest | None = None,
                      command: str | None = None, prune: Prune | None = None,
                      ended: Ended | None = None, teacher: Teacher | None = None, final: bool = False
                      ) -> list[RunResult]:
    """Continue every member from its checkpoints/last.pt (all at the same epoch), exactly as they would have
    gone on; spec.cfg is each member's config as it continues (e.g. with more epochs); `prune` and `ended` as
    in run_population, `teacher` as in setup_population."""
    states = []
    with ExitStack() as locks:
        for spec in specs:
            run_dir = check_run_dir(spec.run_dir, "--resume")
            refuse_links(run_dir, "--resume")
            locks.enter_context(lock_run_dir(run_dir))
            last = run_dir / "checkpoints" / "last.pt"
            state = load_checkpoint(last)
            if check_resumable(spec.cfg, state, run_dir):  # a bug: the caller finishes such a run alone (study.run)
                raise ValueError(f"{run_dir} has trained all its epochs: nothing to continue in a population")
            states.append((state, last))
        epochs = {int(state["epoch"]) for state, _ in states}
        if len(epochs) > 1:
            raise UserError(f"the runs to continue together stand at different epochs ({sorted(epochs)}); continue "
                            "each with fashionmlp train --resume RUN_DIR")
        kept = previous_summary(specs[0].run_dir).get("threads") if not specs[0].cfg.train.threads else None
        # the teacher they were taught by, as their checkpoints pin it: a changed teacher is refused as such
        cfgs = [_pinned_as_saved(spec.cfg, state) for spec, (state, _) in zip(specs, states)]
        session, pdata = setup_population(cfgs, data_dir, threads=kept if isinstance(kept, int) and kept > 0 else None,
                                          teacher=teacher)
        cfgs = [taught(cfg, session) for cfg in cfgs]  # as each member's folder records it: the teacher pinned
        for cfg, (state, last) in zip(cfgs, states):  # every member checked before any of them trains
            check_fits(cfg, state, last, optimizer_too=True)
        members: list[Member] = []
        with _crash_recorded(members):
            for spec, cfg, (state, last) in zip(specs, cfgs, states):
                model = prepare_model(cfg, session.device)
                trainee = restore_trainee(model, cfg, state, last, own_rng=True)
                recorder = RunRecorder(spec.run_dir, cfg, trainee, pdata.info, session.device, session.threads,
                                       command, engine="population", **member_notes(cfg, session, pdata.n_train)
                                       ).reopen(state, previous_summary(spec.run_dir))
                members.append(Member(cfg, trainee, recorder, spec.label))
        return run_population(members, pdata, progress or PopulationProgress(), stop, prune, ended=ended,
                              final=final)
