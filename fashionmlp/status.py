"""How a run ends: the words written to summary.json (and shown in tables) and the exit codes of `train`."""

from __future__ import annotations

RUNNING = "running"  # written while the run works, so a killed run's summary says it never finished
COMPLETED = "completed"
INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: the last completed epoch is checkpointed, resumable
DIVERGED = "diverged"  # the training loss became non-finite
CRASHED = "crashed"  # a bug raised: recorded beside the run, then re-raised
KILLED = "killed"  # a sweep's worker died while training the run: its trial was failed and its values queued again
PRUNED = "pruned"  # stopped early by a sweep's pruner (the caller's StopRequest.reason): not resumed by it
FAILED_TO_LEARN = "failed to learn"  # completed, but the final accuracy is within a margin of chance (studies)

EXIT_CODES = {COMPLETED: 0, PRUNED: 0, DIVERGED: 3, INTERRUPTED: 130}


def diverged_where(diverged: dict) -> str:
    """Where a run's numbers stopped being finite, from summary.json's `diverged`."""
    if diverged.get("what") == "evaluation":  # every step's loss was finite; the steps' updates were not
        return (f"the model's outputs were non-finite after epoch {diverged['epoch']}, step {diverged['step']}, "
                "though every step's loss was finite")
    return f"the loss became non-finite at epoch {diverged['epoch']}, step {diverged['step']}"


def what_to_lower(summary: dict, diverged: dict) -> str:
    """Advice for a diverged run: a tenth of the configured lr (optimizer.lr is the schedule's peak: the diverged
    step's own lr, in a warm-up far below it, would suggest orders of magnitude too little), or a lower weight decay
    where lr x weight_decay passes the point past which the decay alone makes the weights grow."""
    what, setting = lower_setting(summary, diverged)
    return f"try a lower {what}, e.g. --set {setting}"


def lower_setting(summary: dict, diverged: dict) -> tuple[str, str]:
    """(what to lower, the KEY=VALUE to try) for what_to_lower, from a diverged run's summary."""
    lr = summary.get("lr") or diverged["lr"]
    decay = lr * (summary.get("weight_decay") or 0.0)
    limit = decay_limit(summary.get("optimizer"), summary.get("momentum") or 0.0)
    if limit is not None and decay > limit:
        return (f"weight decay (lr x weight_decay = {decay:g}: past {limit:.3g} the decay alone makes the weights "
                f"grow, flipping sign)", f"optimizer.weight_decay={0.1 / lr:g}")
    return "learning rate", f"optimizer.lr={lr / 10:g}"


def decay_limit(optimizer: str | None, momentum: float) -> float | None:
    """The lr x weight_decay past which the decay alone diverges: 2 for AdamW (w <- (1 - a) w) and plain SGD,
    2(1 + m) with heavy-ball momentum m, 2(1 + m)/(1 + 2m) with Nesterov's; none for Adam, whose coupled decay is
    divided by its own scale."""
    if optimizer == "adamw":
        return 2.0
    if optimizer == "sgd":
        return 2 * (1 + momentum)
    if optimizer == "nesterov":
        return 2 * (1 + momentum) / (1 + 2 * momentum)
    return None
