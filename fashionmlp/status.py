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
