"""Commands about runs: plan, run, explain, history, logs, halt, unhalt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from selfdrive.cli.render import (
    emit_json,
    isatty,
    short_time,
    status,
    table,
)
from selfdrive.cli.session import parse_params, session

if TYPE_CHECKING:
    from selfdrive.executor.engine import RunOutcome
    from selfdrive.executor.plan import Plan
    from selfdrive.journal.records import RunRecord
    from selfdrive.policy.decide import Decision

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
    executor = s.executor(quiet=as_json)
    approver = None
    if yes:
        approver = _yes
    elif isatty() and not as_json:
        approver = _ask
    if not as_json:
        click.echo(f"{'planning' if dry_run else 'running'} {rb.name} "
                   f"({rb.risk.name} risk) as {s.actor}, team level {s.config.level.name}",
                   err=True)
    result = executor.submit(RunRequest(runbook=name, params=values, requested_by=s.actor,
                                        os_user=s.os_user, dry_run=dry_run), approver=approver)
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
    return click.confirm(f"Approve plan {plan.hash[:12]} and run it now?", default=False,
                         err=True)


def _print_plan(plan: Plan) -> None:
    changes = plan.changes
    click.secho(f"\nPlan {plan.hash[:12]} — {len(changes)} change(s) on "
                f"{', '.join(plan.targets) or 'no target'}:", bold=True, err=True)
    for step in changes:
        click.echo(f"  [{step.phase}] {step.target}: {step.command}", err=True)
    for note in plan.notes:
        click.echo(f"  note: {note}", err=True)
    click.echo("", err=True)


def _print_outcome(result: RunOutcome) -> None:
    run = result.run
    if run.mode == "dry-run":
        _print_plan(result.plan)
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


@click.command()
@click.argument("name")
@param_option
@json_option
def plan(name: str, params: tuple[str, ...], as_json: bool) -> None:
    """Dry-run NAME: read-only steps really run, every change is listed, nothing changes."""
    _submit(name, params, dry_run=True, yes=False, as_json=as_json)


@click.command()
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


@click.command()
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


@click.command()
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
    runs = s.journal.runs(runbook=name, status=statuses, limit=limit)
    if as_json:
        emit_json([r.as_json() for r in runs])
        return
    if not runs:
        click.echo("no runs yet")
        return
    table(["RUN", "RUNBOOK", "MODE", "STATUS", "BY", "STARTED", "FINISHED"],
          [[r.id, r.runbook, r.mode, status(r.status.value), r.requested_by,
            short_time(r.started_at or r.created_at), short_time(r.finished_at)] for r in runs])


@click.command()
@click.argument("run_id")
@json_option
def logs(run_id: str, as_json: bool) -> None:
    """Show RUN_ID's decision, steps, commands and output (secrets are never stored)."""
    from selfdrive.executor.approvals import sweep_expired

    s = session()
    sweep_expired(s.executor(quiet=True))
    journal = s.journal
    run = journal.get_run(run_id)
    steps = journal.steps(run.id)
    approvals = journal.approvals(run.id)
    unbacked = [str(d) for d in journal.disagreements(run.id)]
    if as_json:
        emit_json({"run": run.as_json(), "steps": [s.as_json() for s in steps],
                   "approvals": [a.as_json() for a in approvals],
                   "disagreements": unbacked})
        return
    click.secho(f"run {run.id}: {run.runbook}", bold=True)
    for line in unbacked:  # a row changed outside selfdrive must not read as the truth
        click.secho(f"NOT IN THE AUDIT CHAIN: {line}", fg="red")
    click.echo(f"status {status(run.status.value)}, mode {run.mode}, requested by "
               f"{run.requested_by} (os user {run.os_user}) at {short_time(run.created_at)}")
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
    click.echo("")
    for st in steps:
        label = st.command or st.name or ""
        if st.kind == "log":
            label = st.stdout or ""
        elif st.kind == "note":
            label = f"{st.name} = {st.data}"
        elif st.kind == "check":
            label = f"{st.name}" + (f" (attempt {st.attempt})" if st.attempt else "")
        where = f" {st.target}:" if st.target else ""
        click.echo(f"{st.seq:>3} {status(st.status):<10} [{st.phase}]{where} {label}"
                   + (f"  exit {st.exit_code}" if st.exit_code not in (None, 0) else ""))
        if st.kind == "command" and not st.planned:
            for stream, text in (("out", st.stdout), ("err", st.stderr)):
                for line in (text or "").rstrip("\n").splitlines()[-20:]:
                    click.echo(f"      {stream}| {line}")
        if st.error:
            click.secho(f"      {st.error}", fg="red")


@click.command()
@click.option("--reason", required=True, help="Why autonomy stops (shown in every decision).")
def halt(reason: str) -> None:
    """Stop all autonomy: new runs need a human; autonomous runs stop before their next change."""
    from selfdrive.executor.engine import halt as do_halt

    s = session()
    do_halt(s.journal, by=s.actor, reason=reason, now=datetime.now(UTC))
    click.echo(f"halted by {s.actor}: {reason}")


@click.command()
def unhalt() -> None:
    """Turn the halt switch off; policy decides as before."""
    from selfdrive.executor.engine import unhalt as do_unhalt

    s = session()
    if do_unhalt(s.journal, by=s.actor):
        click.echo(f"unhalted by {s.actor}")
    else:
        click.echo("autonomy was not halted")
