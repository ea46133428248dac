"""Commands that read what the journal teaches: stats, learn, report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from selfdrive.cli.cmd_runs import json_option
from selfdrive.cli.command import Command
from selfdrive.cli.render import emit_json, short_time, status, table
from selfdrive.cli.session import session

if TYPE_CHECKING:
    from selfdrive.learning.stats import RunbookStats

DEFAULT_WINDOW = "30d"
since_option = click.option(
    "--since", "since_text", default=DEFAULT_WINDOW, show_default=True, metavar="DURATION",
    help="Only runs requested this long ago or later (7d, 2w, 36h …; 'all' for all time).")


def _window(since_text: str) -> tuple[str | None, datetime]:
    from selfdrive.learning.queries import since_of

    now = datetime.now(UTC)
    return since_of(since_text, now), now


def _window_words(since: str | None, since_text: str) -> str:
    return f"since {short_time(since)} UTC ({since_text})" if since else "all time"


# -- stats -----------------------------------------------------------------------


def _stats_row(s: RunbookStats, label: str, fired_by: str) -> list[Any]:
    from selfdrive.learning.queries import format_seconds

    last = s.last_outcome or ""
    return [label, fired_by, s.runs, s.succeeded, s.verified_successes,
            s.verification_failures, s.rollbacks, s.failures,
            format_seconds(s.median_seconds), format_seconds(s.p90_seconds),
            format_seconds(s.median_resolve_seconds),
            status(last.split(" ")[0]) + last[len(last.split(" ")[0]):]]


@click.command(cls=Command)
@click.argument("name", required=False)
@since_option
@json_option
def stats(name: str | None, since_text: str, as_json: bool) -> None:
    """Track records from the journal: per runbook, and per runbook × alert that fired it.

    RUNS counts live runs (they started); OK succeeded; VERIFIED verified successes;
    VERIFY✗ verification failures; FAILED runs that failed, rolled back or were
    interrupted; MEDIAN and P90 their durations; RESOLVE the median time from an
    alert's arrival to a verified success of the run it started.
    """
    from selfdrive.learning.stats import empty_stats, runbook_stats

    since, _ = _window(since_text)
    records = runbook_stats(session().journal, since=since, runbook=name)
    if name is not None and not records:
        records = [empty_stats(name)]
    if as_json:
        emit_json({"since": since, "runbooks": [r.as_json() for r in records]})
        return
    click.echo(f"{len(records)} runbook(s) with runs {_window_words(since, since_text)}")
    if not records:
        return
    rows = []
    for r in records:
        rows.append(_stats_row(r, r.runbook, "(all)"))
        rows.extend(_stats_row(a, "", f"alert {a.alert}") for a in r.by_alert)
    table(["RUNBOOK", "FIRED BY", "RUNS", "OK", "VERIFIED", "VERIFY✗", "ROLLBACKS", "FAILED",
           "MEDIAN", "P90", "RESOLVE", "LAST"], rows)


# -- learn -----------------------------------------------------------------------


def _evidence_words(evidence: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in evidence.items() if v is not None)


@click.command(cls=Command)
@since_option
@click.option("--stale-after", default="30d", show_default=True, metavar="DURATION",
              help="A runbook not run for this long is stale.")
@click.option("--approvals", "approvals_granted", default=5, show_default=True,
              type=click.IntRange(1, 100000),
              help="Approvals granted (none denied) before suggesting less approval.")
@click.option("--slow-window", default=10, show_default=True, type=click.IntRange(1, 10000),
              help="Compare the median duration of the last N successful runs with the N "
                   "before.")
@json_option
def learn(since_text: str, stale_after: str, approvals_granted: int, slow_window: int,
          as_json: bool) -> None:
    """Recommendations from the journal: failing, demote, flaky, slow, promote, uncovered,
    stale.

    Each names a runbook or an alert, the numbers behind it and a suggestion. Nothing
    is changed: the track record already moves MEDIUM-and-above runbooks between
    approval and autonomy by itself.
    """
    from selfdrive.executor.approvals import sweep_expired
    from selfdrive.learning.recommend import Thresholds, recommend
    from selfdrive.sdk.errors import UsageError
    from selfdrive.sdk.vocabulary import parse_duration

    try:
        stale = parse_duration(stale_after)
    except ValueError as exc:
        raise UsageError(f"--stale-after: {exc}") from None
    s = session()
    s.warn_problems()
    sweep_expired(s.executor(quiet=True))
    since, now = _window(since_text)
    found = recommend(s.journal, s.registry, s.config, since=since, now=now,
                      thresholds=Thresholds(stale_after=stale,
                                            approvals_granted=approvals_granted,
                                            slow_window=slow_window))
    if as_json:
        emit_json({"since": since, "level": s.config.level.name,
                   "recommendations": [r.as_json() for r in found]})
        return
    words = _window_words(since, since_text)
    if not found:
        click.echo(f"no recommendation ({words}, team level {s.config.level.name})")
        return
    click.echo(f"{len(found)} recommendation(s) ({words}, team level {s.config.level.name}):")
    colours = {"failing": "red", "demote": "red", "flaky": "red", "slow": "yellow",
               "promote": "green", "uncovered": "yellow", "stale": "white"}
    for r in found:
        click.echo("")
        click.echo(click.style(f"{r.kind:<9}", fg=colours.get(r.kind), bold=True)
                   + f" {r.subject}: {r.finding}")
        click.echo(f"          evidence: {_evidence_words(dict(r.evidence))}")
        click.echo(f"          → {r.suggestion}")


# -- report ----------------------------------------------------------------------


@click.command(cls=Command)
@click.argument("run_id", required=False)
@click.option("--since", "since_text", default=None, metavar="DURATION",
              help="Summarise a window instead of one run (7d for a weekly report).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "html"]), default=None,
              help="Output format (default: html when -o names a .html file, else markdown).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report to FILE instead of stdout.")
def report(run_id: str | None, since_text: str | None, fmt: str | None,
           output: Path | None) -> None:
    """An incident report of RUN_ID, or with --since a summary of a window.

    The run report shows the trigger, the decision and its reasons, approvals (who,
    when, which plan), the timeline of steps with commands and trimmed output,
    verification, rollback and outcome. HTML pages are self-contained.
    """
    from selfdrive.executor.approvals import sweep_expired
    from selfdrive.learning.report import render_run_report, render_summary
    from selfdrive.sdk.errors import UsageError

    if (run_id is None) == (since_text is None):
        raise UsageError("give a RUN_ID for an incident report, or --since 7d for a summary "
                         "(not both)")
    if fmt is None:
        fmt = "html" if output is not None and output.suffix.lower() in (".html", ".htm") \
            else "markdown"
    s = session()
    sweep_expired(s.executor(quiet=True))
    if run_id is not None:
        text = render_run_report(s.journal, run_id, fmt=fmt, registry=s.registry,
                                 team=s.config.team)
    else:
        from selfdrive.learning.recommend import recommend

        assert since_text is not None
        since, now = _window(since_text)
        found = recommend(s.journal, s.registry, s.config, since=since, now=now)
        text = render_summary(s.journal, since=since, now=now, fmt=fmt,
                              recommendations=found, team=s.config.team)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-o {output}: {exc}") from None
    click.echo(f"wrote {output} ({fmt})", err=True)
