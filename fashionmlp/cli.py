"""The `fashionmlp` command: thin typer commands that parse options, call plain functions and report."""

from __future__ import annotations

import contextvars
import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from fashionmlp import status
from fashionmlp.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Neural-network experiments on Fashion-MNIST: train, compare optimizers, evaluate, predict, "
                       "and NumPy backpropagation (manual).")
manual_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="NumPy implementations of backprop, checked against torch.")
app.add_typer(manual_app, name="manual")

DEBUG_ENV = "FASHIONMLP_DEBUG"
_VERBOSE = contextvars.ContextVar("fashionmlp_verbose", default=False)  # set by the root callback per invocation
_ARGV: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("fashionmlp_argv", default=None)

# ---------------------------------------------------------------- errors and reporting


def _verbose() -> bool:
    flag = os.environ.get(DEBUG_ENV, "").strip().lower()
    return flag not in ("", "0", "false", "no", "off") or _VERBOSE.get()


def _err(message: str) -> None:
    typer.echo(message, err=True)


def user_errors(command: Callable) -> Callable:
    """Turn a UserError into one line on stderr and exit code 2 (the traceback too with --verbose)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            if _verbose():
                traceback.print_exc()
            _err(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None

    return wrapper


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help=f"Show full tracebacks (or set "
                                                                     f"{DEBUG_ENV}=1).")] = False) -> None:
    _VERBOSE.set(verbose)


@contextmanager
def _graceful_stop() -> Iterator[Callable[[], bool]]:
    """First Ctrl-C/SIGTERM: finish the step, save, exit 130. Second Ctrl-C: exit at once."""
    from fashionmlp.engine import StopFlag

    flag = StopFlag()

    def handler(signum, frame):
        if flag.requested:
            _err("\nsecond interrupt: exiting now (checkpoints of completed epochs are intact)")
            os._exit(130)
        flag.requested = True
        _err(f"\n{signal.Signals(signum).name}: stopping after this step (press Ctrl-C again to quit at once)")

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. embedded): no handlers, no graceful stop
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _progress(label: str = ""):
    """A rich progress bar on a terminal, one plain line per epoch otherwise (CI logs)."""
    from fashionmlp.engine import Progress

    def line(result, epochs: int) -> str:
        m = result.metrics
        val = f"  val acc {m['val_accuracy']:6.2%}" if "val_accuracy" in m else ""
        return (f"{label}epoch {result.epoch:>3}/{epochs}  train loss {m['train_loss']:.4f}  "
                f"test loss {m['test_loss']:.4f}  test acc {m['test_accuracy']:6.2%}{val}  "
                f"{result.samples_per_second:,.0f} samples/s  {m['seconds']:.1f}s")

    class Plain(Progress):
        def end_epoch(self, result, epochs):
            typer.echo(line(result, epochs))

    class Bar(Progress):
        def __init__(self):
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), transient=True)
            self.task = None

        def start_epoch(self, epoch, epochs, steps):
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task("", total=steps)
            self.bar.reset(self.task, total=steps, description=f"{label}epoch {epoch}/{epochs}")

        def step(self, done):
            self.bar.update(self.task, completed=done)

        def end_epoch(self, result, epochs):
            self.bar.console.print(line(result, epochs), highlight=False)

        def close(self):
            self.bar.stop()

    return Bar() if sys.stderr.isatty() and sys.stdout.isatty() else Plain()


def _report_run(result) -> None:
    s = result.summary
    if result.status == status.COMPLETED and "early_stopping" in s:
        early = s["early_stopping"]
        when = (f"stopped early after epoch {early['stopped_after_epoch']} (no better validation accuracy in "
                f"{early['patience']} epochs)" if early["stopped_after_epoch"] else f"{s['epochs']} epochs")
        typer.echo(f"done: {when}; best weights restored from epoch {early['restored_epoch']} "
                   f"(checkpoints/best.pt): val accuracy {s['final']['val_accuracy']:.2%}, test accuracy "
                   f"{s['final']['test_accuracy']:.2%}, {s['seconds']:.1f}s")
    elif result.status == status.COMPLETED:
        typer.echo(f"done: test accuracy {s['final']['test_accuracy']:.2%} (best {s['best']['test_accuracy']:.2%} "
                   f"at epoch {s['best']['epoch']}), {s['seconds']:.1f}s")
    elif result.status == status.DIVERGED:
        d = s["diverged"]
        _err(f"diverged: the loss became non-finite at epoch {d['epoch']}, step {d['step']} (lr {d['lr']:g}); "
             f"checkpoints/last.pt keeps epoch {d['last_good_epoch']}; try a lower learning rate, "
             f"e.g. --set optimizer.lr={d['lr'] / 10:g}")
    else:
        _err(f"interrupted after epoch {s['epochs']}; resume with: {s['resume_command']}")
    typer.echo(str(result.run_dir))


# ---------------------------------------------------------------- train

Overrides = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a config value, KEY=VALUE with a dotted key (repeatable): --set optimizer.lr=0.1; a mapping "
         "edits a section: --set 'model={activation: tanh}'")]
DataDir = Annotated[Path | None, typer.Option("--data-dir",
    metavar="DIR", help="Folder with the four Fashion-MNIST .gz files (default: config data.dir, then "
                        "$FASHIONMLP_DATA_DIR, then ./data).")]
RunDir = Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder made by `fashionmlp train`.")]
Checkpoint = Annotated[str | None, typer.Option("--checkpoint", metavar="best|last", help=(
    "Which checkpoint of the run (default: best when the run has a validation split, which chose it; else "
    "last)."))]
Device = Annotated[str | None, typer.Option("--device",
    metavar="DEVICE", help="auto | cpu | cuda | cuda:N (default: the config's device).")]


@app.command()
@user_errors
def train(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE", help="YAML experiment config, e.g. configs/mlp_adam.yaml.")] = None,
    set_: Overrides = None,
    epochs: Annotated[int | None, typer.Option("--epochs",
        metavar="N", help="Number of epochs (overrides train.epochs).")] = None,
    device: Device = None,
    seed: Annotated[int | None, typer.Option("--seed",
        metavar="N", help="Random seed, 0 to 2**32-1 (overrides seed).")] = None,
    data_dir: DataDir = None,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir",
        metavar="DIR", help="Where run folders are created [default: runs].")] = None,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="Run folder prefix, one folder name "
                                                                  "(overrides name).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", metavar="RUN_DIR",
        help="Continue the run in this folder from its last checkpoint "
                                                         "(with --epochs N to extend it).")] = None,
) -> None:
    """Train a model from a YAML config; prints the run folder. Exit 0 done, 3 diverged, 130 interrupted."""
    from fashionmlp.config import load_config, shortcut_overrides
    from fashionmlp.resume import resume as resume_run
    from fashionmlp.run import train as train_run

    with _graceful_stop() as should_stop:
        if resume is not None:
            if config is not None or set_ or seed is not None or name is not None or runs_dir is not None:
                raise UserError("--resume continues a run in its own folder with its saved config; only --epochs, "
                                "--device and --data-dir may be given with it")
            result = resume_run(resume, epochs=epochs, data_dir=data_dir, device=device, progress=_progress(),
                                should_stop=should_stop, command=_command_line(),
                                notify=lambda message: _err(f"note: {message}"))
        else:
            if config is None:
                raise UserError("--config is required (e.g. --config configs/mlp_adam.yaml), or --resume RUN_DIR")
            overrides = list(set_ or []) + shortcut_overrides(epochs=epochs, device=device, seed=seed, name=name)
            cfg = load_config(config, overrides)
            result = train_run(cfg, runs_dir=runs_dir or Path("runs"), data_dir=data_dir, progress=_progress(),
                               should_stop=should_stop, command=_command_line())
    _report_run(result)
    raise typer.Exit(result.exit_code)


def _command_line() -> str | None:
    """This invocation as the user would type it again (recorded in summary.json); None when not run by main()."""
    import shlex

    argv = _ARGV.get()
    return None if argv is None else shlex.join(["fashionmlp", *argv])


# ---------------------------------------------------------------- evaluate, predict, data


@app.command()
@user_errors
def evaluate(
    run_dir: RunDir,
    checkpoint: Checkpoint = None,
    data_dir: DataDir = None,
    device: Device = None,
) -> None:
    """Re-evaluate a saved run on the test set: loss, accuracy, per-class accuracy and confusion matrix."""
    from fashionmlp.inference import evaluate_run

    report = evaluate_run(run_dir, checkpoint=checkpoint, data_dir=data_dir, device=device)
    for note in report.notes:
        _err(f"note: {note}")
    typer.echo(report.text)
    if report.unsaved:
        _err(f"warning: {report.unsaved}")
    else:
        typer.echo(f"confusion matrix picture: {report.figure_path}")


@app.command()
@user_errors
def predict(
    run_dir: RunDir,
    index: Annotated[list[int] | None, typer.Option("--index", metavar="I",
        help="Test-set image index, 0-9999 (repeatable).")] = None,
    image: Annotated[Path | None, typer.Option("--image", metavar="FILE",
        help="A grayscale image file (PNG, JPEG...); 28x28 is used as "
                                                       "is, other sizes are resized to 28x28 with a warning.")] = None,
    invert: Annotated[bool, typer.Option("--invert/--no-invert",
        help="Invert --image (for dark objects on a light background; "
                                              "Fashion-MNIST is light on dark).")] = False,
    grid: Annotated[Path | None, typer.Option("--grid",
        metavar="FILE", help="Save a picture of 16 test images with predicted/true labels (.png, .pdf, .svg, "
                             ".jpg ...).")] = None,
    checkpoint: Checkpoint = None,
    data_dir: DataDir = None,
    device: Device = None,
) -> None:
    """Top-3 classes with probabilities for test images (--index) or an image file (--image)."""
    from fashionmlp.inference import predict_run

    if index and image is not None:
        raise UserError("give --index or --image, not both")
    if not index and image is None and grid is None:
        raise UserError("nothing to predict: give --index I (repeatable), --image FILE or --grid OUT.png")
    text = predict_run(run_dir, indices=index or [], image=image, invert=invert, grid=grid, checkpoint=checkpoint,
                       data_dir=data_dir, device=device, warn=_err)
    typer.echo(text)


@app.command()
@user_errors
def data(
    data_dir: DataDir = None,
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
        md5 = {True: "MD5 ok", False: "MD5 MISMATCH", None: "MD5 not checked (not the .gz)"}[r.md5_ok]
        typer.echo(f"  {FILES[r.key][0]:<28} {str(r.path) if r.path else 'MISSING':<60} "
                   f"{md5 if r.path else ''}")
    missing = [FILES[r.key][0] for r in rows if r.path is None]
    if missing:
        raise UserError(f"missing in {str(root)!r}: {', '.join(missing)}; put the four .gz files there or point "
                        "--data-dir / $FASHIONMLP_DATA_DIR at them")
    if any(r.md5_ok is False for r in rows):
        raise UserError("some files do not match the published MD5 (see above): replace them")


# ---------------------------------------------------------------- compare-optimizers


def _csv_list(text: str | None, option: str, kind=str) -> list | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise UserError(f"{option} {text!r}: expected a comma-separated list, e.g. {option} 0,1,2") from None
    if not values:
        raise UserError(f"{option} {text!r}: the list is empty")
    return values


@app.command("compare-optimizers")
@user_errors
def compare_optimizers(
    model: Annotated[str | None, typer.Option("--model",
        metavar="mlp|cnn", help="mlp | cnn: the built-in study of that network "
                                                      "(ignored with --config except as a check).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", metavar="FILE",
        help="Study config: a training config plus "
                                                   "`variants` (see configs/compare_mlp.yaml).")] = None,
    optimizers: Annotated[str | None, typer.Option("--optimizers",
        metavar="LIST", help="Comma-separated variants to run "
                                                           "(default: all), e.g. sgd,nesterov,adam,adam_lr1.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", metavar="N",
        help="Epochs per variant (overrides train.epochs).")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", metavar="LIST",
        help="Comma-separated seeds, e.g. 0,1,2; results are mean ± std "
                                                      "(default: the config's seed).")] = None,
    device: Device = None,
    data_dir: DataDir = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir",
        metavar="DIR", help="Where the study folder is created.")] = Path("runs"),
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override KEY=VALUE for every variant (train.batch_size=256) or one "
                      "(variants.adam.lr=0.001). Repeatable.")] = None,
) -> None:
    """Train the same network with several optimizers from the same start; plot and tabulate the result."""
    from fashionmlp.compare import run_study, study_from_options, table_rows
    from fashionmlp.config import shortcut_overrides
    from fashionmlp.plots import plural

    if model is not None and model not in ("mlp", "cnn"):
        raise UserError(f"--model: {model!r} is not allowed; allowed: mlp, cnn")
    overrides = list(set_ or []) + shortcut_overrides(epochs=epochs, device=device)
    study = study_from_options(model, config, overrides, _csv_list(optimizers, "--optimizers"))
    seed_list = _csv_list(seeds, "--seeds", int) or [study.base.seed]
    if any(s < 0 for s in seed_list):
        raise UserError(f"--seeds {seeds!r}: seeds must be >= 0")
    with _graceful_stop() as should_stop:
        result = run_study(study, seeds=seed_list, runs_dir=runs_dir, data_dir=data_dir,
                           make_progress=lambda label: _progress(label), should_stop=should_stop,
                           command=_command_line())
    from rich.console import Console
    from rich.table import Table

    header, cells = table_rows(result.rows)
    table = Table(title=f"Optimizer comparison: {study.base.model.name}, {plural(study.base.train.epochs, 'epoch')}")
    for h in header:
        table.add_column(h, justify="left" if h in ("optimizer", "status") else "right")
    for row in cells:
        style = None if row[-1] == status.COMPLETED else "bold red"
        table.add_row(*row, style=style)
    Console(width=max(120, Console().width)).print(table)
    typer.echo(f"plot: {result.study_dir / 'comparison.png'}")
    typer.echo(f"table: {result.study_dir / 'summary.md'}")
    if result.interrupted:
        _err("interrupted: the study stopped early; the table covers the finished variants")
        typer.echo(str(result.study_dir))
        raise typer.Exit(130)
    typer.echo(str(result.study_dir))


# ---------------------------------------------------------------- manual


@manual_app.command("check")
@user_errors
def manual_check(seed: Annotated[int, typer.Option("--seed",
        metavar="N", help="Seed of the random test inputs, 0 to 2**32-1.")] = 0) -> None:
    """Check every NumPy function and several networks against finite differences and torch.autograd.

    Exit 1 if any row exceeds 1e-7 (relative, vs finite differences) or 1e-10 (vs autograd).
    """
    from fashionmlp.manual.check import format_table, run_checks

    if not 0 <= seed < 2**32:
        raise UserError(f"--seed {seed}: out of range; allowed: 0 to {2**32 - 1}")
    rows = run_checks(seed)
    typer.echo(format_table(rows))
    if not all(r.passed for r in rows):
        raise typer.Exit(1)


@manual_app.command("train")
@user_errors
def manual_train(
    config: Annotated[Path | None, typer.Option("--config", "-c", metavar="FILE", help="Config (default: the same as "
                                                "configs/manual_mlp.yaml: 784-100-100-10 ReLU, SGD lr 0.1).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs",
        metavar="N", help="Number of epochs (overrides train.epochs).")] = None,
    crosscheck: Annotated[bool, typer.Option("--crosscheck/--no-crosscheck",
        help="Train a torch float64 twin in lockstep and report the "
                                                  "largest per-step loss difference and final weight difference.")]
    = False,
    set_: Overrides = None,
    data_dir: DataDir = None,
) -> None:
    """Train the NumPy MLP with minibatch SGD on Fashion-MNIST, printing loss and accuracy per epoch.

    Exit 0 done, 2 for a config it cannot run, 3 diverged, 130 interrupted (nothing is saved).
    """
    from fashionmlp import status
    from fashionmlp.config import config_from_dict, load_config, shortcut_overrides
    from fashionmlp.data import load_data
    from fashionmlp.manual.train import DEFAULTS, check_manual_config, train_numpy

    overrides = list(set_ or []) + shortcut_overrides(epochs=epochs)
    cfg = load_config(config, overrides) if config is not None else config_from_dict(DEFAULTS, overrides)
    check_manual_config(cfg)
    worst_loss, last = 0.0, None
    try:
        data = load_data(cfg, data_dir)
        val = f", {len(data.val.labels)} validation images" if data.val is not None else ""
        schedule = f" ({cfg.optimizer.schedule})" if cfg.optimizer.schedule != "constant" else ""
        typer.echo(f"NumPy MLP {[784, *cfg.model.hidden, 10]} ({cfg.model.activation}), SGD lr "
                   f"{cfg.optimizer.lr:g}{schedule}, batch {cfg.train.batch_size}, {len(data.train.labels)} "
                   f"training images{val}" + (", with a torch float64 twin" if crosscheck else ""))
        for e in train_numpy(cfg, data, crosscheck=crosscheck):
            if e.diverged_step is not None:
                _err(f"diverged: the loss became non-finite at epoch {e.epoch}, step {e.diverged_step} "
                     f"(lr {e.lr:g}); try a lower learning rate, e.g. --set optimizer.lr={e.lr / 10:g}")
                raise typer.Exit(status.EXIT_CODES[status.DIVERGED])
            extra = (f"  |Δloss| max {e.max_step_loss_diff:.1e}  |Δθ| max {e.max_param_diff:.1e}"
                     if crosscheck else "")
            val = (f"  val loss {e.val_loss:.4f}  val acc {e.val_accuracy:6.2%}" if e.val_loss is not None else "")
            lr = f"  lr {e.lr:.3g}" if schedule else ""
            typer.echo(f"epoch {e.epoch:>3}/{cfg.train.epochs}  train loss {e.train_loss:.4f}  test loss "
                       f"{e.test_loss:.4f}  test acc {e.test_accuracy:6.2%}{val}{lr}  {e.seconds:.1f}s{extra}")
            worst_loss = max(worst_loss, e.max_step_loss_diff or 0.0)
            last = e
    except KeyboardInterrupt:
        _err(f"interrupted after {last.epoch if last else 0} of {cfg.train.epochs} epochs (manual train saves "
             "nothing)")
        raise typer.Exit(status.EXIT_CODES[status.INTERRUPTED]) from None
    typer.echo(f"final test accuracy {last.test_accuracy:.2%}")
    if crosscheck:
        typer.echo(f"crosscheck vs torch (float64, same init and batches): largest per-step loss difference "
                   f"{worst_loss:.2e}, final parameter difference {last.max_param_diff:.2e}")


# ---------------------------------------------------------------- lr-find, inspect


def _number(text: str, option: str, kind: type = float) -> float:
    """Parse an option's number here, so a bad one is one `error:` line like every other mistake."""
    from fashionmlp.config import float_problem

    try:
        value = kind(text)
    except ValueError:
        raise UserError(f"{option} {text!r}: not a {'whole number' if kind is int else 'number'}") from None
    problem = float_problem(text, value) if kind is float else None
    if problem:
        raise UserError(f"{option} {text!r} {problem}")
    return value


