"""What every command shares: the typer apps, the options declared once (each with its own name: typer 0.27
names an undeclared option after its metavar), user errors as one line and exit code 2, and Ctrl-C."""

from __future__ import annotations

import contextvars
import errno
import functools
import os
import re
import shlex
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from fashionmlp.errors import StoppedBeforeStart, StoppedWaiting, UserError


class _OneLineUsage(TyperGroup):
    """The command group, whose usage errors (an unknown option, a value of the wrong type: click finds them
    before a command runs, in the group's own options or a command's) are one `error:` line and exit code 2,
    like every other mistake. A command or group given nothing still prints its help."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage():
            return super().invoke(ctx)


@contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # click's UsageError: typer >= 0.26 carries its own click, so matched by name
        names = {kind.__name__ for kind in type(exc).__mro__}
        if "UsageError" in names and "NoArgsIsHelpError" not in names:
            exc.show = functools.partial(_show_usage_error, exc)
        raise


def _show_usage_error(exc, file=None) -> None:
    path = exc.ctx.command_path.split()[1:] if getattr(exc, "ctx", None) is not None else []  # after the program
    message = exc.format_message().replace(" (env var: 'None')", "")  # typer < 0.17 names a missing env var
    typer.echo(f"error: {message} (see {' '.join(['fashionmlp', *path, '--help'])})", err=True)


app = typer.Typer(cls=_OneLineUsage, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Neural-network experiments on Fashion-MNIST: train, compare optimizers, search "
                       "hyperparameters (sweep), find a learning rate, evaluate, predict, inspect, and NumPy "
                       "backpropagation (manual).")
manual_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="NumPy implementations of backprop, checked against torch.")
app.add_typer(manual_app, name="manual")

DEBUG_ENV = "FASHIONMLP_DEBUG"
RUNS = Path("runs")  # where folders are made when --runs-dir is not given
VERBOSE = contextvars.ContextVar("fashionmlp_verbose", default=False)  # set by the root callback per invocation
ARGV: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("fashionmlp_argv", default=None)
STOP = contextvars.ContextVar("fashionmlp_stop", default=None)  # this command's StopRequest (graceful_stop)

# ---------------------------------------------------------------- options, declared once


def path_text(text: str | Path) -> Path:
    """A path option's value; an empty one (`--data-dir "$DATA"` with DATA unset) is refused: as '.' it read,
    downloaded or wrote in the current folder."""
    if not str(text).strip():
        raise typer.BadParameter("an empty path (an unset variable?); give one ('.' is the current folder)")
    return Path(text)


def config_option(help: str) -> typer.models.OptionInfo:
    """--config/-c FILE; each command says what its config holds."""
    return typer.Option("--config", "-c", metavar="FILE", parser=path_text, help=help)


Overrides = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a config value, KEY=VALUE with a dotted key (repeatable): --set optimizer.lr=0.1; a mapping "
         "edits a section: --set 'model={activation: tanh}'")]


def given_text(text: str) -> str:
    """A text option's value; an empty one is refused (`--checkpoint ''` was the default checkpoint)."""
    if not text.strip():
        raise typer.BadParameter("an empty value (an unset variable?); give one, or leave the option out")
    return text


_DATA_DIR = "Folder with the four Fashion-MNIST .gz files (default: {}$FASHIONMLP_DATA_DIR, then ./data)."
DataDir = Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", parser=path_text,
                                              help=_DATA_DIR.format("config data.dir, then "))]
DataDirNoConfig = Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", parser=path_text,  # `data`
                                                      help=_DATA_DIR.format(""))]
RunsDir = Annotated[Path | None, typer.Option(
    "--runs-dir", metavar="DIR", parser=path_text, help="Where the command's folder is made [default: runs].")]
SweepRunsDir = Annotated[Path | None, typer.Option(
    "--runs-dir", metavar="DIR", parser=path_text,
    help="Where the sweep's folder is made, and found again to continue it [default: runs].")]
Epochs = Annotated[int | None, typer.Option("--epochs", metavar="N", help="Number of epochs (overrides "
                                                                          "train.epochs).")]
Device = Annotated[str | None, typer.Option(
    "--device", metavar="DEVICE", parser=given_text, help="auto | cpu | cuda | cuda:N (default: the config's device).")]
Engine = Annotated[str, typer.Option(
    "--engine", metavar="auto|population|sequential", help="population: every run at once, batched (faster); "
    "sequential: one after another; auto: population, except the CNN on a CPU, where batching does not pay.")]
Seeds = Annotated[str | None, typer.Option(
    "--seeds", metavar="LIST", help="Comma-separated seeds, e.g. 0,1,2; results are mean ± std over them.")]
RunDir = Annotated[Path, typer.Argument(metavar="RUN_DIR", parser=path_text,
                                        help="A run folder made by `fashionmlp train`.")]
