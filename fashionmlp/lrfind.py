"""The learning-rate range test (Smith, 2015; fastai's `lr_find`, Lightning's `Tuner.lr_find`).

From the config's initial weights, train for up to `steps` batches while the learning rate grows
exponentially from `start` to `end`, and record the loss of every step. The loss first stays flat (lr too
small to move), then falls (useful lr), then blows up (lr too large). The test stops once the smoothed loss
exceeds 4x its minimum or a loss is non-finite. Nothing is checkpointed: the weights are thrown away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashionmlp.config import RunConfig
from fashionmlp.data import TensorSplit, augmented, epoch_order, fast_batches, images_per_epoch
from fashionmlp.device import dtype_of
from fashionmlp.distill import Teacher, cached_logits, distill_of, with_teacher
from fashionmlp.engine import PLAIN, Recipe, train_step
from fashionmlp.errors import StoppedBeforeStart, UserError
from fashionmlp.optim import build_optimizer, set_lr
from fashionmlp.plots.lrfind import lr_find_figure
from fashionmlp.progress import StopRequest
from fashionmlp.session import prepare
from fashionmlp.tracking import (
    create_run_dir,
    save_figure,
    versions,
    without_passwords,
    write_config,
    write_csv,
    write_json,
)

LR_LIMITS = (1e-12, 1e12)  # --start and --end: far beyond any useful lr, and a log axis that matplotlib can draw
MAX_STEPS = 10_000  # ~21 epochs of the full training set at batch 128: far more than a range test needs
BLOW_UP = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum (fastai's and Lightning's rule)
SMOOTHING_SPAN = 20  # the smoothed loss averages over ~1/20 of the steps (see smoothing_beta)
FELL = 0.9  # a suggestion needs the smoothed loss to have fallen to 90% of its first value somewhere
SKIP_START = 10  # the first steps of the smoothed curve are too few averages to take a slope from
MIN_STEPS = 20  # fewer steps than this cannot show a fall and a rise of the smoothed loss: no suggestion
CSV_COLUMNS = ["step", "lr", "loss", "smoothed_loss"]


def check_options(start: float, end: float, steps: int) -> None:
    """Every range the command accepts can run; anything else is one line, before any folder exists."""
    for option, value in (("--start", start), ("--end", end)):
        if not math.isfinite(value):
            raise UserError(f"{option} {value!r}: not a finite number")
        if value <= 0:
            raise UserError(f"{option} {value!r}: a learning rate must be > 0")
        if not LR_LIMITS[0] <= value <= LR_LIMITS[1]:
            raise UserError(f"{option} {value:g}: out of range; allowed: {LR_LIMITS[0]:g} to {LR_LIMITS[1]:g}")
    if end <= start:
        raise UserError(f"--end {end:g} must be larger than --start {start:g}")
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps {steps}: out of range; allowed: 1 to {MAX_STEPS}")
    if steps > 1 and not (np.diff(lr_schedule(start, end, steps)) > 0).all():  # numpy's warnings and a suggestion
        # from a slope over equal lrs: --start 0.1 --end 0.10000000000000002
        raise UserError(f"--start {start!r} and --end {end!r} are too close for {steps} different learning rates; "
                        "a range test spans decades, e.g. --start 1e-6 --end 10")


def smoothing_beta(steps: int) -> float:
    """Decay of the loss's exponential moving average: a time constant of steps/20 steps (0.9 for 200).

    fastai and Lightning use a fixed 0.98: a 50-step time constant, which over the default 200 steps across
    seven decades is 1.7 decades of lr. Measured on the real MLP with Adam, that curve's minimum sat at lr 0.06,
    where the per-step loss was already blowing up. Tying the span to the steps keeps the smoothing the same
    width in log(lr) whatever --steps is.
    """
    return max(0.0, 1.0 - SMOOTHING_SPAN / steps)


def lr_schedule(start: float, end: float, steps: int) -> np.ndarray:
    """`steps` learning rates from `start` to `end`, evenly spaced on a log scale (computed in logs, so
    tiny starts such as 1e-300 do not overflow end/start)."""
    if steps == 1:
        return np.array([start])
    lrs = np.exp(np.linspace(math.log(start), math.log(end), steps))
    lrs[0], lrs[-1] = start, end  # exp(log(x)) can miss x by a rounding: --start 1e-6 trained at 1.0000000000000004e-06
    return lrs


@dataclass(frozen=True)
class RangeTest:
    """What a range test measured; `stop` says why it ended: end | blew_up | non_finite | interrupted."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop: str
    beta: float  # decay of the smoothing's moving average
    planned: int = 0  # the steps asked for (the test may stop before)

    @property
    def min_lr(self) -> float | None:
        """The learning rate at the smoothed loss's minimum (None if no step had a finite loss)."""
        finite = [i for i, v in enumerate(self.smoothed) if math.isfinite(v)]
        return self.lrs[min(finite, key=lambda i: self.smoothed[i])] if finite else None

    @property
    def fell(self) -> bool:
        """Did the smoothed loss fall to at most FELL of its first value? If not, no lr in the range trained."""
        finite = [v for v in self.smoothed if math.isfinite(v)]
        return bool(finite) and min(finite) <= FELL * finite[0]

    @property
    def steepest_lr(self) -> float | None:
        """The learning rate where the smoothed loss falls fastest per decade of lr, before its minimum (None
        where it never fell: the steepest point of a flat, noisy curve means nothing)."""
        return steepest_descent(self.lrs, self.smoothed) if self.fell else None

    @property
    def no_suggestion(self) -> str | None:
        """Why the test is no ground for a suggestion (too few steps, no fall, a minimum at the end of the range),
        or None when steepest_lr can be suggested."""
        steps, last = len(self.lrs), (self.lrs[-1] if self.lrs else math.nan)
        if self.stop == "interrupted":
            return (f"interrupted after {steps} of {self.planned} steps (lr {last:.3g}): the range was not covered; "
                    "run the test again for a suggestion")
        if self.planned < MIN_STEPS:
            return (f"{self.planned} step(s) are too few to judge (a fall and a rise of the loss need at least "
                    f"{MIN_STEPS}); use more --steps (the default is 200)")
        if self.stop != "end" and steps <= SKIP_START:
            return (f"the loss {'blew up' if self.stop == 'blew_up' else 'became non-finite'} after {steps} "
                    f"step(s), at lr {last:.3g}: too soon to judge; use a smaller --start")
        if not self.fell:
            fix = "try a larger --end" if self.stop == "end" else "try a smaller --start"
            return (f"the smoothed loss never fell below {FELL:.0%} of its first value between lr "
                    f"{self.lrs[0]:.3g} and {last:.3g}; {fix}")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if self.stop == "end" and finite and finite.index(min(finite)) == len(finite) - 1:
            return (f"the smoothed loss was still falling at the end of the range (lr {last:.3g}): its minimum "
                    "lies beyond --end; try a larger --end")
        return None if self.steepest_lr is not None else "the smoothed loss has no slope to judge"

    @property
    def suggested_lr(self) -> float | None:
        return None if self.no_suggestion else self.steepest_lr


