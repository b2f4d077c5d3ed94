"""Running a study: every variant with every seed, each into an ordinary run folder inside one study folder, on
the population engine (all at once) or one run after another; continuing an interrupted study; the report.

    runs/<compare-mlp | NAME-seeds>-<YYYYmmdd-HHMMSS>/
      study.yaml, study.json     the study (base config, variants) and its seeds and engine: enough to continue it
      <variant>[-seed<N>]/ ...   one run folder per variant and seed (seed<N>/ for train --seeds)
      summary.md, summary.csv, comparison.png, events.out.tfevents.*   the report (TensorBoard: mean ± std)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fashionmlp import status as st
from fashionmlp.checkpoint import RESUME_KEYS, check_layout, load_checkpoint
from fashionmlp.config import RunConfig, read_yaml, show, with_values
from fashionmlp.data import check_trainable, load_data
from fashionmlp.distill import Teacher
from fashionmlp.errors import ConfigError, StoppedBeforeStart, UserError
from fashionmlp.population import MemberSpec, resume_population, setup_population, train_population
from fashionmlp.progress import PopulationProgress, Progress, StopRequest
from fashionmlp.resume import ends_here, resume
from fashionmlp.run import recipe_notes, train
from fashionmlp.runlock import lock_run_dir
from fashionmlp.savedrun import check_saved_data_dir, config_difference, previous_summary, run_config
from fashionmlp.session import Session, prepare
from fashionmlp.study.config import CHANCE, FAILED_MARGIN, Study, study_from_dict
from fashionmlp.study.report import summarize, write_report
from fashionmlp.tracking import create_run_dir, read_metrics, write_config, write_json

ENGINES = ("auto", "population", "sequential")
UNFINISHED = (st.RUNNING, st.INTERRUPTED, st.CRASHED)  # a member's summary.json status that resume continues


@dataclass
class VariantOutcome:
    name: str
    seed: int
    run_dir: Path
    status: str  # status.COMPLETED | DIVERGED | FAILED_TO_LEARN | INTERRUPTED
    history: list[dict]
    summary: dict


@dataclass
class StudyResult:
    study_dir: Path
    rows: list[dict]  # the summary table, sorted
    outcomes: list[VariantOutcome] = field(default_factory=list)
    interrupted: bool = False
    engine: str = "sequential"
    kind: str = "compare"  # the study's kind: compare (optimizers) or seeds (one config)


@dataclass(frozen=True)
class Planned:
    name: str
    seed: int
    cfg: RunConfig
    run_dir: Path
    label: str


def classify(run_status: str, final_accuracy: float | None) -> str:
    if run_status != st.COMPLETED:
        return run_status
    if final_accuracy is None or final_accuracy <= CHANCE + FAILED_MARGIN:
        return st.FAILED_TO_LEARN
    return st.COMPLETED


def choose_engine(engine: str, cfg: RunConfig, device_type: str) -> tuple[str, str | None]:
    """The engine to use, and why when `auto` chose the sequential one."""
    if engine != "auto":
        return engine, None
    if cfg.model.name == "cnn" and device_type == "cpu":
        return "sequential", ("the CNN trains no faster batched on a CPU (docs/performance.md): one run after "
                              "another; --engine population trains them at once")
    return "population", None


def plan(study: Study, seeds: list[int], study_dir: Path) -> list[Planned]:
    """Every run of the study, seed by seed; refuses repeated seeds and seeds no config accepts."""
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:  # two runs of one seed would need one folder, and add nothing to the mean
        raise UserError(f"--seeds {','.join(map(str, seeds))}: seed {repeated[0]} is listed more than once; "
                        "give each seed once")
    try:
        return [Planned(name, seed, with_values(cfg, {"seed": seed}), study_dir / study.folder(name, seed, seeds),
                        study.label(name, seed, seeds)) for seed in seeds for name, cfg in study.variants.items()]
    except ConfigError as exc:
        raise ConfigError(f"--seeds: {exc}") from None


def run_study(study: Study, *, seeds: list[int], runs_dir: Path = Path("runs"), data_dir: str | Path | None = None,
              engine: str = "auto", make_progress: Callable[[str], Progress] = lambda label: Progress(),
              population_progress: PopulationProgress | None = None, stop: StopRequest | None = None,
              command: str | None = None, notify: Callable[[str], None] = lambda message: None) -> StudyResult:
    """Train every variant for every seed, then write the report. The variants of one seed start from the same
    initial weights and see the same batches, because both are drawn from the seed: each run is exactly what
    `fashionmlp train` with its saved config.yaml would do (and the seed draws the validation split too)."""
    if engine not in ENGINES:  # options first, before the data is read
        raise UserError(f"--engine: {engine!r} is not allowed; allowed: {', '.join(ENGINES)}")
    planned = plan(study, seeds, Path("."))
    session = prepare(planned[0].cfg, data_dir=data_dir, runs_dir=runs_dir)  # data errors come first
    if session.teacher is not None:
        study, planned = _one_teacher(study, seeds, session, notify)
    for run in planned:
        check_trainable(run.cfg, len(session.data.train.labels))
    # what the runs' summaries note about their recipe (a short EMA, an unused value), said once: no run of a
    # study or a --seeds group printed them
    for note in dict.fromkeys(n for p in planned for n in recipe_notes(p.cfg, len(session.data.train.labels))):
        notify(note)
    engine, why = choose_engine(engine, study.base, session.device.type)
    whole = None if study.base.data.val_size else session.data  # the population draws each seed's split itself
    setup = (setup_population([p.cfg for p in planned], data_dir, whole, teacher=session.teacher)
             if engine == "population" else None)
    if why:
        notify(why)
    if stop is not None and stop.requested:  # while the data loaded: nothing is written yet
        raise StoppedBeforeStart("the study")
    study_dir = create_run_dir(runs_dir, study.prefix)
    with lock_run_dir(study_dir, "study folder"):  # a --resume of it meanwhile is refused
        write_config(study_dir / "study.yaml", study.to_dict())
        write_json(study_dir / "study.json", {"seeds": seeds, "engine": engine})
        planned = plan(study, seeds, study_dir)
        if engine == "population":
            train_population([MemberSpec(p.cfg, p.run_dir, p.label) for p in planned], setup=setup,
                             progress=population_progress, stop=stop, command=command, final=True)
        else:
            _sequential(planned, data_dir, session.data, make_progress, stop, command, teacher=session.teacher)
        return report(study, seeds, planned, study_dir, engine)


def _one_teacher(study: Study, seeds: list[int], session: Session,
                 notify: Callable[[str], None]) -> tuple[Study, list[Planned]]:
    """Every run of a taught study learns from the weights its first run loaded: study.yaml records their
    fingerprint and the teacher's absolute path (a teacher still training had taught each run with the epoch it
    had saved when that run started, and a relative path failed a --resume from another folder). What the
    runs' summaries note about the teacher is said once, here."""
    from fashionmlp.teacher import pinned, teacher_notes

    teacher = session.teacher
    study = Study(pinned(study.base, teacher), {n: pinned(c, teacher) for n, c in study.variants.items()},
                  study.kind)
    planned = plan(study, seeds, Path("."))

    for note in dict.fromkeys(n for p in planned for n in teacher_notes(p.cfg, session.teacher)):
        notify(note)
    return study, planned