Checkpoint = Annotated[str | None, typer.Option(
    "--checkpoint", metavar="best|last", parser=given_text,
    help="Which checkpoint of the run (default: best when the run has a validation split, which chose it; else "
         "last).")]


# ---------------------------------------------------------------- errors, interruption, the command line


def verbose() -> bool:
    flag = os.environ.get(DEBUG_ENV, "").strip().lower()
    return flag not in ("", "0", "false", "no", "off") or VERBOSE.get()


def err(message: str) -> None:
    typer.echo(message, err=True)


def note(message: str) -> None:
    err(f"note: {message}")


def user_errors(command: Callable) -> Callable:
    """Turn a UserError into one line on stderr and exit code 2 (the traceback too with --verbose)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (StoppedBeforeStart, StoppedWaiting) as exc:  # a stop, not a mistake: one line, no "error:"
            err(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # a Ctrl-C where no command says more (evaluate): exit 130 without a word
            err("interrupted: the command stopped before it finished")
            raise typer.Exit(130) from None
        except UserError as exc:
            if verbose():
                traceback.print_exc()
            err(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            if verbose():
                traceback.print_exc()
            err(f"error: {str(exc.filename)!r}: a name in this path is longer than the file system allows")
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help=f"Show full tracebacks (or set "
                                                                     f"{DEBUG_ENV}=1).")] = False) -> None:
    VERBOSE.set(verbose)


@contextmanager
def graceful_stop(left: str = "checkpoints of completed epochs are intact: the same command with --resume FOLDER "
                              "continues it") -> Iterator:
    """First Ctrl-C/SIGTERM: finish the step, save, exit 130. Second Ctrl-C: exit at once, saying what is `left`.
    Yields the StopRequest the training loops read."""
    from fashionmlp.progress import StopRequest

    stop = StopRequest()
    STOP.set(stop)  # for stop_came_late, after the block too

    def handler(signum, frame):
        if stop.requested:
            err(f"\nsecond interrupt: exiting now ({left})")
            os._exit(130)
        stop.request()
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send it again (or press Ctrl-C)"
        if stop.finishing:  # it said "stopping after this step", then drew pictures for minutes
            err(f"\n{signal.Signals(signum).name}: the training has ended, nothing is left to stop: {stop.finishing} "
                f"({again} to quit at once)")
        else:
            err(f"\n{signal.Signals(signum).name}: stopping after this step ({again} to quit at once)")

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. embedded): no handlers, no graceful stop
        pass
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_came_late(finished: bool) -> None:
    """After "stopping after this step" a command whose work had finished anyway (the stop came during its last
    step, which ends it: docs/runs.md) said nothing of it, and exited 0. `finished`: the work ended as it would
    have without the stop (not interrupted by it, nor a run that diverged, exit 3, which says so itself)."""
    stop = STOP.get()
    if stop is not None and stop.requested and finished:
        note("the stop came after the training had ended: the results are complete" if stop.came_finishing else
             "the stop came during the last step, which finished the work: nothing is left to resume")


def command_line() -> str | None:
    """This invocation as the user would type it again (recorded in summary.json and lr_find.json, where a
    database URL's password is masked as it is written: tracking.without_passwords); None when not run by
    main()."""
    argv = ARGV.get()
    return None if argv is None else shlex.join(["fashionmlp", *argv])


def one_seed_option(seeds: str | None, seed: int | None, overrides: list[str] | None, has_seed: bool = True) -> None:
    """--seeds LIST with --seed N or --set seed=N: one would be dropped (compare-optimizers dropped seed=N);
    `has_seed`: the command has --seed."""
    from fashionmlp.config import parse_override

    if seeds is not None and (seed is not None or any(parse_override(text)[0] == ["seed"] for text in overrides or [])):
        raise UserError(f"give {'--seed N (or --set seed=N)' if has_seed else '--set seed=N'} or --seeds LIST, "
                        "not both")


def csv_list(text: str | None, option: str, kind=str) -> list | None:
    """A comma-separated option value as a list of `kind` (int: whole numbers as written, e.g. 0,1,2), or None
    when the option was not given; an empty item or one listed twice is a mistake, not something to guess at."""
    if text is None:
        return None
    if not text.strip():
        raise UserError(f"{option} {text!r}: the list is empty")
    example = f"; expected e.g. {option} 0,1,2" if kind is int else ""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise UserError(f"{option} {text!r}: an empty item (two commas together, or one at an end){example}")
    wrong = next((t for t in items if not re.fullmatch(r"-?[0-9]+", t)), None) if kind is int else None
    if wrong is not None:
        raise UserError(f"{option} {text!r}: {wrong!r} is not a whole number{example}")
    values, seen = [kind(t) for t in items], set()
    for value in values:  # a set: --seeds with thousands of items stays quick
        if value in seen:
            raise UserError(f"{option} {text!r}: {value} is listed more than once; give each once")
        seen.add(value)
    return values


def parse_number(text: str, option: str, kind: type = float) -> float:
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