def steepest_descent(lrs: list[float], smoothed: list[float], skip_start: int = SKIP_START) -> float | None:
    """argmin of d(smoothed loss)/d(log lr) from the first steps up to (not at) the minimum; None if too short.
    Central differences wherever a neighbour exists on both sides: with the window cut at the minimum, its last
    point took a one-sided difference and was credited with the fall into it, so the suggestion could be the
    minimum itself, a step before the loss blew up."""
    loss = np.asarray(smoothed, dtype=np.float64)
    finite = np.isfinite(loss)
    if not finite.any():
        return None
    lowest = int(np.argmin(np.where(finite, loss, np.inf)))
    begin = min(skip_start, max(lowest - 2, 0))  # keep at least 3 points where the run is short
    if lowest - begin < 1:
        return None
    stop = lowest + 2 if lowest + 1 < len(loss) and finite[lowest + 1] else lowest + 1
    slope = np.gradient(loss[:stop], np.log10(np.asarray(lrs[:stop], dtype=np.float64)))
    return float(lrs[begin + int(np.argmin(slope[begin:lowest]))])


def range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batches: Iterator[tuple[torch.Tensor, ...]], lrs: np.ndarray, recipe: Recipe = PLAIN, *,
               on_step: Callable[[int, float, float], None] | None = None,
               stop_request: StopRequest | None = None) -> RangeTest:
    """Train one batch per learning rate in `lrs` with engine.train_step (the recipe's autocast and label
    smoothing); no file I/O. `on_step(step, lr, smoothed loss)` is told of each step (for progress); a
    `stop_request` (Ctrl-C) ends the test after the step, keeping what it measured."""
    beta = smoothing_beta(len(lrs))
    model.train()
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, stop = 0.0, math.inf, "end"
    for step, (lr, (x, y, *teacher)) in enumerate(zip(lrs.tolist(), batches), start=1):
        set_lr(optimizer, lr)
        value = float(train_step(model, optimizer, x, y, recipe, *teacher))  # a sync per step: the stop rule needs it
        average = beta * average + (1 - beta) * value
        smooth = average / (1 - beta ** step)  # bias correction: the average starts at 0
        losses.append(value)
        smoothed.append(smooth)
        if on_step is not None:
            on_step(step, lr, smooth)
        if not math.isfinite(value) or not math.isfinite(smooth):
            stop = "non_finite"
            break
        best = min(best, smooth)
        if smooth > BLOW_UP * best:
            stop = "blew_up"
            break
        if step < len(lrs) and stop_request is not None and stop_request.requested:  # after the last: complete
            stop = "interrupted"
            break
    return RangeTest(lrs[:len(losses)].tolist(), losses, smoothed, stop, beta, len(lrs))