def _sequential(planned: list[Planned], data_dir, data, make_progress, stop, command, resumed: bool = False,
                teacher: Teacher | None = None) -> None:
    """One run after another (continuing the unfinished ones with `resumed`), until one is interrupted; the runs
    of a taught study share its loaded `teacher`."""
    loaded_seed = planned[0].seed if planned else None
    for run in planned:
        if resumed and run.run_dir.exists():
            result = resume(run.run_dir, epochs=run.cfg.train.epochs, data_dir=data_dir,
                            progress=make_progress(run.label), stop=stop, command=command, teacher=teacher)
        else:
            if run.cfg.data.val_size and run.seed != loaded_seed:
                data, loaded_seed = load_data(run.cfg, data_dir), run.seed  # the seed draws the validation split
            result = train(run.cfg, run_dir=run.run_dir, data=data, progress=make_progress(run.label), stop=stop,
                           command=command, teacher=teacher)
        if result.status == st.INTERRUPTED:
            return


def report(study: Study, seeds: list[int], planned: list[Planned], study_dir: Path, engine: str) -> StudyResult:
    """The study's report from its member folders (those that exist: an interrupted study covers what ran)."""
    outcomes, interrupted = [], False
    for run in planned:
        summary_path = run.run_dir / "summary.json"
        if not summary_path.is_file():
            interrupted = True
            continue
        summary = json.loads(summary_path.read_text())
        interrupted |= summary["status"] in UNFINISHED
        if not (run.run_dir / "metrics.csv").is_file():
            continue
        outcomes.append(VariantOutcome(run.name, run.seed, run.run_dir,
                                       classify(summary["status"], summary["final"]["test_accuracy"]),
                                       read_metrics(run.run_dir / "metrics.csv"), summary))
    rows = summarize(outcomes, study, len(seeds))
    write_report(study_dir, study, outcomes, rows, engine)
    return StudyResult(study_dir, rows, outcomes, interrupted, engine, study.kind)


