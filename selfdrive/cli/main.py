"""The ``selfdrive`` command: a thin, lazy CLI over the library.

Subcommand modules are imported only when that subcommand runs, so ``--help`` and
``list`` start fast. Errors become exit codes here and nowhere else.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from selfdrive.cli.command import Command, Group

# name -> (module, function, one-line help shown by --help without importing the module)
_P, _R, _A = "selfdrive.cli.cmd_project", "selfdrive.cli.cmd_runs", "selfdrive.cli.cmd_approvals"
_S = "selfdrive.cli.cmd_sense"
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": (_P, "init", "Scaffold selfdrive.toml and a runbooks/ folder."),
    "list": (_P, "list_", "List the runbooks the registry finds."),
    "show": (_P, "show", "Show one runbook's spec, parameters and hooks."),
    "lint": (_P, "lint", "Check runbooks for load problems and risky gaps."),
    "plan": (_R, "plan", "Dry-run a runbook: read-only steps run, changes are listed."),
    "run": (_R, "run", "Run a runbook under policy (dry-run, approval or autonomous)."),
    "explain": (_R, "explain", "Say which mode policy would choose, and why."),
    "history": (_R, "history", "List recent runs from the journal."),
    "logs": (_R, "logs", "Show one run's steps, commands and output."),
    "halt": (_R, "halt", "Stop all autonomy (adds a reason); alone: why it is stopped."),
    "unhalt": (_R, "unhalt", "Turn the halt switch off, clearing every reason."),
    "approvals": (_A, "approvals", "List runs waiting for a human."),
    "approve": (_A, "approve", "Approve a pending run's plan."),
    "deny": (_A, "deny", "Deny a pending run."),
    "resume": (_A, "resume", "Run an approved run (its plan and approvers checked again)."),
    "audit": (_A, "audit", "Verify the journal's hash chain, or print its head."),
    "journal": ("selfdrive.cli.cmd_journal", "journal",
                "Copy the journal to another database (SQLite or PostgreSQL)."),
    "new": ("selfdrive.cli.cmd_author", "new", "Scaffold a runbook and its test (pytest-ready)."),
    "stats": ("selfdrive.cli.cmd_learn", "stats", "Track records per runbook and alert."),
    "learn": ("selfdrive.cli.cmd_learn", "learn", "Recommendations from the journal."),
    "report": ("selfdrive.cli.cmd_learn", "report", "Report a run, or a window (--since)."),
    "serve": (_S, "serve", "Receive alerts over HTTP and run the runbooks they fire."),
    "trigger": (_S, "trigger", "Feed one alert through the receiver's path, without HTTP."),
    "alerts": (_S, "alerts", "List received alerts; `alerts show ID` for one, with its brief."),
    "scheduler": (_S, "scheduler", "Run runbooks on their cron schedules (--once: what is due)."),
}


class LazyGroup(Group):
    """click's lazy-subcommand recipe, with help text that needs no import."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        # Built with cls=Command/Group, or it would lack --as and the text check.
        assert isinstance(command, Command | Group), f"{module}.{attr}"
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Path to selfdrive.toml (default: found walking up from here).")
@click.version_option(package_name="selfdrive", prog_name="selfdrive")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """selfdrive: runbook-as-code with bounded autonomy.

    Runbooks are Python functions; policy decides whether a run is planned only,
    approved by a human, or autonomous; every step goes to the journal.

    \b
    Exit codes: 0 done or planned, 1 failed, 2 usage or bad input (or a journal
    that cannot be written), 3 waiting for approval, 4 precondition unmet,
    5 verification failed.
    """
    ctx.ensure_object(dict)["config_path"] = config_path  # --as is there already, if given


def main(argv: list[str] | None = None) -> Any:
    """Entry point: map selfdrive's errors to exit codes and clean messages."""
    from selfdrive.cli.streams import guard_standard_streams

    guard_standard_streams()  # a closed pipe or terminal never changes what a run does
    try:
        return cli.main(args=argv, prog_name="selfdrive", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; a run in progress is marked interrupted on the next command",
                   err=True)
        sys.exit(130)
    except Exception as exc:
        from selfdrive.sdk.errors import SelfdriveError

        if isinstance(exc, SelfdriveError):
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        raise
