"""Restart a service that stopped answering, then check from the outside that it answers."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from selfdrive import Context, Operand, Risk, alert, runbook
from selfdrive.library._common import SCRIPT, AbsPath, HostName, where

ServiceName = Annotated[Operand, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9@._:-]*$")]
Url = Annotated[Operand, StringConstraints(pattern=r"^https?://[^\s]+$")]
SYSTEMD_RESTART = 'systemctl restart -- "$1"'
SYSTEMD_ACTIVE = 'systemctl is-active --quiet -- "$1"'


@runbook(
    risk=Risk.LOW,
    domain="host",
    lock="service:{{ host or 'local' }}:{{ service }}",
    timeout="10m",
    tags=["library", "service"],
    triggers=[alert("NodeSystemdServiceFailed", params={"service": "{{ labels.name }}"})],
)
def restart_service(ctx: Context, service: ServiceName, host: HostName | None = None,
                    restart_command: str | None = None, health_command: str | None = None,
                    health_url: Url | None = None, pidfile: AbsPath | None = None,
                    health_timeout: Annotated[int, Field(ge=1, le=300)] = 5) -> None:
    """Restart a service and verify from the outside that it answers again.

    By default the service is a systemd unit: `systemctl restart -- SERVICE`, and it
    counts as healthy when `systemctl is-active` says so. For anything else give
    `restart_command` (a shell command; `$1` is the service name) and at least one of
    `health_url` (fetched with curl; any 2xx/3xx answer is healthy), `health_command`
    (exit 0 is healthy; `$1` is the service name) or `pidfile` (the process it names
    must be alive). `host` runs everything on that inventory host over SSH.

    Verification retries for up to 10 attempts, 1 s apart: a service that needs a
    moment to bind its port is not failed early. A restart cannot be undone, so there
    is no rollback; a failed verification ends the run as `verification_failed` (exit
    5) for a human to look at. `lock` keeps two restarts of one service apart.

    Command parameters are code: set them by hand or in a wrapper runbook, never map
    them from alert labels. The alert trigger maps only the unit name.
    """
    on = where(ctx, host)
    if pidfile is not None:
        before = on.run("cat -- {{ pidfile }}", readonly=True, check=False)
        ctx.note("pid_before", before.stdout.strip() if before.ok else None)
    on.run(SCRIPT, script=restart_command or SYSTEMD_RESTART, arg=service, check=True)


@restart_service.precondition
def the_service_is_known(ctx: Context, service: str, host: str | None,
                         restart_command: str | None, health_command: str | None,
                         health_url: str | None, pidfile: str | None) -> bool:
    """systemd knows the unit; a custom restart comes with a way to check health."""
    if restart_command is None:
        return where(ctx, host).run("systemctl cat -- {{ service }}", readonly=True,
                                    check=False).ok
    if health_command is None and health_url is None and pidfile is None:
        raise ValueError("with restart_command, give health_url, health_command or pidfile: "
                         "otherwise nothing could verify the restart")
    return True


@restart_service.verify(attempts=10, interval="1s")
def the_service_answers(ctx: Context, service: str, host: str | None,
                        restart_command: str | None, health_command: str | None,
                        health_url: str | None, pidfile: str | None,
                        health_timeout: int) -> bool:
    """Every check that applies passes: systemd says active, the pidfile's process
    lives, the URL answers, the health command exits 0."""
    on = where(ctx, host)
    if restart_command is None and not on.run(SCRIPT, script=SYSTEMD_ACTIVE, arg=service,
                                              readonly=True, check=False).ok:
        return False
    if pidfile is not None and not on.run('kill -0 "$(cat -- {{ pidfile }})"',
                                           readonly=True, check=False).ok:
        return False
    if health_url is not None and not on.run(
            "curl -fsS -o /dev/null --max-time {{ health_timeout }} {{ health_url }}",
            readonly=True, check=False).ok:
        return False
    if health_command is not None:
        return on.run(SCRIPT, script=health_command, arg=service, readonly=True,
                      timeout=health_timeout, check=False).ok
    return True
