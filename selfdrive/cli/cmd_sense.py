"""Commands that let the world start runs: serve, trigger, alerts, scheduler."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from selfdrive.cli.command import Command, Group
from selfdrive.cli.render import emit_json, short_time, status, table
from selfdrive.cli.session import Session, session

if TYPE_CHECKING:
    from selfdrive.executor.engine import Executor
    from selfdrive.journal.core import Journal
    from selfdrive.triggers.intake import AlertIntake

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON on stdout.")


def _log(text: str) -> None:
    """What long-running commands say they do: one timestamped line on stderr.

    A plain write, not ``click.echo``: the receiver logs every alert, and echo's
    terminal checks cost more than the line.
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    try:
        sys.stderr.write(f"{stamp} {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stderr must not stop a run
        pass


def _executor(s: Session, journal: Journal) -> Executor:
    """Unattended runs: nothing to show step by step; approvals notify the team."""
    from selfdrive.executor.engine import Executor
    from selfdrive.executor.observe import SilentObserver

    return Executor(s.config, s.registry, journal, observer=SilentObserver(),
                    notifier=s.notifier)


def _intake(s: Session, log: Any = _log, journal: Journal | None = None) -> AlertIntake:
    from selfdrive.triggers.intake import AlertIntake

    journal = journal or s.journal
    return AlertIntake(s.config, s.registry, journal, _executor(s, journal), log=log)


def _worker_intake(config_path: str) -> tuple[AlertIntake, Callable[[], None]]:
    """An alert worker process's own session: config, runbooks, journal connection."""
    from selfdrive.cli.streams import guard_standard_streams

    guard_standard_streams()  # a fresh interpreter: its stderr may be a closed pipe too
    s = Session({"config_path": config_path})
    return _intake(s), s.close


def _pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    from selfdrive.sdk.errors import UsageError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {pair!r}: expected key=value")
        out[key.strip()] = value
    return out


# -- serve -----------------------------------------------------------------------


@click.command(cls=Command)
@click.option("--host", default=None, help="Address to listen on (default: receiver.host, "
                                           "127.0.0.1). Beyond loopback, auth is required.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default: receiver.port, 9095; 0 picks a free one).")
def serve(host: str | None, port: int | None) -> None:
    """Receive alerts over HTTP (Alertmanager, PagerDuty, generic JSON) and run what they fire.

    Every alert is journaled before it is answered; matching runbooks run under policy
    in worker processes (receiver.workers). SIGTERM or Ctrl-C stops listening and lets
    the runs in progress finish (runs still queued start when the receiver starts
    again, within the dedup window).
    """
    from selfdrive.triggers.receiver import (
        Credentials,
        ReceiverApp,
        bound_addresses,
        check_bind,
        create_server,
    )
    from selfdrive.triggers.workers import WorkerPool

    s = session()
    rc = s.config.receiver
    host = host or rc.host
    port = rc.port if port is None else port
    creds = Credentials.from_config(rc, os.environ)
    check_bind(host, creds)
    s.warn_problems()
    # Its own connection: it waits receiver.journal_timeout for a busy journal, then 503.
    journal = s.open_journal(busy_timeout=rc.journal_timeout)
    intake = _intake(s, journal=journal)
    config_path = s.config.path or s.config.root / "selfdrive.toml"
    try:
        pool = WorkerPool(functools.partial(_worker_intake, str(config_path)), rc.workers,
                          intake=intake, nice=rc.worker_nice)
    except BaseException:
        journal.close()
        raise
    app = ReceiverApp(intake, credentials=creds, dispatch=pool.submit,
                      pending=lambda: pool.pending)
    try:
        server = create_server(app, host=host, port=port, threads=rc.threads)
    except OSError as exc:  # in use, not an address of this machine, not permitted …
        from selfdrive.sdk.errors import UsageError

        pool.stop()
        journal.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    for job in intake.orphaned_jobs():
        _log(f"alert #{job.alert_id} {job.alert.name}: starting {job.runbook}, queued by a "
             f"receiver that stopped")
        pool.submit(job)
    for where, bound in bound_addresses(server):
        _log(f"selfdrive receiver listening on http://{where}:{bound} "
             f"(team {s.config.team}, level {s.config.level.name}, "
             f"{len(s.registry)} runbook(s), {rc.workers} worker process(es), "
             f"auth {'on' if creds.any else 'off: loopback only'})")

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()  # returns when SIGTERM or Ctrl-C ends waitress's loop
    finally:
        server.close()
        app.close()
        busy = pool.pending
        _log(f"stopping: {busy} alert run(s) queued or in progress" if busy else "stopping")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        pool.stop()
        journal.close()
        _log("stopped")


# -- trigger ---------------------------------------------------------------------


@click.command(cls=Command)
@click.argument("alertname")
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="An alert label; repeat for more.")
@click.option("-a", "--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              help="An alert annotation; repeat for more.")
@click.option("--resolved", is_flag=True, help="Send the alert as resolved (starts nothing).")
@click.option("--fingerprint", default=None,
              help="The alert's identity for dedup (default: a hash of name and labels).")
@json_option
def trigger(alertname: str, labels: tuple[str, ...], annotations: tuple[str, ...],
            resolved: bool, fingerprint: str | None, as_json: bool) -> None:
    """Feed one alert through the receiver's path, without HTTP, and wait for its runs.

    Journaling, matching, dedup and policy are the receiver's; the runs start as
    unattended alert runs (requested by "alert"), so approval means a pending run.
    """
    from selfdrive.triggers.payloads import FIRING, RESOLVED, Alert, PayloadError, parse_generic

    s = session()
    intake = _intake(s, log=(lambda _: None) if as_json else _log)
    raw: dict[str, Any] = {"name": alertname, "labels": _pairs(labels, "-l"),
                           "annotations": _pairs(annotations, "-a"),
                           "status": RESOLVED if resolved else FIRING}
    if fingerprint:
        raw["fingerprint"] = fingerprint
    try:
        parsed = parse_generic(raw, intake.limits)
    except PayloadError as exc:
        from selfdrive.sdk.errors import UsageError

        raise UsageError(f"alert {alertname!r}: {exc}") from None
    s.warn_problems()
    alert = Alert(**{**parsed[0].as_json(), "source": "cli"})
    received = intake.receive([alert], remote=f"cli:{s.actor}")[0]
    results = [intake.run(job) for job in received.jobs]
    record = s.journal.alerts.get(received.alert_id) or {}
    if as_json:
        emit_json({"alert": _alert_json(record),
                   "runs": [{"runbook": r.job.runbook, "exit_code": r.exit_code,
                             "error": r.error, "run": r.run.as_json() if r.run else None}
                            for r in results]})
        return
    click.echo(f"alert #{received.alert_id} {alert.name} ({alert.status}), fingerprint "
               f"{alert.fingerprint}")
    if not received.matched:
        click.echo("  matches no runbook")
    _print_claims(record.get("claims", []))


# -- alerts ----------------------------------------------------------------------


def _alert_json(row: dict[str, Any]) -> dict[str, Any]:
    """One alert for --json; ``requests`` is how many requests the row stands for (a
    sampled refusal, or an alert and its replays); ``run_ids`` the runs it started."""
    out = {k: row.get(k) for k in ("id", "received_at", "source", "name", "status", "labels",
                                   "annotations", "fingerprint", "starts_at", "group_key",
                                   "matched", "remote", "reason", "http_status", "brief",
                                   "last_at", "run_ids", "claims")}
    out["requests"] = row.get("requests") or 1
    return out


def _print_claims(claims: list[dict[str, Any]]) -> None:
    for c in claims:
        run = c.get("run_id") or "-"
        kind = " (diagnostic)" if c.get("diagnostic") else ""
        now = f" ({status(c['run_status'])})" if c.get("run_status") else ""
        click.echo(f"  {c['runbook']}{kind}: {status(c['outcome'])}, run {run}{now}"
                   + (f" — {c['detail']}" if c.get("detail") else ""))


@click.group(cls=Group, invoke_without_command=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100000))
@click.option("--name", default=None, help="Only alerts with this name.")
@json_option
@click.pass_context
def alerts(ctx: click.Context, limit: int, name: str | None, as_json: bool) -> None:
    """List received alerts, newest first: what matched, what ran (`alerts show ID`)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = session().journal.alerts.find(limit=limit, name=name)
    if as_json:
        emit_json([_alert_json(r) for r in rows])
        return
    if not rows:
        click.echo("no alerts received yet")
        return
    table(["ID", "RECEIVED", "SOURCE", "NAME", "STATUS", "MATCHED", "RUNS"],
          [[r["id"], short_time(r["received_at"]), r["source"], r["name"] or "-",
            status(r["status"]), ", ".join(r["matched"]) or "-",
            _runs_cell(r)] for r in rows])


def _runs_cell(row: dict[str, Any]) -> str:
    if row["status"] == "refused":
        times = f" (x{row['requests']})" if (row.get("requests") or 1) > 1 else ""
        return f"{row['http_status']}{times}: {row['reason']}"
    cells = []
    for c in row["claims"]:
        if c["outcome"] == "duplicate":
            cells.append(f"{c['runbook']} dup of {c['run_id'] or 'queued run'}")
        elif c["run_id"]:
            cells.append(c["run_id"])
        else:
            cells.append(f"{c['runbook']} {c['outcome']}")
    return ", ".join(cells) or "-"


@alerts.command("show")
@click.argument("alert_id", type=int)
@json_option
def alerts_show(alert_id: int, as_json: bool) -> None:
    """Show one alert: labels, annotations, runs, and its context brief."""
    from selfdrive.sdk.errors import UsageError
    from selfdrive.triggers.brief import render_brief

    s = session()
    row = s.journal.alerts.get(alert_id)
    if row is None:
        raise UsageError(f"no alert #{alert_id} in {s.config.journal_location} "
                         f"(`selfdrive alerts` lists them)")
    if not row.get("brief"):  # a diagnostic still running, or linked through a duplicate
        row["brief"] = render_brief(s.journal, alert_id, team=s.config.team)
    if as_json:
        emit_json(_alert_json(row))
        return
    click.secho(f"alert #{row['id']}: {row['name'] or '-'} ({row['status']})", bold=True)
    click.echo(f"received {short_time(row['received_at'])} from {row['source']}"
               + (f" ({row['remote']})" if row.get("remote") else "")
               + (f", fingerprint {row['fingerprint']}" if row.get("fingerprint") else ""))
    times = row.get("requests") or 1
    if row["status"] == "refused":
        click.echo(f"refused with {row['http_status']}: {row['reason']}"
                   + (f" ({times} requests from there until {short_time(row['last_at'])})"
                      if times > 1 else ""))
        return
    if times > 1:
        click.echo(f"delivered {times} times (the repeats were replays, counted here; the "
                   f"latest {short_time(row['last_at'])})")
    if row.get("reason"):
        click.echo(f"note: {row['reason']}")
    for title, values in (("labels", row["labels"]), ("annotations", row["annotations"])):
        if values:
            click.echo(f"{title}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
    click.echo("matched: " + (", ".join(row["matched"]) or "no runbook"))
    _print_claims(row["claims"])
    if row.get("brief"):
        click.echo("")
        click.echo(row["brief"].rstrip("\n"))


# -- scheduler -------------------------------------------------------------------


@click.command(cls=Command)
@click.option("--once", is_flag=True,
              help="Run what is due now and exit (for cron, systemd timers, CronJobs).")
@click.option("--tick", type=click.FloatRange(0.05, 3600), default=15.0, show_default=True,
              help="Seconds between checks.")
@click.option("--list", "list_only", is_flag=True,
              help="List the schedules with their last and next fire, run nothing.")
@json_option
def scheduler(once: bool, tick: float, list_only: bool, as_json: bool) -> None:
    """Run runbooks on their schedules (@runbook(schedule=…) and [[schedules]]).

    Each fire runs at most once across every scheduler on the journal; a fire missed
    while nothing was running runs once if it is within the schedule's grace, and is
    journaled as missed otherwise. SIGTERM stops it after the runs in progress finish;
    a second SIGTERM (or Ctrl-C) marks them interrupted and exits.
    """
    from selfdrive.triggers.schedule import Scheduler, check_schedules

    s = session()
    s.warn_problems()
    schedules = check_schedules(s.config, s.registry)
    if list_only:
        _list_schedules(s, schedules, as_json)
        return
    log = (lambda _: None) if as_json and once else _log
    sched = Scheduler(s.config, s.registry, s.journal, _executor(s, s.journal), schedules,
                      log=log)
    if once:
        sched.tick(wait=True)
        if not sched.results:
            log(f"nothing due ({len(schedules)} schedule(s) checked)")
        if as_json:
            emit_json([r.as_json() for r in sched.results])
        failed = [r for r in sched.results if r.status == "error"]
        raise SystemExit(1 if failed else 0)
    log(f"scheduler started: {len(schedules)} schedule(s), tick {tick:g}s, team "
        f"{s.config.team}")
    forced = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if sched.stopping.is_set():
            forced.set()
            raise KeyboardInterrupt
        log(f"received {signal.Signals(signum).name}: finishing the runs in progress, then "
            f"stopping (send it again to stop at once)")
        sched.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sched.run_forever(tick)
    except KeyboardInterrupt:
        marked = sched.interrupt_running("the scheduler was stopped by a second signal")
        log(f"stopped at once; run(s) marked interrupted: {', '.join(marked) or 'none'}")
        sys.exit(130)
    log("scheduler stopped")


def _list_schedules(s: Session, schedules: list[Any], as_json: bool) -> None:
    now = datetime.now(UTC)
    rows = []
    for sc in schedules:
        rows.append({"id": sc.id, "runbook": sc.runbook, "cron": sc.expression,
                     "timezone": sc.timezone, "grace": sc.grace.total_seconds(),
                     "source": sc.source, "params": dict(sc.params),
                     "last_fire": s.journal.schedules.last_fire(sc.id),
                     "next_fire": sc.next_after(now).astimezone(UTC).isoformat()})
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no schedules (declare @runbook(schedule=…) or [[schedules]])")
        return
    table(["SCHEDULE", "RUNBOOK", "CRON", "TZ", "LAST FIRE", "NEXT FIRE"],
          [[r["id"], r["runbook"], r["cron"], r["timezone"], short_time(r["last_fire"]),
            short_time(r["next_fire"])] for r in rows])