@app.command("lr-find")
@user_errors
def lr_find(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE", help="YAML experiment config, e.g. configs/mlp_sgd.yaml.")] = None,
    set_: Overrides = None,
    start: Annotated[str, typer.Option("--start", metavar="LR", help="First learning rate, > 0.")] = "1e-6",
    end: Annotated[str, typer.Option("--end", metavar="LR", help="Last learning rate, > --start.")] = "10",
    steps: Annotated[str, typer.Option("--steps",
        metavar="N", help="Batches, one learning rate each, growing exponentially "
                                                         "from --start to --end; 1 to 10000.")] = "200",
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir",
        metavar="DIR", help="Where the lr-find folder is created [default: runs].")] = None,
    data_dir: DataDir = None,
) -> None:
    """Learning-rate range test: train with an exponentially growing lr until the loss blows up; prints the
    suggested lr and the folder with lr_find.png and lr_find.csv (no checkpoint is kept)."""
    from fashionmlp.config import load_config
    from fashionmlp.lrfind import check_options, run_lr_find

    start_lr, end_lr, n = _number(start, "--start"), _number(end, "--end"), _number(steps, "--steps", int)
    check_options(start_lr, end_lr, n)
    if config is None:
        raise UserError("--config is required (e.g. --config configs/mlp_sgd.yaml)")
    cfg = load_config(config, list(set_ or []))
    result = run_lr_find(cfg, start=start_lr, end=end_lr, steps=n, runs_dir=runs_dir or Path("runs"),
                         data_dir=data_dir, command=_command_line(), echo=_err)
    typer.echo(result.message)
    typer.echo(str(result.out_dir))


