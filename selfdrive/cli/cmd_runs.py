"""Commands about runs: plan, run, explain, history, logs, halt, unhalt."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from selfdrive.cli.command import Command
from selfdrive.cli.render import (
    echo_diff,
    emit_json,
    isatty,
    short_time,
    status,
    stdout_is_terminal,
    table,
)
from selfdrive.cli.session import parse_params, session

if TYPE_CHECKING:
    from selfdrive.executor.engine import RunOutcome
    from selfdrive.executor.plan import Plan
    from selfdrive.journal.records import RunRecord
    from selfdrive.policy.decide import Decision, Halt

param_option = click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
                            help="A runbook parameter; repeat for more (a repeated key "
                                 "makes a list).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON on stdout.")


def _submit(name: str, params: tuple[str, ...], *, dry_run: bool, yes: bool,
            as_json: bool) -> None:
    from selfdrive.executor.engine import RunRequest

    s = session()
    values = parse_params(params)
    rb = s.registry.get(name)
    rb.validate_params(values)  # a bad parameter is reported before the journal is touched
    s.warn_problems()
    # A plan is the result: `selfdrive plan X > file` keeps what a terminal would show.
    plan_out = dry_run and not as_json and not stdout_is_terminal()
    executor = s.executor(quiet=as_json, stdout=plan_out)
    approver = None
    if yes:
        approver = _yes
    elif isatty() and not as_json:
        approver = _ask
    if not as_json:
        click.echo(f"{'planning' if dry_run else 'running'} {rb.name} "
                   f"({rb.risk.name} risk) as {s.actor}, team level {s.config.level.name}",
                   err=not plan_out)
    result = executor.submit(RunRequest(runbook=name, params=values, requested_by=s.actor,
                                        os_user=s.os_user, dry_run=dry_run), approver=approver)
    if yes and result.decision.mode.value == "dry-run" and not dry_run and not as_json:
        click.echo("--yes was not used: policy only plans this run, so there was nothing to "
                   "approve", err=True)
    if as_json:
        emit_json(_outcome_json(result))
    else:
        _print_outcome(result)
    raise SystemExit(result.exit_code)


def _yes(run: RunRecord, plan: Plan, decision: Decision) -> bool:
    click.echo(f"approved with --yes by {run.requested_by} (plan {plan.hash[:12]})", err=True)
    return True


def _ask(run: RunRecord, plan: Plan, decision: Decision) -> bool:
    click.echo("", err=True)
    click.secho("This run needs approval:", bold=True, err=True)
    for reason in decision.reasons:
        click.echo(f"  - {reason}", err=True)
    _print_plan(plan)
    from selfdrive.cli.streams import gone

    if gone(sys.stderr):  # no one saw the plan: no one can approve it (the run waits)
        raise click.Abort
    return click.confirm(f"Approve plan {plan.hash[:12]} and run it now?", default=False,
                         err=True)


def _print_plan(plan: Plan, *, err: bool = True) -> None:
    changes = plan.changes
    unknown = len(plan.unpredictable)
    click.secho(f"\nPlan {plan.hash[:12]} — {len(changes)} change(s) on "
                f"{', '.join(plan.targets) or 'no target'}"
                + (f", {unknown} of them unpredictable (check mode skipped the task)"
                   if unknown else "") + ":", bold=True, err=err)
    for step in changes:
        click.echo(f"  [{step.phase}] {step.target}: {step.command}", err=err)
        if step.kind == "ansible-change":
            echo_diff(step.text, err=err)
    for note in plan.notes:
        click.echo(f"  note: {note}", err=err)
    _print_reuse(plan, err=err)
    click.echo("", err=err)


def _print_reuse(plan: Plan, *, err: bool) -> None:
    """Which of the plan's reads a live run would take instead of running them again."""
    reads = [s for s in plan.steps if s.kind == "command" and s.readonly]
    if not reads:
        return
    reusable = set(plan.reusable)
    if not reusable:
        click.echo(f"  reads: {len(reads)}, each runs again in a live run", err=err)
        return
    window = plan.reads.window if plan.reads is not None else 0.0
    click.echo(f"  reads: {len(reusable)} of {len(reads)} taken from its plan by a live run "
               f"(when read within {window:g}s of planning, before any change on their "
               f"target), not run again:", err=err)
    for number, step in enumerate(plan.steps, start=1):
        if number in reusable:
            click.echo(f"    [{step.phase}] {step.target}: {step.command}", err=err)


