"""Tools around training: `lr-find` (the learning-rate range test), `inspect` (pictures of a trained model) and
`manual check|train` (backpropagation in NumPy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fashionmlp.cli.common import (
    RUNS,
    Checkpoint,
    DataDir,
    Device,
    Epochs,
    Overrides,
    RunDir,
    RunsDir,
    app,
    command_line,
    config_option,
    err,
    graceful_stop,
    manual_app,
    note,
    parse_number,
    path_text,
    stop_came_late,
    user_errors,
)
from fashionmlp.cli.show import manual_epoch_line
from fashionmlp.errors import UserError


@app.command("lr-find")
@user_errors
def lr_find(
    config: Annotated[Path | None, config_option("YAML experiment config, e.g. configs/mlp_sgd.yaml.")] = None,
    set_: Overrides = None,
    start: Annotated[str, typer.Option("--start", metavar="LR", help="First learning rate, > 0.")] = "1e-6",
    end: Annotated[str, typer.Option("--end", metavar="LR", help="Last learning rate, > --start.")] = "10",
    steps: Annotated[str, typer.Option("--steps", metavar="N", help=(
        "Batches, one learning rate each, growing exponentially from --start to --end; 1 to 10000."))] = "200",
    runs_dir: RunsDir = None,
    data_dir: DataDir = None,
) -> None:
    """Learning-rate range test: train with an exponentially growing lr until the loss blows up; prints the
    suggested lr and the folder with lr_find.png and lr_find.csv (no checkpoint is kept). Exit 0 done, 2 bad
    input, 130 interrupted (what was measured is written)."""
    from fashionmlp.config import load_config
    from fashionmlp.lrfind import check_options, run_lr_find

    start_lr, end_lr = parse_number(start, "--start"), parse_number(end, "--end")
    n = parse_number(steps, "--steps", int)
    check_options(start_lr, end_lr, n)
    if config is None:
        raise UserError("--config is required (e.g. --config configs/mlp_sgd.yaml)")
    cfg = load_config(config, set_ or [])
    with graceful_stop("the range test's folder is left unfinished") as stop:
        result = run_lr_find(cfg, start=start_lr, end=end_lr, steps=n, runs_dir=runs_dir or RUNS, data_dir=data_dir,
                             command=command_line(), echo=err, stop=stop)
    typer.echo(result.message)
    stop_came_late(result.test.stop != "interrupted")
    typer.echo(str(result.out_dir))
    if result.test.stop == "interrupted":
        raise typer.Exit(130)


@app.command("inspect")
@user_errors
def inspect_(run_dir: RunDir, checkpoint: Checkpoint = None, data_dir: DataDir = None, device: Device = None,
             out: Annotated[Path | None, typer.Option("--out", metavar="DIR", parser=path_text, help=(
                 "Folder for the pictures and the TensorBoard log (default: RUN_DIR/inspect; give one for a run "
                 "you cannot write to)."))] = None) -> None:
    """Pictures of a trained model in RUN_DIR/inspect/ (or --out DIR): first-layer weights, confident mistakes,
    per-class accuracy, calibration; and its TensorBoard log with the penultimate layer in the projector."""
    from fashionmlp.inspection import inspect_run

    try:
        report = inspect_run(run_dir, checkpoint=checkpoint, data_dir=data_dir, device=device, echo=err, out_dir=out)
    except KeyboardInterrupt:  # it exited 130 without a word
        err(f"interrupted: nothing new was put in {str(out or run_dir / 'inspect')!r}")
        raise typer.Exit(130) from None
    for message in report.notes:
        note(message)
    typer.echo(report.text)


@manual_app.command("check")
@user_errors
def manual_check(seed: Annotated[int, typer.Option("--seed", metavar="N", help=(
        "Seed of the random test inputs, 0 to 2**32-1."))] = 0) -> None:
    """Check every NumPy function and several networks against finite differences and torch.autograd.

    Exit 1 if any row exceeds 1e-7 (relative, vs finite differences) or 1e-10 (vs autograd).
    """
    from fashionmlp import status
    from fashionmlp.manual.check import format_table, run_checks

    if not 0 <= seed < 2**32:
        raise UserError(f"--seed {seed}: out of range; allowed: 0 to {2**32 - 1}")
    try:
        rows = run_checks(seed)
    except KeyboardInterrupt:  # it exited 130 without a word
        err("interrupted: the check suite did not finish (it takes a few seconds; nothing is saved)")
        raise typer.Exit(status.EXIT_CODES[status.INTERRUPTED]) from None
    typer.echo(format_table(rows))
    if not all(r.passed for r in rows):
        raise typer.Exit(1)


@manual_app.command("train")
@user_errors
def manual_train(
    config: Annotated[Path | None, config_option(
        "Config (default: the same as configs/manual_mlp.yaml: 784-100-100-10 ReLU, SGD lr 0.1).")] = None,
    epochs: Epochs = None,
    crosscheck: Annotated[bool, typer.Option("--crosscheck/--no-crosscheck", help=(
        "Step a torch float64 twin from the same weights at every step and report the largest difference of a "
        "step's loss and of the weights after it (relative to max(1, |value|)); above 1e-9 it fails, exit 1."))]
        = False,
    set_: Overrides = None,
    data_dir: DataDir = None,
) -> None:
    """Train the NumPy MLP with minibatch SGD on Fashion-MNIST, printing loss and accuracy per epoch.

    Exit 0 done, 1 the --crosscheck twin disagrees (a bug), 2 for a config it cannot run, 3 diverged, 130
    interrupted (nothing is saved).
    """
    from fashionmlp import status
    from fashionmlp.data import load_data
    from fashionmlp.manual.train import CROSSCHECK_TOL, blas_threads, describe, train_numpy
    from fashionmlp.run import recipe_notes

    cfg = _manual_config(config, set_ or [], epochs)
    worst_loss, worst_grads, worst_weights, last, training = 0.0, 0.0, 0.0, None, False
    try:
        data = load_data(cfg, data_dir)
        typer.echo(describe(cfg, data, crosscheck))
        for message in recipe_notes(cfg, len(data.train.labels)):  # as train says them (a 0-step warm-up, unused
            note(message)  # keys): manual train said nothing
        threads, why = blas_threads(cfg)
        if why:
            note(why)
        scheduled, training = cfg.optimizer.schedule != "constant" or cfg.optimizer.warmup > 0, True  # an lr column
        for e in train_numpy(cfg, data, crosscheck=crosscheck, threads=threads):
            if e.diverged_step is not None:
                err(f"diverged: the loss became non-finite at epoch {e.epoch}, step {e.diverged_step} "
                    f"(lr {e.lr:g}); try a lower learning rate, e.g. --set optimizer.lr={e.lr / 10:g}")
                raise typer.Exit(status.EXIT_CODES[status.DIVERGED])
            typer.echo(manual_epoch_line(e, cfg.train.epochs, scheduled, crosscheck))
            worst_loss = max(worst_loss, e.max_step_loss_diff or 0.0)
            worst_weights = max(worst_weights, e.max_param_diff or 0.0)
            worst_grads = max(worst_grads, e.max_grad_diff or 0.0)
            last = e
            if crosscheck and not all(v <= CROSSCHECK_TOL for v in (worst_loss, worst_grads, worst_weights)):
                _crosscheck_failed(worst_loss, worst_grads, worst_weights, e.epoch)
    except MemoryError:  # past the up-front estimate (other processes' memory, a ulimit, a container's limit)
        if not training:  # the data's arrays: not the width's doing
            raise
        raise UserError(f"model.hidden: {list(cfg.model.hidden)}: out of memory after {last.epoch if last else 0} "
                        f"epochs (manual train computes in float64 and saves nothing); use narrower layers") from None
    except KeyboardInterrupt:
        err(f"interrupted after {last.epoch if last else 0} of {cfg.train.epochs} epochs (manual train saves "
            "nothing)")
        raise typer.Exit(status.EXIT_CODES[status.INTERRUPTED]) from None
    typer.echo(f"final test accuracy {last.test_accuracy:.2%}")
    if crosscheck:
        typer.echo(f"crosscheck vs torch (float64, every step from equal weights, relative to max(1, |value|)): "
                   f"largest loss difference {worst_loss:.2e}, in the weights after a step {worst_weights:.2e}; "
                   f"in the gradients (relative to each tensor's largest) {worst_grads:.2e}")


def _manual_config(config: Path | None, overrides: list[str], epochs: int | None):
    """manual train's config: the file (or its defaults) with --set and --epochs, refused where the NumPy trainer
    cannot run it, before the config's own rules (which pointed at fixes it then refused)."""
    from fashionmlp.config import config_from_dict, shortcut_values
    from fashionmlp.config.files import apply_overrides, read_yaml
    from fashionmlp.manual.train import DEFAULTS, check_manual_config, check_manual_raw

    raw = read_yaml(config) if config is not None else DEFAULTS
    check_manual_raw(apply_overrides(raw, overrides))
    cfg = config_from_dict(raw, overrides, shortcut_values(epochs=epochs))
    check_manual_config(cfg)
    return cfg


def _crosscheck_failed(worst_loss: float, worst_grads: float, worst_weights: float, epoch: int) -> None:
    from fashionmlp.manual.train import CROSSCHECK_TOL

    err(f"crosscheck FAILED: a step of the NumPy MLP and of its torch float64 twin, from equal weights, differ by "
        f"{worst_loss:.2e} in the loss, {worst_grads:.2e} in a gradient and {worst_weights:.2e} in a weight "
        f"(relative) by epoch {epoch} (at most {CROSSCHECK_TOL:g} each): a bug in fashionmlp.manual or the twin, "
        "please report it")
    raise typer.Exit(1)
