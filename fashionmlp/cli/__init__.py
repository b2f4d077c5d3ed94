"""The `fashionmlp` command: thin typer commands that parse options, call plain functions and report.

common.py: the apps, shared options, errors and Ctrl-C; show.py: progress, lines and tables; runs.py: train,
evaluate, predict, data; studies.py: compare-optimizers, sweep; tools.py: lr-find, inspect, manual.
"""

from __future__ import annotations

import sys

from fashionmlp.cli import runs, studies, tools  # noqa: F401 - each module registers its commands on `app`
from fashionmlp.cli.common import ARGV, app

__all__ = ["app", "main"]


def main() -> None:
    ARGV.set(sys.argv[1:])
    app(prog_name="fashionmlp")
