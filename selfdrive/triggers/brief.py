"""The context brief: what an alert's diagnostic (READ_ONLY) runbooks saw, as text.

Rendered from the journal (the runs' steps: commands and their output, notes, logs)
with ``templates/brief/brief.md.j2``, so the brief is exactly what was recorded and
can be rendered again at any time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from selfdrive.journal.records import StepRecord
from selfdrive.journal.store import Journal
from selfdrive.sdk.errors import SelfdriveError

MAX_LINES = 40
MAX_CHARS = 4000


def _tail(text: str | None) -> str | None:
    if not text:
        return text
    text = text.rstrip("\n")
    lines = text.splitlines()
    cut = len(lines) > MAX_LINES
    text = "\n".join(lines[-MAX_LINES:])
    if len(text) > MAX_CHARS:
        text, cut = text[-MAX_CHARS:], True
    return ("… (earlier output cut)\n" if cut else "") + text


def _step(step: StepRecord) -> dict[str, Any]:
    data = step.as_json()
    data["stdout"], data["stderr"] = _tail(step.stdout), _tail(step.stderr)
    return data


def diagnostics(journal: Journal, alert: dict[str, Any]) -> list[dict[str, Any]]:
    """Each diagnostic run linked to ``alert`` (started by it, or the run a duplicate
    of it points to), with the steps that ran, or else the steps its plan saw."""
    out, seen = [], set()
    for claim in alert.get("claims", []):
        run_id = claim.get("run_id")
        if not claim.get("diagnostic") or not run_id or run_id in seen:
            continue
        seen.add(run_id)
        try:
            run = journal.runs.get(run_id)
        except SelfdriveError:
            continue
        steps = journal.runs.steps(run.id)
        live = [s for s in steps if not s.phase.startswith("plan:")]
        out.append({"run": run.as_json(), "planned_only": not live,
                    "steps": [_step(s) for s in (live or steps)]})
    return out


def render_brief(journal: Journal, alert_id: int, *, team: str = "") -> str | None:
    """The brief for ``alert_id``; None when no diagnostic runbook matched it."""
    import jinja2

    alert = journal.alerts.get(alert_id)
    if alert is None or not any(c.get("diagnostic") for c in alert.get("claims", [])):
        return None
    source = files("selfdrive").joinpath("templates", "brief",
                                         "brief.md.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,  # noqa: S701
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return str(env.from_string(source).render(
        alert=alert, diagnostics=diagnostics(journal, alert), team=team,
        rendered_at=datetime.now(UTC).isoformat(timespec="seconds")))
