"""Incident reports of one run, and summaries of a window, rendered from the journal.

Everything comes from what the journal recorded, so a report can be rendered again
at any time and says nothing the journal does not. Parameters are shown as the
journal holds them (secrets already masked) and masked once more by name for every
parameter the runbook declares secret. Templates live in ``templates/report/``;
HTML is autoescaped and self-contained (inline style and SVG, no external resource).
Jinja2 is imported only when rendering.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from selfdrive.journal.records import StepRecord
from selfdrive.journal.store import Journal
from selfdrive.learning.queries import (
    FAILURES,
    ROLLBACKS,
    SUCCEEDED,
    count_if,
    format_seconds,
    marks,
    read,
    read_tuples,
    seconds_between,
)
from selfdrive.learning.stats import runbook_stats
from selfdrive.registry.load import Registry
from selfdrive.sdk.command import MASK
from selfdrive.sdk.errors import SelfdriveError, UsageError

if TYPE_CHECKING:
    import jinja2

    from selfdrive.learning.recommend import Recommendation

FORMATS = ("markdown", "html")
MAX_LINES = 20
MAX_CHARS = 2000
#: Event data worth showing in a timeline; anything else (parameters …) stays out.
EVENT_FIELDS = ("from", "mode", "plan_hash", "why", "cause", "reason", "approvers",
                "guardrails", "dead_owner")


# -- one run -------------------------------------------------------------------------


def trim(text: str | None) -> str | None:
    """The tail of a step's output: what explains an outcome is usually at the end."""
    if not text:
        return text
    lines = text.rstrip("\n").splitlines()
    cut = max(0, len(lines) - MAX_LINES)
    body = "\n".join(lines[-MAX_LINES:])
    if len(body) > MAX_CHARS:
        body, cut = body[-MAX_CHARS:], cut or 1
    return (f"… ({cut} earlier line(s) cut)\n" if cut else "") + body


def _step(step: StepRecord) -> dict[str, Any]:
    data = step.as_json()
    data["stdout"], data["stderr"] = trim(step.stdout), trim(step.stderr)
    data["took"] = format_seconds(step.duration) if step.duration is not None else None
    return data


