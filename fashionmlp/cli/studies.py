"""Many runs of one network: `compare-optimizers` (the optimizer study) and `sweep` (a search with Optuna)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashionmlp.cli.common import (
    RUNS,
    DataDir,
    Device,
    Engine,
    Epochs,
    Overrides,
    RunsDir,
    Seeds,
    SweepRunsDir,
    app,
    command_line,
    config_option,
    csv_list,
    err,
    given_text,
    graceful_stop,
    note,
    one_seed_option,
    path_text,
    stop_came_late,
    user_errors,
)
from fashionmlp.cli.show import PopulationLines, print_table, progress, study_table
from fashionmlp.errors import UserError
from fashionmlp.tracking import resume_command


@app.command("compare-optimizers")
@user_errors
def compare_optimizers(
    model: Annotated[str | None, typer.Option("--model", metavar="mlp|cnn", help=(
        "mlp | cnn: the built-in study of that network (default: mlp); with --config, the network when the "
        "config names none, else a check."))] = None,
    config: Annotated[Path | None, config_option(
        "Study config: a training config plus `variants` (see configs/compare_mlp.yaml).")] = None,
    optimizers: Annotated[str | None, typer.Option("--optimizers", metavar="LIST", help=(
        "Comma-separated variants to run (default: all), e.g. sgd,nesterov,adam,adam_lr1."))] = None,
    epochs: Epochs = None,
    seeds: Seeds = None,
    engine: Engine = "auto",
    device: Device = None,
    data_dir: DataDir = None,
    runs_dir: RunsDir = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help=(
        "Override KEY=VALUE for every variant (train.batch_size=256) or one (variants.adam.lr=0.001; optimizer "
        "keys only so: each variant has its own optimizer). "
        "Repeatable."))] = None,
    resume: Annotated[Path | None, typer.Option("--resume", metavar="STUDY_DIR", parser=path_text, help=(
        "Continue an interrupted study in this folder: every unfinished run, exactly."))] = None,
) -> None:
    """Train the same network with several optimizers from the same start; plot and tabulate the result.

    Exit 0 done (a variant that diverged or failed to learn is a result, marked in the table), 2 bad input,
    130 interrupted.
    """
    from fashionmlp.config import shortcut_values
    from fashionmlp.study import resume_study, run_study, study_from_options

    with graceful_stop() as stop:
        if resume is not None:
            given = (model, config, optimizers, epochs, seeds, device, runs_dir)
            if any(v is not None for v in given) or set_ or engine != "auto":
                raise UserError("--resume continues a study in its own folder with its saved study; only "
                                "--data-dir may be given with it")
            result = resume_study(resume, data_dir=data_dir, make_progress=progress,
                                  population_progress=PopulationLines(), stop=stop, command=command_line(),
                                  notify=note)
            raise typer.Exit(report_resumed(result))
        else:
            one_seed_option(seeds, None, set_, has_seed=False)
            if model is not None and model not in ("mlp", "cnn"):
                raise UserError(f"--model: {model!r} is not allowed; allowed: mlp, cnn")
            study = study_from_options(model, config, set_ or [], csv_list(optimizers, "--optimizers"),
                                       shortcut_values(epochs=epochs, device=device))
            seed_list = seed_list_option(seeds) or [study.base.seed]
            result = run_study(study, seeds=seed_list, runs_dir=runs_dir or RUNS, data_dir=data_dir, engine=engine,
                               make_progress=progress, population_progress=PopulationLines(), stop=stop,
                               command=command_line(), notify=note)
            study_name = study_title(study.base)
    study_table(result, f"Optimizer comparison: {study_name}")
    raise typer.Exit(end_study(result, "compare-optimizers"))


def report_resumed(result) -> int:
    """A resumed study's table, lines and exit code as the command that began it gives them, whichever of the
    two resumed it (a `train --seeds` group resumed by compare-optimizers was an "Optimizer comparison")."""
    from fashionmlp.cli.runs import seeds_report
    from fashionmlp.study import read_study

    if result.kind == "seeds":
        return seeds_report(result)
    study_table(result, f"Optimizer comparison: {study_title(read_study(result.study_dir)[0].base)}")
    return end_study(result, "compare-optimizers")  # its name as it began; not the folder's


def study_title(base) -> str:
    """The table's title after "Optimizer comparison: ": "mlp, 20 epochs"."""
    from fashionmlp.plots import plural

    return f"{base.model.name}, {plural(base.train.epochs, 'epoch')}"


