"""Tables, JSON and live progress for a person at a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

STATUS_COLOURS = {
    "succeeded": "green", "planned": "cyan", "ok": "green", "pending_approval": "yellow",
    "approved": "yellow", "running": "blue", "failed": "red", "verification_failed": "red",
    "rolled_back": "yellow", "rollback_failed": "red", "precondition_failed": "yellow",
    "denied": "red", "expired": "red", "interrupted": "magenta", "timed_out": "red",
    "error": "red", "unknown": "magenta", "skipped": "white",
}


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def status(text: str) -> str:
    return click.style(text, fg=STATUS_COLOURS.get(text))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table; the last column may be long and is not padded."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            widths[i] = min(max(widths[i], len(click.unstyle(cell))), 48)
    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            if i == len(values) - 1:
                parts.append(value)
            else:
                pad = widths[i] - len(click.unstyle(value))
                parts.append(value + " " * max(pad, 0))
        return "  ".join(parts).rstrip()
    click.echo(click.style(line(list(headers)), bold=True))
    for row in cells:
        click.echo(line(row))


def echo_diff(diff: str | None, *, err: bool = False) -> None:
    """The diff an Ansible change would write (or wrote), under its step: an approver
    reads the content, not just the task's name."""
    for line in (diff or "").rstrip("\n").splitlines():
        colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
        click.echo(click.style(f"      {line}", fg=colour), err=err)


def short_time(iso: str | None) -> str:
    if not iso:
        return ""
    return iso.replace("T", " ")[:19]


class TerminalObserver:
    """Prints each step as it happens, to stderr so stdout stays for results, unless
    the steps are the result (a plan written to a file: ``stdout=True``)."""

    MARKS = {"ok": "✓", "planned": "·", "failed": "✗", "timed_out": "⏱", "error": "!",
             "started": "…"}

    def __init__(self, *, quiet: bool = False, stdout: bool = False) -> None:
        self.quiet = quiet
        self.err = not stdout

    def step(self, event: Any) -> None:
        if self.quiet or (event.status == "started" and event.kind == "command"):
            return
        mark = self.MARKS.get(event.status, "?")
        where = f" {event.target}:" if event.target else ""
        took = f" ({event.duration:.2f}s)" if event.duration is not None else ""
        suffix = ""
        if event.status == "planned":
            suffix = click.style("  [planned, not run]", fg="cyan")
        elif event.status not in ("ok", "planned") and event.detail:
            suffix = click.style(f"  — {event.detail.strip().splitlines()[-1][:200]}", fg="red")
        text = event.text if event.kind != "log" else click.style(event.text, italic=True)
        click.echo(f"  {status_mark(mark, event.status)} [{event.phase}]{where} {text}{took}"
                   f"{suffix}", err=self.err)

    def message(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=self.err)


def status_mark(mark: str, state: str) -> str:
    return click.style(mark, fg=STATUS_COLOURS.get(state))


def isatty() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
