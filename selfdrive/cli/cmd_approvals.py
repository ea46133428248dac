"""Commands for runs that wait for a human: approvals, approve, deny, resume; and audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from selfdrive.cli.cmd_runs import json_option, param_option
from selfdrive.cli.command import Command, Group
from selfdrive.cli.render import echo_diff, emit_json, short_time, status, table
from selfdrive.cli.session import parse_params, session

if TYPE_CHECKING:
    from selfdrive.journal.records import StepRecord


def _age(iso: str) -> str:
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _change_steps(run_id: str, plan_hash: str | None) -> list[StepRecord]:
    steps = session().journal.runs.steps(run_id)
    return [s for s in steps
            if s.planned and s.plan_hash == plan_hash and s.phase.startswith("plan:")]


def _changes(run_id: str, plan_hash: str | None) -> list[str]:
    return [f"{s.target}: {s.command}" for s in _change_steps(run_id, plan_hash)]


def _echo_plan(title: str, run_id: str, plan_hash: str | None) -> None:
    click.secho(f"{title} {(plan_hash or '')[:12]}:", bold=True, err=True)
    for step in _change_steps(run_id, plan_hash):
        click.echo(f"  {step.target}: {step.command}", err=True)
        if step.kind == "ansible-change":
            echo_diff(step.stdout, err=True)


@click.command(cls=Command)
@json_option
def approvals(as_json: bool) -> None:
    """List runs waiting for a human: plan summary, age, requester, risk, approvals so far."""
    from selfdrive.executor.approvals import pending

    rows = pending(session().executor(quiet=True))
    if as_json:
        emit_json([{**run.as_json(), "approvals": [a.as_json() for a in got],
                    "approvals_needed": needed, "changes": _changes(run.id, run.plan_hash)}
                   for run, got, needed in rows])
        return
    if not rows:
        click.echo("nothing waits for approval")
        return
    table(["RUN", "RUNBOOK", "RISK", "BY", "AGE", "APPROVALS", "STATUS", "PLAN"],
          [[run.id, run.runbook, run.risk, run.requested_by, _age(run.created_at),
            f"{len({a.actor for a in got})}/{needed}", status(run.status.value),
            f"{(run.plan_hash or '')[:12]} ({len(_changes(run.id, run.plan_hash))} change(s))"]
           for run, got, needed in rows])


@click.command(cls=Command)
@click.argument("run_id")
@click.option("--reason", default=None, help="Why you approve (recorded).")
def approve(run_id: str, reason: str | None) -> None:
    """Approve RUN_ID's current plan (bound to its hash); `resume` then runs it."""
    from selfdrive.executor.approvals import approve as do_approve

    s = session()
    result = do_approve(s.executor(quiet=True), run_id, actor=s.actor, os_user=s.os_user,
                        reason=reason)
    run = result.run
    click.echo(f"approved plan {(run.plan_hash or '')[:12]} of run {run.id} as {s.actor} "
               f"({result.counted} of {result.needed})")
    if result.approved:
        click.echo(f"run {run.id} is approved until {short_time(run.expires_at)} UTC; "
                   f"`selfdrive resume {run.id}` runs it")


@click.command(cls=Command)
@click.argument("run_id")
@click.option("--reason", required=True, help="Why you deny (recorded and notified).")
def deny(run_id: str, reason: str) -> None:
    """Deny RUN_ID: it ends as denied and nothing of it runs."""
    from selfdrive.executor.approvals import deny as do_deny

    s = session()
    run = do_deny(s.executor(quiet=True), run_id, actor=s.actor, os_user=s.os_user,
                  reason=reason)
    click.echo(f"run {run.id}: {status(run.status.value)} by {s.actor}: {reason}")


@click.command(cls=Command)
@click.argument("run_id")
@param_option
@json_option
def resume(run_id: str, params: tuple[str, ...], as_json: bool) -> None:
    """Run approved RUN_ID after checking its approvals and recomputing its plan.

    A changed plan or an approver who no longer counts sends it back to pending
    (exit 3). Secret parameters are never stored: give them again with -p.
    """
    from selfdrive.cli.cmd_runs import _outcome_json, _print_outcome
    from selfdrive.executor.approvals import resume as do_resume

    s = session()
    executor = s.executor(quiet=as_json)
    before = s.journal.runs.get(run_id)
    result = do_resume(executor, run_id, actor=s.actor, secrets=parse_params(params))
    if as_json:
        emit_json(_outcome_json(result))
    else:
        if result.run.plan_hash != before.plan_hash:
            _echo_plan("approved plan", before.id, before.plan_hash)
            _echo_plan("plan now", before.id, result.run.plan_hash)
        _print_outcome(result)
    raise SystemExit(result.exit_code)


@click.group(cls=Group)
def audit() -> None:
    """Prove the journal's event chain untouched."""


@audit.command("verify")
@click.option("--head", "expect_head", metavar="DIGEST",
              help="A digest printed earlier by `audit head`: also catch truncation.")
@json_option
def audit_verify(expect_head: str | None, as_json: bool) -> None:
    """Recompute every link of the event chain and check the runs and approvals rows
    against it; exit 1 at the first broken link or any row the chain does not back."""
    from selfdrive.journal.audit import verify

    report = verify(session().journal, expect_head=expect_head)
    if as_json:
        emit_json({"ok": report.ok, "checked": report.checked, "head": report.head,
                   "head_id": report.head_id, "broken": report.broken,
                   "disagreements": [{"table": d.table, "row": d.row, "run_id": d.run_id,
                                      "what": d.what} for d in report.disagreements]})
    elif report.ok:
        click.echo(f"ok: {report.checked} event(s), chain intact, head {report.head}; "
                   f"{report.runs} run(s) and {report.approvals} approval(s) agree with it")
    else:
        if report.broken is not None:
            click.secho(f"BROKEN: {report.broken}", fg="red")
            click.echo(f"{report.checked} event(s) verified before it")
        else:
            click.echo(f"{report.checked} event(s), chain intact, head {report.head}")
        for d in report.disagreements:
            click.secho(f"DISAGREES: {d}", fg="red")
    if not report.ok:
        raise SystemExit(1)


@audit.command("head")
@json_option
def audit_head(as_json: bool) -> None:
    """Print the chain's head digest, to anchor outside the journal."""
    from selfdrive.journal.audit import head

    event_id, digest = head(session().journal)
    if as_json:
        emit_json({"head_id": event_id, "head": digest})
    else:
        click.echo(f"{digest}  (event {event_id})")