def seed_list_option(seeds: str | None) -> list[int] | None:
    """--seeds 0,1,2 as a list (None when not given); a negative seed is one error line."""
    seed_list = csv_list(seeds, "--seeds", int)
    if seed_list and any(s < 0 for s in seed_list):
        raise UserError(f"--seeds {seeds!r}: seeds must be >= 0")
    return seed_list


def end_study(result, command: str, finished: bool = True) -> int:
    """The study folder as the last line; exit 130 when the study was interrupted (resume it), else 0.
    `finished`: False where the caller exits otherwise (train --seeds with a seed that diverged: exit 3)."""
    if result.interrupted:
        data_dir = next((o.summary.get("data", {}).get("dir") for o in result.outcomes), None)
        err("interrupted: the study stopped early; the table covers the finished runs; continue it with: "
            + resume_command(command, result.study_dir, data_dir))
        typer.echo(str(result.study_dir))
        return 130
    stop_came_late(finished)
    typer.echo(str(result.study_dir))
    return 0


@app.command()
@user_errors
def sweep(
    config: Annotated[Path, config_option(
        "Sweep config: a training config plus a `sweep:` section (see configs/sweep_mlp.yaml).")],
    trials: Annotated[int | None, typer.Option("--trials", metavar="N", help=(
        "Finished trials the study needs (overrides sweep.trials); raise it to extend a study."))] = None,
    jobs: Annotated[int, typer.Option("--jobs", metavar="J", help=(
        "Worker processes on this machine, each with cores/J CPU threads."))] = 1,
    population: Annotated[int | None, typer.Option("--population", metavar="K", help=(
        "Trials each worker asks for at once; those of one shape train together on the population engine "
        "(default: 8, or what fits in memory, at most the trials; 1 for the CNN on a CPU; 1 trains one at a "
        "time)."))] = None,
    storage: Annotated[str | None, typer.Option("--storage", metavar="URL", parser=given_text, help=(
        "Database URL of a shared study, e.g. postgresql://user:password@host/db (default: a journal file in "
        "the sweep folder)."))] = None,
    study: Annotated[str | None, typer.Option("--study", metavar="NAME", help=(
        "Study name (default: the config's name); the same name and storage continue it."))] = None,
    set_: Overrides = None,
    data_dir: DataDir = None,
    runs_dir: SweepRunsDir = None,
) -> None:
    """Search hyperparameters with Optuna: one run folder per trial, scored on a validation split.

    Running the same command again continues the study until it has its trials. Exit 0 done, 1 a worker died
    before the study was done, 2 bad input, 130 interrupted.
    """
    from fashionmlp.sweep import (
        best_line,
        default_study_name,
        finished_text,
        load_sweep_file,
        require_optuna,
        run_sweep,
        table_rows,
    )

    require_optuna()
    spec = load_sweep_file(config, set_ or [], trials)
    with graceful_stop("finished trials are in the study; the same command continues it") as stop:
        result = run_sweep(spec, study=default_study_name(spec, config) if study is None else study, jobs=jobs,
                           storage=storage,
                           runs_dir=runs_dir or RUNS, data_dir=data_dir, population=population, echo=typer.echo,
                           stop=stop, command=command_line())
    header, cells = table_rows(result.rows, spec)
    print_table(f"Sweep {result.study}: {finished_text(result.finished, result.target)}; best first", header, cells,
                left=("state", "note"), width=160)
    if result.best is not None or result.rows:
        typer.echo(f"best: {best_line(result.best, spec, result.sweep_dir)}")
    if result.best is not None:
        typer.echo(f"config: {result.sweep_dir / 'best.yaml'}  (fashionmlp train --config ... --epochs N)")
    typer.echo(f"table: {result.sweep_dir / 'summary.md'}")
    for problem in result.problems:
        err(f"worker lost: {problem}")
    raise typer.Exit(_sweep_exit(result))


def _sweep_exit(result) -> int:
    """The sweep's exit code, after its last lines: 130 interrupted, 1 a worker died before the study was done,
    0 otherwise (an incomplete study says so: the same command continues it)."""
    if result.interrupted and result.finished < result.target:  # a stop after the last trial ended: it is done
        err(f"interrupted: {result.finished} of {result.target} trials finished; run the same command again "
            "to continue")
        typer.echo(str(result.sweep_dir))
        return 130
    if result.finished < result.target:
        err(f"incomplete: {result.finished} of {result.target} trials finished"
            + (f", {result.running} still running elsewhere" if result.running else "")
            + "; run the same command again to continue")
        typer.echo(str(result.sweep_dir))
        return 1 if result.problems else 0
    stop_came_late(True)
    typer.echo(str(result.sweep_dir))
    return 0