def resume_study(study_dir: Path, *, data_dir: str | Path | None = None,
                 make_progress: Callable[[str], Progress] = lambda label: Progress(),
                 population_progress: PopulationProgress | None = None, stop: StopRequest | None = None,
                 command: str | None = None, notify: Callable[[str], None] = lambda message: None) -> StudyResult:
    """Continue every unfinished run of the study in `study_dir` exactly (and start those never started), on
    the engine the study was made with; then the report. `notify` hears of runs that start anew. The study
    folder is locked meanwhile (two resumes at once: one crashed on the other's new run folder)."""
    study_dir = Path(study_dir)
    study, seeds, engine = read_study(study_dir)
    planned = plan(study, seeds, study_dir)
    _check_members(study_dir, planned)  # refused before the lock: a refusal leaves the folder as it was
    with lock_run_dir(study_dir, "study folder"):
        return _resume_study(study_dir, study, seeds, engine, planned, data_dir, make_progress, population_progress,
                             stop, command, notify)


def _resume_study(study_dir: Path, study: Study, seeds: list[int], engine: str, planned: list[Planned], data_dir,
                  make_progress, population_progress, stop, command, notify) -> StudyResult:
    todo = [p for p in planned if _unfinished(p.run_dir)]
    if not todo:  # e.g. killed while it wrote its report: no command could finish it
        notify("every run of the study has finished: its report (table, comparison.png, TensorBoard) is written "
               "again")
        return report(study, seeds, planned, study_dir, engine)
    started = [p for p in todo if (p.run_dir / "checkpoints" / "last.pt").is_file()]
    lost = [p.run_dir for p in todo if p not in started and p.run_dir.exists()]
    if lost:  # before anything trains: its finished epochs (if any) cannot be continued, nor silently dropped
        raise UserError(f"--resume {str(study_dir)!r}: {str(lost[0])!r} has no checkpoints/last.pt to continue "
                        "from; delete that folder to train its run anew")
    _check_unedited(study_dir, started)
    fresh = [p for p in todo if p not in started]
    check_saved_data_dir(todo[0].cfg, data_dir)  # the study's saved data.dir: searched, never downloaded into
    teacher = _study_teacher(study, started)  # before anything trains: one teacher, the one every run pins
    for p in fresh:
        notify(f"{p.label.strip()} has no run folder yet ({p.run_dir.name}): it trains from its first epoch")
    if engine == "population":
        states = {p.run_dir: load_checkpoint(p.run_dir / "checkpoints" / "last.pt") for p in started}
        for run_dir, state in states.items():
            check_layout(state, run_dir / "checkpoints" / "last.pt", RESUME_KEYS)
        by_epoch: dict[int, list[Planned]] = {}
        for p in started:
            if ends_here(p.cfg, states[p.run_dir], p.run_dir):  # trained to its end, which was not written: no
                resume(p.run_dir, epochs=p.cfg.train.epochs, data_dir=data_dir,  # population, only its end
                       progress=make_progress(p.label), stop=stop, command=command, notify=notify, teacher=teacher)
            else:  # members continued alone since may stand at other epochs: one population per epoch
                by_epoch.setdefault(int(states[p.run_dir]["epoch"]), []).append(p)
        for k, together in enumerate(by_epoch.values(), 1):
            if stop is None or not stop.requested:
                resume_population([MemberSpec(p.cfg, p.run_dir, p.label) for p in together], data_dir=data_dir,
                                  progress=population_progress, stop=stop, command=command, teacher=teacher,
                                  final=k == len(by_epoch) and not fresh)
        if fresh and not (stop is not None and stop.requested):
            train_population([MemberSpec(p.cfg, p.run_dir, p.label) for p in fresh], data_dir=data_dir,
                             progress=population_progress, stop=stop, command=command, teacher=teacher, final=True)
    else:
        _sequential(todo, data_dir, load_data(todo[0].cfg, data_dir), make_progress, stop, command, resumed=True,
                    teacher=teacher)
    return report(study, seeds, planned, study_dir, engine)


