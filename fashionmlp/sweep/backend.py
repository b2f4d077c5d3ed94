"""Optuna, imported in this one place: the rest of the sweep uses `optuna` from here, after the command has
called `require_optuna()` (Optuna is an extra: `pip install "fashionmlp[sweep]"`)."""

from __future__ import annotations

from fashionmlp.errors import UserError

try:
    import optuna
    from optuna.trial import TrialState
except ImportError:  # the sweep is an extra; everything else works without it
    optuna = None
    TrialState = None

INSTALL = 'pip install "fashionmlp[sweep]" (or: pip install optuna)'


def require_optuna():
    """The optuna module, or a UserError saying what to install (asked of the import system each time, so a
    module that disappeared or was never there is told apart from one loaded before)."""
    try:
        import optuna as module  # noqa: F401 - the same module as above, or the ImportError that says why not
    except ImportError:
        raise UserError(f"fashionmlp sweep needs Optuna, which is not installed: {INSTALL}") from None
    return module


def finished_states() -> tuple:
    """The states of a trial that counts towards the study's target."""
    return (TrialState.COMPLETE, TrialState.PRUNED)