def endless_batches(split: TensorSplit, cfg: RunConfig, generator: torch.Generator, teacher: Teacher | None = None
                    ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Training batches as `train` makes them (its order, augmentation and lone-image rule, the teacher's logits
    when distilling), epoch after epoch, for as long as the range test asks (the fast loader's batches; the
    torchvision loader yields the same)."""
    used = images_per_epoch(len(split), cfg.train.batch_size, cfg.model.batchnorm)
    cached = cached_logits(cfg, teacher, split.x)
    while True:
        order = epoch_order(len(split), generator)[:used]
        batches = augmented(fast_batches(split, cfg.train.batch_size, order), cfg.data, generator)
        yield from (batches if teacher is None else with_teacher(batches, teacher, cached, order, cfg.train.batch_size))


def range_notes(cfg: RunConfig, n_train: int, steps: int) -> list[str]:
    """What the test does not do as `train` would: the config's schedule and warm-up are not used (it sets the lr
    itself), and a test longer than one pass over a small training set measures memorising."""
    notes = []
    unused = [*([f"schedule {cfg.optimizer.schedule}"] if cfg.optimizer.schedule != "constant" else []),
              *([f"warm-up {cfg.optimizer.warmup:g}"] if cfg.optimizer.warmup else [])]
    if unused:
        peak = " (optimizer.lr is that schedule's peak)" if cfg.optimizer.schedule != "constant" else ""
        notes.append(f"the range test sets the learning rate itself, so the config's {' and '.join(unused)} "
                     f"{'is' if len(unused) == 1 else 'are'} not used: its suggestion is for a constant lr{peak}")
    batch = min(cfg.train.batch_size, n_train)  # a batch larger than the data is the whole set
    passes = steps * batch / max(1, images_per_epoch(n_train, cfg.train.batch_size, cfg.model.batchnorm))
    if passes > 1:
        images = f"{n_train:,} training image{'s' * (n_train != 1)}"
        notes.append(f"the {steps} steps pass over the {images} {passes:.1f} times: a loss that "
                     "falls by memorising them flatters large learning rates; use more images or fewer --steps")
    return notes


@dataclass
class LRFindResult:
    out_dir: Path
    test: RangeTest
    summary: dict

    @property
    def message(self) -> str:
        """The one line for the terminal."""
        s = self.summary
        if s["suggested_lr"] is None:
            return f"no suggestion: {s['no_suggestion']}"
        return (f"suggested learning rate {s['suggested_lr']:.3g} (steepest descent of the smoothed loss; the "
                f"minimum/10 is {s['min_lr_div_10']:.3g}): --set optimizer.lr={s['suggested_lr']:.3g}")


def run_lr_find(cfg: RunConfig, *, start: float = 1e-6, end: float = 10.0, steps: int = 200,
                runs_dir: Path = Path("runs"), data_dir: str | Path | None = None,
                command: str | None = None, echo: Callable[[str], None] = lambda line: None,
                stop: StopRequest | None = None) -> LRFindResult:
    """Run the range test for `cfg` and write lr_find.png/.csv/.json and config.yaml into a new
    `<runs_dir>/lr-find-<name>-<timestamp>/` (the config has checked that the name is one folder name);
    returns the result. The folder holds no checkpoint; `command` is recorded in lr_find.json; `echo` gets the
    notes and a progress line every tenth of the steps; `stop` (Ctrl-C) ends the test early, its steps kept."""
    check_options(start, end, steps)
    session = prepare(cfg, data_dir=data_dir, runs_dir=runs_dir, evaluates=False)  # as train: same weights, batches
    cfg = session.cfg  # with distill.fingerprint, when a teacher teaches
    if stop is not None and stop.requested:  # while the data loaded: no folder yet
        raise StoppedBeforeStart("the range test")
    model, n_train = session.model, len(session.data.train.labels)
    from fashionmlp.teacher import teacher_note

    # not the note that the teacher may have seen the validation images: a range test reports no validation numbers
    leak = teacher_note(cfg, session.teacher) if session.teacher is not None else None
    notes = [*(n for n in session.notes if n != leak), *range_notes(cfg, n_train, steps)]  # e.g. fewer threads
    for note in notes:  # repeats only at the same count
        echo(f"note: {note}")
    out_dir = create_run_dir(runs_dir, f"lr-find-{cfg.run_name}")  # before the test: a folder that cannot be
    # made (a read-only runs folder os.access calls writable) is said at once, not after every step
    write_config(out_dir / "config.yaml", cfg.to_dict())  # and it is never left empty
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    batches = endless_batches(TensorSplit.from_split(session.data.train, session.device, dtype_of(cfg)), cfg,
                              torch.Generator().manual_seed(cfg.seed), session.teacher)
    every = max(1, steps // 10)

    def progress(step: int, lr: float, smooth: float) -> None:
        if step % every == 0 or step == steps:
            echo(f"lr-find: step {step}/{steps}  lr {lr:.3g}  smoothed loss {smooth:.4g}")

    recipe = Recipe(label_smoothing=cfg.train.label_smoothing,
                    autocast=torch.bfloat16 if cfg.train.precision == "bf16" else None, distill=distill_of(cfg))
    test = range_test(model, optimizer, batches, lr_schedule(start, end, steps), recipe, on_step=progress,
                      stop_request=stop)
    steepest, lowest = test.suggested_lr, test.min_lr
    summary = {
        "suggested_lr": steepest, "no_suggestion": test.no_suggestion, "min_lr": lowest,
        "min_lr_div_10": None if lowest is None else lowest / 10,
        "min_smoothed_loss": min((v for v in test.smoothed if math.isfinite(v)), default=None),
        "stop": test.stop, "steps_run": len(test.lrs), "last_lr": test.lrs[-1] if test.lrs else None,
        "start": start, "end": end, "steps": steps, "smoothing_beta": test.beta, "blow_up": BLOW_UP,
        "model": cfg.model.name, "optimizer": cfg.optimizer.name, "batch_size": cfg.train.batch_size,
        "seed": cfg.seed, "train_size": n_train, "threads": session.threads, "versions": versions(),
        "command": None if command is None else without_passwords(command), **({"notes": notes} if notes else {}),
    }
    write_csv(out_dir / "lr_find.csv", CSV_COLUMNS,
              [{"step": i, "lr": lr, "loss": loss, "smoothed_loss": smooth}  # floats written exactly (repr)
               for i, (lr, loss, smooth) in enumerate(zip(test.lrs, test.losses, test.smoothed), start=1)])
    write_json(out_dir / "lr_find.json", summary)
    title = (f"Learning-rate range test: {cfg.run_name} ({cfg.model.name}, {cfg.optimizer.name}, "
             f"batch {cfg.train.batch_size}, seed {cfg.seed})")
    config_lr = cfg.optimizer.lr if start <= cfg.optimizer.lr <= end else None  # marked when in the range
    distill = cfg.distill if cfg.distill.teacher is not None else None
    save_figure(lr_find_figure(test, steepest, lowest if steepest is not None else None, config_lr, title,
                               cfg.train.label_smoothing, BLOW_UP, distill, test.no_suggestion),
                out_dir / "lr_find.png", dpi=100)
    return LRFindResult(out_dir, test, summary)