def _study_teacher(study: Study, started: list[Planned]) -> Teacher | None:
    """A continued study's teacher, loaded once for all its runs and checked against every pin: study.yaml's
    (written since 2026-11-30) and each started run's config.yaml (where its path is absolute, also for a study
    whose study.yaml kept the path as typed)."""
    if study.base.distill.teacher is None:
        return None
    from fashionmlp.device import resolve_device
    from fashionmlp.teacher import check_same_teacher, load_teacher

    saved = [run_config(p.run_dir) for p in started]
    teacher = load_teacher(saved[0] if saved else study.base, resolve_device(study.base.device))
    for cfg in [*saved[1:], study.base]:
        check_same_teacher(cfg, teacher)
    return teacher


def read_study(study_dir: Path) -> tuple[Study, list[int], str]:
    """The study, seeds and engine that study.yaml and study.json record; anything else is one error line."""
    where = f"--resume {str(study_dir)!r}"
    try:
        meta = json.loads((study_dir / "study.json").read_text())
        raw = read_yaml(study_dir / "study.yaml")
    except (OSError, ValueError):
        if not study_dir.is_dir():
            raise UserError(f"{where}: no such folder; pass a study folder such as runs/compare-mlp-20260101-120000"
                            ) from None
        if (study_dir / "config.yaml").is_file():
            raise UserError(f"{where} is a run folder, not a study folder: `fashionmlp train --resume` continues it"
                            ) from None
        raise UserError(f"{where} is not a study folder (it needs study.yaml and study.json, written by "
                        "compare-optimizers and train --seeds)") from None
    seeds = meta.get("seeds") if isinstance(meta, dict) else None
    engine = meta.get("engine") if isinstance(meta, dict) else None
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        raise UserError(f"{where}: study.json's seeds {seeds!r} are not a list of seeds (whole numbers >= 0)")
    if engine not in ("population", "sequential"):
        raise UserError(f"{where}: study.json's engine {engine!r} is not one of population, sequential")
    extra = sorted(set(raw) - {"kind", "base", "variants"}) if isinstance(raw, dict) else []
    if extra:
        raise UserError(f"{where}: study.yaml has keys a study does not: {', '.join(map(str, extra))}")
    if not isinstance(raw, dict) or raw.get("kind") not in ("compare", "seeds"):
        raise UserError(f"{where}: study.yaml's kind is not compare or seeds")
    try:
        return study_from_dict(raw), seeds, engine
    except ConfigError as exc:
        raise UserError(f"{where}: study.yaml: {exc}") from None


def _check_members(study_dir: Path, planned: list[Planned]) -> None:
    """The study folder's runs are the ones it plans, each a folder of its own (not a link to another's)."""
    names = {p.run_dir.name for p in planned}
    for entry in sorted(study_dir.iterdir()):
        if entry.is_symlink():
            raise UserError(f"--resume {str(study_dir)!r}: {entry.name!r} is a symbolic link; a study's runs are "
                            "folders of their own")
        if entry.is_dir() and (entry / "config.yaml").is_file() and entry.name not in names:
            raise UserError(f"--resume {str(study_dir)!r}: the run {entry.name!r} is not one that study.json and "
                            f"study.yaml plan ({', '.join(sorted(names))}); were they edited?")


RESUME_MAY_CHANGE = frozenset({"device", "data.dir", "distill.teacher", "distill.fingerprint"})  # checked apart


def _check_unedited(study_dir: Path, started: list[Planned]) -> None:
    """A run to continue whose config.yaml says otherwise than study.yaml plans for it was continued as planned,
    and its config.yaml written back over the edit without a word (`train --resume` of the run alone refuses
    it): refused, naming what differs."""
    for p in started:
        differ = config_difference(run_config(p.run_dir).to_dict(), p.cfg.to_dict(), RESUME_MAY_CHANGE)
        if differ:
            key, saved, planned = differ
            raise UserError(f"--resume {str(study_dir)!r}: {p.run_dir.name}/config.yaml was edited ({key}: "
                            f"{show(saved)} where study.yaml has {show(planned)}); a study's runs continue as "
                            "study.yaml plans them: undo the edit, or copy the run folder out of the study and "
                            "continue it alone (fashionmlp train --resume)")


def _unfinished(run_dir: Path) -> bool:
    status = previous_summary(run_dir).get("status")
    return status is None or status in UNFINISHED  # None: never started, or killed before its first summary
