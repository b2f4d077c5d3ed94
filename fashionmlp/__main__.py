"""`fashionmlp` (the console script) and `python -m fashionmlp`: the command line, with a Ctrl-C during its
first seconds of imports (torch's, mostly) said in one line, exit 130, instead of Python's traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from fashionmlp.cli import main as run_command
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted while starting: nothing was done\n")
        raise SystemExit(130) from None
    run_command()


if __name__ == "__main__":
    main()