def _print_outcome(result: RunOutcome) -> None:
    run = result.run
    if run.mode == "dry-run":  # the plan is what it produced: on stdout when that is a file
        _print_plan(result.plan, err=stdout_is_terminal())
    click.echo(f"run {run.id}: {status(run.status.value)}"
               + (f" — {result.message}" if result.message else ""))
    if run.status.value == "pending_approval":
        click.echo(f"  the run waits as pending_approval; see `selfdrive logs {run.id}`")


def _outcome_json(result: RunOutcome) -> dict[str, Any]:
    return {"run": result.run.as_json(),
            "decision": {"mode": result.decision.mode.value,
                         "reasons": list(result.decision.reasons),
                         "rule": result.decision.rule.value},
            "plan": result.plan.as_json(), "exit_code": result.exit_code,
            "message": result.message}


@click.command(cls=Command)
@click.argument("name")
@param_option
@json_option
def plan(name: str, params: tuple[str, ...], as_json: bool) -> None:
    """Dry-run NAME: read-only steps really run, every change is listed, nothing changes."""
    _submit(name, params, dry_run=True, yes=False, as_json=as_json)


@click.command(cls=Command)
@click.argument("name")
@param_option
@click.option("--yes", is_flag=True, help="Approve the plan without asking (you are the approver).")
@click.option("--dry-run", is_flag=True, help="Same as `selfdrive plan`.")
@json_option
def run(name: str, params: tuple[str, ...], yes: bool, dry_run: bool, as_json: bool) -> None:
    """Run NAME under policy: planned only, approved by you, or autonomous.

    When policy asks for approval and you are at a terminal, the plan is shown and you
    are asked; --yes answers for you; otherwise the run waits as pending_approval
    (exit 3).
    """
    _submit(name, params, dry_run=dry_run, yes=yes, as_json=as_json)


@click.command(cls=Command)
@click.argument("name")
@click.option("--alert", "alert_name", metavar="ALERT",
              help="Explain as if this alert fired the run (default: a manual request).")
@click.option("--domain", metavar="DOMAIN", help="The firing alert's domain, with --alert.")
@json_option
def explain(name: str, alert_name: str | None, domain: str | None, as_json: bool) -> None:
    """Say which mode policy would choose for NAME, every rule that shaped it, and the record."""
    from selfdrive.learning.records import track_record
    from selfdrive.policy.decide import Firing, Request, decide

    s = session()
    rb = s.registry.get(name)
    firing = None
    if alert_name:
        firing = Firing(kind="alert", name=alert_name,
                        own=any(t.name == alert_name for t in rb.triggers), domain=domain)
    executor = s.executor(quiet=True)
    record = track_record(s.journal, rb.name, s.config.policy.track_record)
    decision = decide(rb, Request(requested_by=s.actor, firing=firing), s.config, record,
                      datetime.now(UTC), situation=executor.situation(rb))
    if as_json:
        emit_json({"runbook": rb.name, "risk": rb.risk.name, "level": s.config.level.name,
                   "mode": decision.mode.value, "reasons": list(decision.reasons),
                   "rule": decision.rule.value,
                   "track_record": {"verified_successes": record.verified_successes,
                                    "recent": list(record.recent)}})
        return
    click.echo(f"{rb.name} ({rb.risk.name} risk, domain {rb.domain or '-'}) at level "
               f"{s.config.level.name} ({s.config.level.title}), "
               f"{'fired by alert ' + alert_name if alert_name else 'requested by hand'}:")
    click.secho(f"  mode: {decision.mode.value}", bold=True)
    for reason in decision.reasons:
        click.echo(f"  - {reason}")
    recent = ", ".join(record.recent) or "no runs yet"
    click.echo(f"  track record: {record.verified_successes} verified success(es); "
               f"latest: {recent}")


