"""How the commands show their work: progress while a run trains, one line per epoch, the end of a run, and
the tables of a study and a sweep."""

from __future__ import annotations

import sys

import typer

from fashionmlp import status
from fashionmlp.cli.common import err
from fashionmlp.plots.common import loss_text, plural
from fashionmlp.progress import EpochResult, PopulationProgress, Progress
from fashionmlp.status import what_to_lower


def epoch_line(result: EpochResult, epochs: int, label: str = "") -> str:
    """One line per epoch of `train` (and of each run of a study)."""
    m = result.metrics
    val = f"  val acc {m['val_accuracy']:6.2%}" if "val_accuracy" in m else ""
    return (f"{label}epoch {result.epoch:>3}/{epochs}  train loss {loss_text(m['train_loss'])}  "
            f"test loss {loss_text(m['test_loss'])}  test acc {m['test_accuracy']:6.2%}{val}  "
            f"{result.samples_per_second:,.0f} samples/s  {m['seconds']:.1f}s")


class PlainProgress(Progress):
    """One plain line per epoch (CI logs, pipes)."""

    def __init__(self, label: str = ""):
        self.label = label

    def end_epoch(self, result: EpochResult, epochs: int) -> None:
        typer.echo(epoch_line(result, epochs, self.label))


class BarProgress(Progress):
    """A rich progress bar over the steps of each epoch, and the epoch's line above it."""

    def __init__(self, label: str = ""):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.label = label
        self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), transient=True)
        self.task = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("", total=steps)
        self.bar.reset(self.task, total=steps, description=f"{self.label}epoch {epoch}/{epochs}")

    def step(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    def end_epoch(self, result: EpochResult, epochs: int) -> None:
        self.bar.console.print(epoch_line(result, epochs, self.label), highlight=False)

    def close(self) -> None:
        self.bar.stop()


def _terminal() -> bool:
    return sys.stderr.isatty() and sys.stdout.isatty()


def progress(label: str = "") -> Progress:
    """A rich progress bar on a terminal, one plain line per epoch otherwise."""
    return BarProgress(label) if _terminal() else PlainProgress(label)


class PopulationLines(PopulationProgress):
    """A population's progress: each member's line after each epoch (and a bar over the steps on a terminal)."""

    def __init__(self):
        self.bar = BarProgress() if _terminal() else None

    def start_epoch(self, epoch: int, epochs: int, steps: int, members: int) -> None:
        if self.bar is not None:
            self.bar.label = f"{members} models: "
            self.bar.start_epoch(epoch, epochs, steps)

    def step(self, done: int) -> None:
        if self.bar is not None:
            self.bar.step(done)

    def end_epoch(self, results: list[tuple[str, EpochResult]], epochs: int) -> None:
        for label, result in results:
            self._say(epoch_line(result, epochs, label))

    def stopped_early(self, label: str, early: dict) -> None:
        self._say(f"{label.strip()}: {stopped_early_text(early)}; best weights restored from epoch "
                  f"{early['restored_epoch']} (checkpoints/best.pt)")

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.bar.console.print(line, highlight=False)
        else:
            typer.echo(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def study_table(result, title: str) -> None:
    """The study's table, and where its picture and summary are."""
    from fashionmlp.study import first_column, table_rows

    first = first_column(result.kind)
    header, cells = table_rows(result.rows, first)
    print_table(title, header, cells, left=(first, "status"), width=120, highlight_unless=status.COMPLETED)
    typer.echo(f"plot: {result.study_dir / 'comparison.png'}")
    typer.echo(f"table: {result.study_dir / 'summary.md'}")


def stopped_early_text(early: dict) -> str:
    """summary.json's early_stopping as `train` and a population's lines say it."""
    return (f"stopped early after epoch {early['stopped_after_epoch']} (no better validation accuracy in "
            f"{plural(early['patience'], 'epoch')})")


def report_run(result) -> None:
    """How a run ended, then its folder (the last line of stdout)."""
    s = result.summary
    for line in s.get("notes", []):
        err(f"note: {line}")
    if result.status == status.COMPLETED and "early_stopping" in s:
        early = s["early_stopping"]
        when = stopped_early_text(early) if early["stopped_after_epoch"] else plural(s["epochs"], "epoch")
        typer.echo(f"done: {when}; best weights restored from epoch {early['restored_epoch']} "
                   f"(checkpoints/best.pt): val accuracy {s['final']['val_accuracy']:.2%}, test accuracy "
                   f"{s['final']['test_accuracy']:.2%}, {s['seconds']:.1f}s")
    elif result.status == status.COMPLETED:
        typer.echo(f"done: test accuracy {s['final']['test_accuracy']:.2%} (best {s['best']['test_accuracy']:.2%} "
                   f"at epoch {s['best']['epoch']}), {s['seconds']:.1f}s")
    elif result.status == status.DIVERGED:
        d = s["diverged"]
        err(f"diverged: {status.diverged_where(d)} (lr {d['lr']:g} at that step); "
            f"checkpoints/last.pt keeps epoch {d['last_good_epoch']}; {what_to_lower(s, d)}")
    else:
        err(f"interrupted after epoch {s['epochs']}; resume with: {s['resume_command']}")
    typer.echo(str(result.run_dir))


def print_table(title: str, header: list[str], cells: list[list[str]], left: tuple[str, ...], width: int,
                highlight_unless: str | None = None) -> None:
    """A rich table on stdout: columns named in `left` flush left, the rest right; with `highlight_unless`, rows
    whose last cell is not that word in bold red."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        # fold, never cut: a narrow terminal (or a file) got '16599388945…' for 165993889459.1 and 'nesterov_mo…'
        table.add_column(h, justify="left" if h in left else "right", overflow="fold")
    for row in cells:
        style = None if highlight_unless is None or row[-1] == highlight_unless else "bold red"
        table.add_row(*row, style=style)
    Console(width=max(width, Console().width)).print(table)


def manual_epoch_line(e, epochs: int, scheduled: bool, crosscheck: bool) -> str:
    """One line per epoch of `manual train`."""
    extra = (f"  |Δloss| max {e.max_step_loss_diff:.1e}  |Δ∇| max {e.max_grad_diff:.1e}  |Δθ| max "
             f"{e.max_param_diff:.1e}" if crosscheck else "")
    val = f"  val loss {loss_text(e.val_loss)}  val acc {e.val_accuracy:6.2%}" if e.val_loss is not None else ""
    lr = f"  lr {e.lr:.3g}" if scheduled else ""
    return (f"epoch {e.epoch:>3}/{epochs}  train loss {loss_text(e.train_loss)}  test loss {loss_text(e.test_loss)}  "
            f"test acc {e.test_accuracy:6.2%}{val}{lr}  {e.seconds:.1f}s{extra}")