@app.command("inspect")
@user_errors
def inspect_(
    run_dir: RunDir,
    checkpoint: Checkpoint = None,
    data_dir: DataDir = None,
    device: Device = None,
) -> None:
    """Pictures of a trained model in RUN_DIR/inspect/: first-layer weights, confident mistakes, per-class
    accuracy, calibration; and its TensorBoard log with the penultimate layer in the projector."""
    from fashionmlp.inspection import inspect_run

    report = inspect_run(run_dir, checkpoint=checkpoint, data_dir=data_dir, device=device, echo=_err)
    for note in report.notes:
        _err(f"note: {note}")
    typer.echo(report.text)


# ---------------------------------------------------------------- sweep


@app.command()
@user_errors
def sweep(
    config: Annotated[Path, typer.Option("--config", "-c", metavar="FILE", help="Sweep config: a training config "
                                         "plus a `sweep:` section (see configs/sweep_mlp.yaml).")],
    trials: Annotated[int | None, typer.Option("--trials",
        metavar="N", help="Finished trials the study needs (overrides "
                                                                 "sweep.trials); raise it to extend a study.")] = None,
    jobs: Annotated[int, typer.Option("--jobs",
        metavar="J", help="Worker processes on this machine, each with cores/J CPU "
                                                        "threads.")] = 1,
    storage: Annotated[str | None, typer.Option("--storage",
        metavar="URL", help="Database URL of a shared study, e.g. postgresql://user:password@host/db (default: a "
                            "journal file in the sweep folder).")] = None,
    study: Annotated[str | None, typer.Option("--study",
        metavar="NAME", help="Study name (default: the config's name); the "
                                                                   "same name and storage continue it.")] = None,
    set_: Overrides = None,
    data_dir: DataDir = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir",
        metavar="DIR", help="Where the sweep folder is created (or found, to "
                                                               "continue).")] = Path("runs"),
) -> None:
    """Search hyperparameters with Optuna: one run folder per trial, scored on a validation split.

    Running the same command again continues the study until it has its trials. Exit 0 done, 1 a worker died
    before the study was done, 130 interrupted.
    """
    from fashionmlp.sweep import (
        default_study_name,
        finished_text,
        load_sweep_file,
        require_optuna,
        run_sweep,
        table_rows,
    )

    require_optuna()
    spec = load_sweep_file(config, list(set_ or []), trials)
    with _graceful_stop() as should_stop:
        result = run_sweep(spec, study=study or default_study_name(spec, config), jobs=jobs, storage=storage,
                           runs_dir=runs_dir, data_dir=data_dir, echo=typer.echo, should_stop=should_stop,
                           command=_command_line())
    from rich.console import Console
    from rich.table import Table

    header, cells = table_rows(result.rows, spec)
    table = Table(title=f"Sweep {result.study}: {finished_text(result.finished, result.target)}; best first")
    for h in header:
        table.add_column(h, justify="left" if h in ("state", "note") else "right")
    for row in cells:
        table.add_row(*row)
    Console(width=max(160, Console().width)).print(table)
    best = result.best
    if best is not None:
        test = (f"{best['test_accuracy']:.2%}" if best["test_accuracy"] is not None
                else f"in {best['run_dir']}/summary.json on {best['host']}")
        typer.echo(f"best: trial {best['number']}, {spec.metric} {best['value']:.4f}; test accuracy {test} "
                   "(reported once, not used by the search)")
        typer.echo(f"config: {result.sweep_dir / 'best.yaml'}  (fashionmlp train --config ... --epochs N)")
    typer.echo(f"table: {result.sweep_dir / 'summary.md'}")
    for problem in result.problems:
        _err(f"worker lost: {problem}")
    if result.interrupted:
        _err(f"interrupted: {result.finished} of {result.target} trials finished; run the same command again "
             "to continue")
        typer.echo(str(result.sweep_dir))
        raise typer.Exit(130)
    if result.finished < result.target:
        _err(f"incomplete: {result.finished} of {result.target} trials finished"
             + (f", {result.running} still running elsewhere" if result.running else "")
             + "; run the same command again to continue")
        typer.echo(str(result.sweep_dir))
        raise typer.Exit(1 if result.problems else 0)
    typer.echo(str(result.sweep_dir))


def main() -> None:
    _ARGV.set(sys.argv[1:])
    app(prog_name="fashionmlp")


if __name__ == "__main__":
    main()