@click.command(cls=Command)
@click.argument("name", required=False)
@click.option("--status", "statuses", multiple=True, help="Only runs in this status (repeatable).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@json_option
def history(name: str | None, statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List recent runs, newest first (optionally of one runbook)."""
    from selfdrive.sdk.errors import UsageError
    from selfdrive.sdk.vocabulary import RunState

    for st in statuses:
        if st not in RunState.__members__.values():
            raise UsageError(f"--status {st!r}: not a run status; use one of "
                             f"{', '.join(s.value for s in RunState)}")
    from selfdrive.executor.approvals import sweep_expired

    s = session()
    sweep_expired(s.executor(quiet=True))  # a window that closed shows as expired, not pending
    runs = s.journal.runs.find(runbook=name, status=statuses, limit=limit)
    alert_ids = s.journal.alerts.run_alert_ids([r.id for r in runs])
    if as_json:
        emit_json([_run_json(r, alert_ids) for r in runs])
        return
    if not runs:
        click.echo("no runs yet")
        return
    table(["RUN", "RUNBOOK", "MODE", "STATUS", "BY", "STARTED", "FINISHED"],
          [[r.id, r.runbook, r.mode, status(r.status.value),
            f"alert #{alert_ids[r.id]}" if r.id in alert_ids else r.requested_by,
            short_time(r.started_at or r.created_at), short_time(r.finished_at)] for r in runs])


def _run_json(run: RunRecord, alert_ids: dict[str, int]) -> dict[str, Any]:
    """A run for --json, with ``alert_id``: the alert that started it (`alerts show`)."""
    return {**run.as_json(), "alert_id": alert_ids.get(run.id)}


@click.command(cls=Command)
@click.argument("run_id")
@json_option
def logs(run_id: str, as_json: bool) -> None:
    """Show RUN_ID's decision, steps, commands and output (secrets are never stored)."""
    from selfdrive.executor.approvals import sweep_expired

    s = session()
    sweep_expired(s.executor(quiet=True))
    journal = s.journal
    run = journal.runs.get(run_id)
    steps = journal.runs.steps(run.id)
    approvals = journal.approvals.of_run(run.id)
    alert_ids = journal.alerts.run_alert_ids([run.id])
    unbacked = [str(d) for d in journal.disagreements(run.id)]
    # Where the runbook's code failed: on its step, or on the run when it failed
    # while planning (no step of its own).
    run_traceback = next((e.data["traceback"] for e in reversed(journal.events(run.id))
                          if e.data.get("traceback")), None) if run.error else None
    if as_json:
        emit_json({"run": _run_json(run, alert_ids), "steps": [s.as_json() for s in steps],
                   "approvals": [a.as_json() for a in approvals],
                   "traceback": run_traceback, "disagreements": unbacked})
        return
    from selfdrive.learning.queries import format_seconds, seconds_between

    click.secho(f"run {run.id}: {run.runbook}", bold=True)
    for line in unbacked:  # a row changed outside selfdrive must not read as the truth
        click.secho(f"NOT IN THE AUDIT CHAIN: {line}", fg="red")
    click.echo(f"status {status(run.status.value)}, mode {run.mode}, requested by "
               f"{run.requested_by} (os user {run.os_user}) at {short_time(run.created_at)}"
               + (f", started by alert #{alert_ids[run.id]}" if run.id in alert_ids else ""))
    if run.started_at:
        took = (f", took {format_seconds(seconds_between(run.started_at, run.finished_at))}"
                if run.finished_at else "")
        click.echo(f"started {short_time(run.started_at)}"
                   + (f", finished {short_time(run.finished_at)}" if run.finished_at else "")
                   + took)
    if run.params:
        click.echo("params: " + ", ".join(f"{k}={v!r}" for k, v in run.params.items()))
    for reason in run.decision.get("reasons", []):
        click.echo(f"  - {reason}")
    if run.plan_hash:
        click.echo(f"plan {run.plan_hash[:12]}")
    for a in approvals:
        verb = "approved" if a.decision == "approve" else "denied"
        click.echo(f"{verb} by {a.actor} (os user {a.os_user}) at {short_time(a.at)} for plan "
                   f"{a.plan_hash[:12]}" + (f": {a.reason}" if a.reason else ""))
    if run.error:
        click.secho(f"error: {run.error}", fg="red")
    if run_traceback and not any(_traceback(st) for st in steps):
        _echo_traceback(run_traceback, "  ")
    click.echo("")
    if steps:
        click.secho(f"{'#':>3}  {'STATUS':<10}  {'START (UTC)':<12}  {'TOOK':>6}  STEP",
                    bold=True)
    day = run.created_at[:10]
    for st in steps:
        label = st.command or st.name or ""
        if st.kind == "log":
            label = st.stdout or ""
        elif st.kind == "note":
            label = f"{st.name} = {st.data}"
        elif st.kind == "check":
            label = f"{st.name}" + (f" (attempt {st.attempt})" if st.attempt else "")
        where = f" {st.target}:" if st.target else ""
        if isinstance(st.data, dict) and st.data.get("reused"):
            label += " (reused from the plan)"
        # When each step began (with the date once it is not the request's day) and how
        # long it took; a plan's steps ran in memory before they were recorded: no duration.
        start = st.started_at.replace("T", " ")[:23]
        start = start[11:] if start[:10] == day else start
        step_took = None if st.phase.startswith("plan:") or st.kind in ("log", "note") \
            else st.duration if st.duration is not None \
            else seconds_between(st.started_at, st.finished_at)
        click.echo(f"{st.seq:>3}  {status(st.status) + ' ' * (10 - len(st.status))}  "
                   f"{start:<12}  {format_seconds(step_took):>6}  [{st.phase}]{where} {label}"
                   + (f"  exit {st.exit_code}" if st.exit_code not in (None, 0) else ""))
        if st.kind == "ansible-change":
            echo_diff(st.stdout)
        if st.kind == "command" and not st.planned:
            for stream, text in (("out", st.stdout), ("err", st.stderr)):
                for line in (text or "").rstrip("\n").splitlines()[-20:]:
                    click.echo(f"      {stream}| {line}")
        if st.error:
            click.secho(f"      {st.error}", fg="red")
        if traceback := _traceback(st):
            _echo_traceback(traceback, "      ")


def _traceback(step: Any) -> str | None:
    data = step.data
    return data.get("traceback") if step.kind != "note" and isinstance(data, dict) else None


def _echo_traceback(text: str, indent: str) -> None:
    click.echo(f"{indent}Traceback (runbook code, most recent call last):")
    for line in text.splitlines():
        click.echo(f"{indent}{line}")


@click.command(cls=Command)
@click.option("--reason", default=None,
              help="Why autonomy stops (shown in every decision). Without it: show why it "
                   "is halted, if it is.")
@json_option
def halt(reason: str | None, as_json: bool) -> None:
    """Stop all autonomy: new runs need a human; autonomous runs stop before their next change.

    Each halt adds its reason, with who and when (two incidents, two reasons); `unhalt`
    clears them all. Without --reason: show every reason autonomy is halted for.
    """
    from selfdrive.executor.engine import halt as do_halt
    from selfdrive.executor.engine import halts

    s = session()
    if reason is None:
        current = halts(s.journal)
    else:
        if not reason.strip():
            from selfdrive.sdk.errors import UsageError

            raise UsageError("--reason is empty: say why (every decision shows it)")
        current = do_halt(s.journal, by=s.actor, reason=reason, now=datetime.now(UTC))
    if as_json:
        emit_json({"halted": bool(current), "reasons": [_halt_json(h) for h in current]})
        return
    if reason is not None:
        click.echo(f"halted by {s.actor}: {reason}")
        if len(current) == 1:
            return
    if not current:
        click.echo("autonomy is not halted")
        return
    click.echo(f"autonomy is halted for {len(current)} reason(s); `selfdrive unhalt` clears "
               f"them all:")
    _print_halts(current)


@click.command(cls=Command)
@json_option
def unhalt(as_json: bool) -> None:
    """Turn the halt switch off, clearing every reason; policy decides as before."""
    from selfdrive.executor.engine import unhalt as do_unhalt

    s = session()
    cleared = do_unhalt(s.journal, by=s.actor)
    if as_json:
        emit_json({"unhalted_by": s.actor if cleared else None,
                   "cleared": [_halt_json(h) for h in cleared]})
    elif cleared:
        click.echo(f"unhalted by {s.actor}; cleared {len(cleared)} reason(s):")
        _print_halts(cleared)
    else:
        click.echo("autonomy was not halted")


def _halt_json(h: Halt) -> dict[str, str]:
    return {"by": h.by, "reason": h.reason, "since": h.since.isoformat()}


def _print_halts(halts: Sequence[Halt]) -> None:
    for h in halts:
        click.echo(f"  since {short_time(h.since.isoformat())} UTC, by {h.by}: {h.reason}")