def masked(params: dict[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    """Parameters as they may be shown: declared secrets masked whatever was stored."""
    return {k: (MASK if k in secret else v) for k, v in sorted(params.items())}


def run_report_data(journal: Journal, run_id: str, *,
                    registry: Registry | None = None) -> dict[str, Any]:
    """Everything an incident report of ``run_id`` shows, as plain data."""
    run = journal.runs.get(run_id)
    extra = read(journal, "SELECT dedup_key, verified, code_digest, runbook_file FROM runs "
                          "WHERE id = ?", (run.id,))[0]
    secret: frozenset[str] = frozenset()
    if registry is not None and run.runbook in registry.runbooks:
        secret = registry.runbooks[run.runbook].secret_params
    steps = journal.runs.steps(run.id)
    live = [_step(s) for s in steps if not s.phase.startswith("plan:")]
    plan = [_step(s) for s in steps if s.phase.startswith("plan:")]
    alerts = read(journal,
                  "SELECT DISTINCT a.id, a.received_at, a.source, a.name, a.status, a.labels, "
                  "a.annotations, a.fingerprint, c.outcome FROM alert_runs c "
                  "JOIN alerts a ON a.id = c.alert_id WHERE c.run_id = ? "
                  + ("OR c.dedup_key = ? " if extra["dedup_key"] else "") + "ORDER BY a.id",
                  [run.id, *([extra["dedup_key"]] if extra["dedup_key"] else [])])
    for alert in alerts:
        for key in ("labels", "annotations"):
            alert[key] = json.loads(alert[key]) if alert[key] else {}
    events = []
    cause = None
    for event in journal.events(run.id):
        detail = {k: event.data[k] for k in EVENT_FIELDS if k in event.data}
        if event.kind == "run.rolling_back":
            cause = event.data.get("cause")
        events.append({"at": event.at, "kind": event.kind, "actor": event.actor,
                       "detail": detail})
    resolve = None
    if alerts and run.status.value == "succeeded" and extra["verified"] == 1:
        resolve = seconds_between(alerts[0]["received_at"], run.finished_at)
    verified = extra["verified"]
    return {
        "run": {**run.as_json(), "params": masked(run.params, secret)},
        "duration": format_seconds(seconds_between(run.started_at, run.finished_at)),
        "code_digest": extra["code_digest"], "runbook_file": extra["runbook_file"],
        "firing": run.firing, "alerts": alerts,
        "decision": run.decision,
        "approvals": [a.as_json() for a in journal.approvals.of_run(run.id)],
        "plan_changes": [s for s in plan if s["planned"]],
        "plan_seen": [s for s in plan if not s["planned"]],
        "timeline": [s for s in live if s["phase"] not in ("verify", "rollback")],
        "verification": [s for s in live if s["phase"] == "verify"],
        "verified": None if verified is None else bool(verified),
        "rollback": [s for s in live if s["phase"] == "rollback"],
        "rollback_cause": cause,
        "events": events,
        "time_to_resolve": format_seconds(resolve) if resolve is not None else None,
    }


def render_run_report(journal: Journal, run_id: str, *, fmt: str = "markdown",
                      registry: Registry | None = None, team: str = "") -> str:
    """The incident report of one run, as Markdown or a self-contained HTML page."""
    data = run_report_data(journal, run_id, registry=registry)
    return _render("run", fmt, {**data, "team": team, "rendered_at": _now()})


# -- a window ------------------------------------------------------------------------


def _bucket(since: str | None, now: datetime, journal: Journal) -> tuple[str, str]:
    """How to group a window for its chart: by day, week or month (SQL, label)."""
    first = since
    if first is None:
        rows = read(journal, "SELECT MIN(created_at) AS first FROM runs")
        first = rows[0]["first"]
    span = (now - datetime.fromisoformat(first)).days if first else 0
    if span <= 62:
        return "substr(created_at, 1, 10)", "day"
    if span <= 550:
        return "strftime('%Y-W%W', created_at)", "week"
    return "substr(created_at, 1, 7)", "month"


def summary_data(journal: Journal, *, since: str | None, now: datetime,
                 recommendations: Sequence[Recommendation] = ()) -> dict[str, Any]:
    """What a summary of the window shows: totals, a chart series, records, incidents."""
    stats = runbook_stats(journal, since=since)
    where = " WHERE created_at >= ?" if since is not None else ""
    params = [since] if since is not None else []
    bucket, unit = _bucket(since, now, journal)
    series = [
        {"label": label, "succeeded": int(ok or 0), "failed": int(bad or 0),
         "not_run": int(other or 0)}
        for label, ok, bad, other in read_tuples(
            journal,
            f"SELECT {bucket} AS bucket, {count_if(SUCCEEDED)}, "
            f"{count_if(f'started_at IS NOT NULL AND status IN ({marks(FAILURES)})')}, "
            f"{count_if('started_at IS NULL')} FROM runs{where} GROUP BY bucket "
            f"ORDER BY bucket",
            [*FAILURES, *params])]
    # Newest first through the window index (+status keeps SQLite off the status index).
    bad = [*FAILURES]
    notable = read(journal,
                   f"SELECT id, runbook, status, verified, error, finished_at FROM runs "
                   f"WHERE +status IN ({marks(bad)}){' AND created_at >= ?' if since else ''} "
                   f"ORDER BY created_at DESC LIMIT 10", [*bad, *params])
    totals = {key: sum(getattr(s, key) for s in stats) for key in (
        "requests", "runs", "succeeded", "verified_successes", "verification_failures",
        "rollbacks", "failures", "planned", "denied", "expired", "waiting", "resolved")}
    resolves = [s for s in stats if s.median_resolve_seconds is not None]
    for row in notable:
        if row["status"] in ROLLBACKS and row["verified"] == 0:
            row["status"] = f"{row['status']} (verification failed)"
    return {
        "since": since, "until": now.astimezone(UTC).isoformat(timespec="seconds"),
        "unit": unit, "totals": totals,
        "stats": [s.as_json() | {"median": format_seconds(s.median_seconds),
                                 "p90": format_seconds(s.p90_seconds),
                                 "resolve": format_seconds(s.median_resolve_seconds)}
                  for s in sorted(stats, key=lambda s: (-s.runs, s.runbook))],
        "resolving": [{"runbook": s.runbook, "resolved": s.resolved,
                       "median": format_seconds(s.median_resolve_seconds)} for s in resolves],
        "series": series, "chart": chart(series), "bars": text_bars(series),
        "notable": notable,
        "recommendations": [r.as_json() for r in recommendations],
    }


def render_summary(journal: Journal, *, since: str | None, now: datetime,
                   fmt: str = "markdown", recommendations: Sequence[Recommendation] = (),
                   team: str = "") -> str:
    """A summary of the window (a weekly report with ``since`` 7 days back)."""
    data = summary_data(journal, since=since, now=now, recommendations=recommendations)
    return _render("summary", fmt, {**data, "team": team, "rendered_at": _now()})


def text_bars(series: Sequence[dict[str, Any]], width: int = 40) -> list[str]:
    """One line per bucket: █ succeeded, ▒ failed, · never ran, scaled to ``width``."""
    top = max((s["succeeded"] + s["failed"] + s["not_run"] for s in series), default=0)
    label_width = max((len(s["label"]) for s in series), default=0)
    lines = []
    for s in series:
        total = s["succeeded"] + s["failed"] + s["not_run"]
        cells = [round(s[k] * width / top) if top else 0
                 for k in ("succeeded", "failed", "not_run")]
        # A bucket with something in it shows at least one mark of it.
        cells = [max(c, 1) if s[k] else c
                 for c, k in zip(cells, ("succeeded", "failed", "not_run"), strict=True)]
        bar = "█" * cells[0] + "▒" * cells[1] + "·" * cells[2]
        lines.append(f"{s['label']:<{label_width}}  {bar:<{width + 3}} {total} "
                     f"({s['succeeded']} ok, {s['failed']} failed, {s['not_run']} not run)")
    return lines


def chart(series: Sequence[dict[str, Any]], *, width: int = 640,
          height: int = 180) -> dict[str, Any]:
    """Bar geometry for the inline SVG: stacked succeeded / failed / never ran."""
    top = max((s["succeeded"] + s["failed"] + s["not_run"] for s in series), default=0)
    n = max(len(series), 1)
    plot_h, base = height - 30, height - 20
    slot = (width - 40) / n
    bars = []
    for i, s in enumerate(series):
        x = 30 + i * slot + slot * 0.1
        y = float(base)
        rects = []
        for key in ("succeeded", "failed", "not_run"):
            h = s[key] * plot_h / top if top else 0.0
            if h:
                y -= h
                rects.append({"kind": key, "x": round(x, 1), "y": round(y, 1),
                              "w": round(slot * 0.8, 1), "h": round(h, 1)})
        step = max(1, n // 8)
        bars.append({"label": s["label"], "rects": rects, "show_label": i % step == 0,
                     "label_x": round(x + slot * 0.4, 1),
                     "title": (f"{s['label']}: {s['succeeded']} succeeded, {s['failed']} "
                               f"failed, {s['not_run']} not run")})
    return {"width": width, "height": height, "top": top, "base": base, "bars": bars}


# -- rendering -----------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _load(name: str) -> str:
    try:
        return files("selfdrive").joinpath("templates", "report", name).read_text(
            encoding="utf-8")
    except OSError as exc:
        raise SelfdriveError(f"report template {name} is missing: {exc}") from None


def _fence(text: str | None) -> str:
    """A Markdown code fence longer than any run of backticks inside ``text``."""
    runs = [len(m) for m in re.findall(r"`+", text or "")]
    return "`" * max(3, max(runs, default=0) + 1)


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell or line: no pipes, breaks or raw HTML."""
    text = "" if value is None else str(value)
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\r", " ").replace("\n", " "))


def _code(value: Any) -> str:
    """An inline Markdown code span around ``value`` (on one line, table-safe)."""
    text = ("" if value is None else str(value)).replace("\r", " ").replace("\n", " ")
    ticks = "`" * max(1, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text.replace('|', chr(92) + '|')}{pad}{ticks}"


def environment() -> jinja2.Environment:
    """Jinja2 for the report templates: HTML ones autoescaped, undefined names errors."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                            disabled_extensions=("md.j2",),
                                            default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    env.filters.update(fence=_fence, cell=_cell, code=_code, seconds=format_seconds,
                       when=lambda iso: (iso or "").replace("T", " ")[:19])
    return env


def _render(kind: str, fmt: str, context: dict[str, Any]) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    suffix = "md.j2" if fmt == "markdown" else "html.j2"
    return str(environment().get_template(f"{kind}.{suffix}").render(**context))
