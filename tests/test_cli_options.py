"""Every option of every command has the name it is documented under, whatever typer version builds it."""

from __future__ import annotations

import typing

import pytest
import typer
from typer.models import ArgumentInfo, OptionInfo

from fashionmlp.cli import app

from helpers import cli


def _commands(group: typer.Typer, prefix: str = ""):
    for command in group.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        yield f"{prefix}{name}", command.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, f"{prefix}{sub.name} ")


COMMANDS = dict(_commands(app))


def _declared(callback) -> dict[str, object]:
    """parameter name -> the typer OptionInfo/ArgumentInfo it was declared with."""
    hints = typing.get_type_hints(callback, include_extras=True)
    found = {}
    for name, hint in hints.items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, (OptionInfo, ArgumentInfo)):
                found[name] = meta
    return found


def test_every_command_is_found():
    assert {"train", "evaluate", "predict", "data", "compare-optimizers", "lr-find", "inspect", "sweep",
            "manual check", "manual train"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_named_explicitly(command):
    """typer 0.27 names an option without declarations from its metavar (--DEVICE): name each one."""
    for name, info in _declared(COMMANDS[command]).items():
        if isinstance(info, ArgumentInfo):
            continue
        # In Annotated form typer reads a first positional string as a declaration (and may have moved it there).
        given = ([info.default] if isinstance(info.default, str) else []) + list(info.param_decls or ())
        decls = [d for d in given if d.startswith("--")]
        assert decls, f"{command}: option {name!r} has no explicit --name"
        expected = "--" + name.rstrip("_").replace("_", "-")
        if name != "set_":
            assert decls[0].split("/")[0] == expected, f"{command}: {name!r} is declared as {decls[0]}"


@pytest.mark.parametrize("command,options", [
    ("train", ["--device", "--name", "--seed", "--epochs", "--runs-dir", "--data-dir", "--resume", "--config"]),
    ("compare-optimizers", ["--device", "--seeds", "--model", "--optimizers"]),
    ("evaluate", ["--device", "--checkpoint", "--data-dir"]),
])
def test_help_lists_the_options_by_their_names(command, options):
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    for option in options:
        assert f"{option} " in result.stdout, (option, result.stdout)


@pytest.mark.parametrize(("args", "says"), [
    (["train", "--bogus"], "No such option: --bogus (see fashionmlp train --help)"),
    (["sweep", "--config", "x.yaml", "--population", "abc"], "'--population'"),
    (["manual", "train", "--bogus"], "(see fashionmlp manual train --help)"),
    (["trian"], "No such command 'trian'"),
    (["--bogus", "train"], "No such option: --bogus"),
])
def test_a_usage_error_is_one_error_line_and_exit_2(args, says):
    """Mistakes click finds before a command runs read like every other: one `error:` line, exit code 2."""
    result = cli(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr


def test_a_group_given_nothing_prints_its_help_not_an_error():
    result = cli("manual")
    assert result.output.lstrip().startswith("Usage: root manual") and "error:" not in result.output  # root: the test runner's program name


def test_recorded_command_lines_show_no_database_password():
    """summary.json's command travels with a run folder: a sweep's --storage URL put the password in every
    trial's (the terminal and the sweep's own files showed ***). Masked as it is written, on the quoted line."""
    from fashionmlp.cli.common import ARGV, command_line
    from fashionmlp.tracking import without_passwords

    token = ARGV.set(["sweep", "--storage", "postgresql://sweeper:s3cret@127.0.0.1:5432/db",
                      "--storage=postgresql+psycopg://u:p%40ss@h/db", "--storage", "postgresql://u@h/db?password=pw&x=1",
                      "--set", "name=a:b@c", "--storage", "sqlite:///sweep.db",
                      "--storage", "postgresql://slash:pa/ss0rd@127.0.0.1:55432/sl1",  # a "/" in it was let through
                      "--storage", "postgresql://u:un@encoded@h:5432/db", "--storage", "postgresql://h:5432/db"])
    try:
        line = without_passwords(command_line())
    finally:
        ARGV.reset(token)
    assert line == ("fashionmlp sweep --storage postgresql://sweeper:***@127.0.0.1:5432/db "
                    "--storage=postgresql+psycopg://u:***@h/db --storage 'postgresql://u@h/db?password=***&x=1' "
                    "--set name=a:b@c --storage sqlite:///sweep.db --storage postgresql://slash:***@127.0.0.1:55432/sl1 "
                    "--storage postgresql://u:***@h:5432/db --storage postgresql://h:5432/db")


def test_a_run_given_a_command_with_a_password_records_it_masked(tmp_path, tiny_data):
    """Masked where it is written too: a caller of train() or run_sweep() from Python passes its own command."""
    from fashionmlp.config import config_from_dict
    from fashionmlp.run import train

    from helpers import summary, tiny_config

    run = train(config_from_dict(tiny_config(tiny_data, train={"epochs": 1})), runs_dir=tmp_path,
                command="fashionmlp sweep --storage postgresql://u:s3cret@h/db").run_dir
    assert summary(run)["command"] == "fashionmlp sweep --storage postgresql://u:***@h/db"


def test_the_sweeps_storage_label_hides_a_password_in_the_query_too():
    pytest.importorskip("optuna")
    from fashionmlp.sweep.storage import _storage_label

    assert _storage_label("postgresql://u:pw@h/db?password=x&sslmode=require") == \
        "postgresql://u:***@h/db?password=***&sslmode=require"  # SQLAlchemy masks the first alone
