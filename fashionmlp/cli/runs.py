"""One run: `train` (or --resume), and what is done with a saved one: `evaluate`, `predict`; and `data`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashionmlp.cli.common import (
    RUNS,
    Checkpoint,
    DataDir,
    DataDirNoConfig,
    Device,
    Engine,
    Epochs,
    Overrides,
    RunDir,
    RunsDir,
    app,
    command_line,
    config_option,
    err,
    graceful_stop,
    note,
    one_seed_option,
    path_text,
    stop_came_late,
    user_errors,
)
from fashionmlp.cli.show import PopulationLines, progress, report_run, study_table
from fashionmlp.errors import UserError
from fashionmlp.status import COMPLETED, what_to_lower


@app.command()
@user_errors
def train(
    config: Annotated[Path | None, config_option("YAML experiment config, e.g. configs/mlp_adam.yaml.")] = None,
    set_: Overrides = None,
    epochs: Epochs = None,
    device: Device = None,
    seed: Annotated[int | None, typer.Option("--seed", metavar="N",
                                             help="Random seed, 0 to 2**32-1 (overrides seed).")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", metavar="LIST", help=(
        "Train the config once per seed, e.g. 0,1,2,3,4 (at once, on the population engine; the CNN on a CPU one "
        "after another, see --engine), into one folder "
        "with mean ± std of the final and best test accuracy."))] = None,
    engine: Engine = "auto",
    data_dir: DataDir = None,
    runs_dir: RunsDir = None,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME",
                                             help="Run folder prefix, one folder name (overrides name).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", metavar="RUN_DIR", parser=path_text, help=(
        "Continue the run in this folder from its last checkpoint (with --epochs N to extend it); a folder of "
        "--seeds continues each of its unfinished runs."))] = None,
) -> None:
    """Train a model from a YAML config; prints the run folder. Exit 0 done, 2 bad input, 3 diverged (with
    --seeds: any seed), 130 interrupted."""
    from fashionmlp.config import load_config, shortcut_values

    one_seed_option(seeds, seed, set_)
    with graceful_stop() as stop:
        if resume is not None:
            group = (resume / "study.json").is_file()
            if (config is not None or set_ or seed is not None or seeds or name is not None or runs_dir is not None
                    or engine != "auto"):
                raise UserError(SEEDS_RESUME_OPTIONS if group else "--resume continues a run in its own folder with "
                                "its saved config; only --epochs, --device and --data-dir may be given with it")
            if group:
                raise typer.Exit(_resume_seeds(resume, epochs, device, data_dir, stop))
            result = _resume_run(resume, epochs, device, data_dir, stop)
        else:
            if config is None:
                raise UserError("--config is required (e.g. --config configs/mlp_adam.yaml), or --resume RUN_DIR")
            if seeds is None and engine != "auto":
                from fashionmlp.study import ENGINES

                if engine not in ENGINES:
                    raise UserError(f"--engine: {engine!r} is not allowed; allowed: {', '.join(ENGINES)}")
                raise UserError(f"--engine {engine}: it chooses how the runs of --seeds train; one run trains alone")
            cfg = load_config(config, set_ or [], shortcut_values(epochs=epochs, device=device, seed=seed, name=name))
            if seeds is not None:
                raise typer.Exit(_train_seeds(cfg, seeds, engine, runs_dir, data_dir, stop))
            from fashionmlp.run import train as train_run

            result = train_run(cfg, runs_dir=runs_dir or RUNS, data_dir=data_dir, progress=progress(), stop=stop,
                               command=command_line())
    report_run(result)
    stop_came_late(result.status == COMPLETED)
    raise typer.Exit(result.exit_code)


def _resume_run(run_dir: Path, epochs, device, data_dir, stop):
    """train --resume of one run; a sweep's trial is refused: its result is the study's (a pruned trial trained
    on alone read 'completed' while the study said 'pruned')."""
    from fashionmlp.resume import resume
    from fashionmlp.savedrun import group_of

    if run_dir.is_dir() and group_of(run_dir) == "sweep":
        raise UserError(f"--resume {str(run_dir)!r}: this run is a trial of the sweep "
                        f"{str(run_dir.resolve().parent)!r}, whose study holds its result; the sweep command, run "
                        "again, continues its stopped trials (one stopped before its first epoch ended starts again "
                        "in a new folder); copy the run folder out of the sweep to train it on alone")
    return resume(run_dir, epochs=epochs, data_dir=data_dir, device=device, progress=progress(), stop=stop,
                  command=command_line(), notify=note)


def _train_seeds(cfg, seeds: str, engine: str, runs_dir, data_dir, stop) -> int:
    """train --seeds: the config once per seed, into one folder; the table, mean ± std; the exit code."""
    from fashionmlp.cli.studies import seed_list_option
    from fashionmlp.study import run_study, seeds_study

    result = run_study(seeds_study(cfg), seeds=seed_list_option(seeds), runs_dir=runs_dir or RUNS,
                       data_dir=data_dir, engine=engine, make_progress=progress, population_progress=PopulationLines(),
                       stop=stop, command=command_line(), notify=note)
    return seeds_report(result)


SEEDS_RESUME_OPTIONS = ("--resume of a study folder (train --seeds, compare-optimizers) continues its runs as they "
                        "were planned; only --data-dir may be given with it")


def _resume_seeds(folder: Path, epochs, device, data_dir, stop) -> int:
    from fashionmlp.cli.studies import report_resumed
    from fashionmlp.study import resume_study

    if epochs is not None or device is not None:
        raise UserError(SEEDS_RESUME_OPTIONS)
    result = resume_study(folder, data_dir=data_dir, make_progress=progress, population_progress=PopulationLines(),
                          stop=stop, command=command_line(), notify=note)
    return report_resumed(result)


def seeds_report(result) -> int:
    """The table, a line per config (mean ± std over its finished runs), the runs that diverged; the exit code:
    130 interrupted, 3 when a seed diverged (as `train` alone), else 0."""
    from fashionmlp import status
    from fashionmlp.cli.studies import end_study

    study_table(result, f"{result.study_dir.name}: mean ± std over the seeds")
    for row in result.rows:
        typer.echo(f"{row['optimizer']}: {seeds_line(row, result.outcomes)}")
    diverged = [o for o in result.outcomes if o.status == status.DIVERGED]
    for o in diverged:
        d = o.summary["diverged"]
        err(f"diverged: seed {o.seed}, {status.diverged_where(d)} (lr {d['lr']:g} at that step); "
            f"{what_to_lower(o.summary, d)}")
    code = end_study(result, "train", finished=not diverged)
    return 3 if code == 0 and diverged else code


def seeds_line(row: dict, outcomes: list) -> str:
    """E.g. "final test accuracy 88.64% ± 0.19%, best 88.79% ± 0.15% (mean ± std, n = 3)"; over the finished
    runs only, saying how many of the runs those are when some did not finish."""
    from fashionmlp.study import unfinished

    n, runs = row["n"], row["runs"]
    left = unfinished(outcomes, row["optimizer"], runs)
    of = "" if n == runs else f"; {runs - n} of the {runs} runs did not finish: {left}"
    if n == 0:
        return f"no run finished ({row['status']})"
    if n == 1:
        return (f"final test accuracy {row['final_test_accuracy']:.2%}, best {row['best_test_accuracy']:.2%} "
                f"(n = 1{of})")
    return (f"final test accuracy {row['final_test_accuracy']:.2%} ± {row['final_test_accuracy_std']:.2%}, best "
            f"{row['best_test_accuracy']:.2%} ± {row['best_test_accuracy_std']:.2%} (mean ± std, n = {n}{of})")


@app.command()
@user_errors
def evaluate(run_dir: RunDir, checkpoint: Checkpoint = None, data_dir: DataDir = None, device: Device = None) -> None:
    """Re-evaluate a saved run on the test set: loss, accuracy, per-class accuracy and confusion matrix."""
    from fashionmlp.inference import evaluate_run

    report = evaluate_run(run_dir, checkpoint=checkpoint, data_dir=data_dir, device=device)
    for message in report.notes:
        note(message)
    typer.echo(report.text)
    if report.unsaved:
        err(f"warning: {report.unsaved}")
    else:
        typer.echo(f"confusion matrix picture: {report.figure_path}")


@app.command()
@user_errors
def predict(
    run_dir: RunDir,
    index: Annotated[list[int] | None, typer.Option("--index", metavar="I",
                                                    help="Test-set image index, 0-9999 (repeatable).")] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", metavar="PATH", parser=path_text, help=(
        "An image file (PNG, JPEG, TIFF...; colour becomes gray) or a folder of them (its files that cannot be "
        "read are skipped with a warning), repeatable; 28x28 is used "
        "as is, other sizes "
        "are resized to 28x28 with a warning (padded to a square with black first when not square: crop to the "
        "garment for the best match)."))] = None,
    invert: Annotated[bool, typer.Option("--invert/--no-invert", help=(
        "Invert each --image (for dark objects on a light background; Fashion-MNIST is light on dark)."))] = False,
    grid: Annotated[Path | None, typer.Option("--grid", metavar="FILE", parser=path_text, help=(
        "Save a picture of 16 test images with predicted/true labels (.png, .pdf, .svg, .jpg ...)."))] = None,
    checkpoint: Checkpoint = None,
    data_dir: DataDir = None,
    device: Device = None,
) -> None:
    """Top-3 classes with probabilities for test images (--index) or for image files (--image): one of the
    two, not both; --grid draws 16 test images with either or alone."""
    from fashionmlp.inference import predict_run

    if index and image:
        raise UserError("give --index or --image, not both")
    if not index and not image and grid is None:
        raise UserError("nothing to predict: give --index I (repeatable), --image FILE or FOLDER (repeatable) or "
                        "--grid OUT.png")
    if invert and not image:
        raise UserError("--invert inverts --image files; the test images (--index, --grid) are Fashion-MNIST's own")
    typer.echo(predict_run(run_dir, indices=index or [], images=image or [], invert=invert, grid=grid,
                           checkpoint=checkpoint, data_dir=data_dir, device=device, warn=err))


@app.command()
@user_errors
def data(
    data_dir: DataDirNoConfig = None,
    download: Annotated[bool, typer.Option("--download/--no-download",
                                           help="Fetch missing files through torchvision's mirrors.")] = True,
) -> None:
    """Fetch (when missing) and verify the Fashion-MNIST files; prints where they are and their MD5 status."""
    from fashionmlp.data import FILES, ensure_files, file_status, resolve_data_dir

    root = resolve_data_dir(data_dir)
    rows = file_status(root, verify_md5=True)
    if any(r.path is None for r in rows) and download:
        ensure_files(root, verify_md5=False, allow_download=True)
        rows = file_status(root, verify_md5=True)
    typer.echo(f"data directory: {root.resolve()}")
    for r in rows:
        md5 = {True: "MD5 ok", False: "MD5 MISMATCH", None: "MD5 not checked"}[r.md5_ok]
        typer.echo(f"  {FILES[r.key][0]:<28} {str(r.path) if r.path else 'MISSING':<60} "
                   f"{md5 if r.path else ''}")
    missing = [FILES[r.key][0] for r in rows if r.path is None]
    if missing:
        raise UserError(f"missing in {str(root)!r}: {', '.join(missing)}; put the four .gz files there or point "
                        "--data-dir / $FASHIONMLP_DATA_DIR at them")
    if any(r.md5_ok is False for r in rows):
        raise UserError("some files do not match the published MD5 (see above): replace them")
