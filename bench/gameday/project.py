"""The selfdrive project the harness writes for one level: config, inventory, runbooks.

The team loads the bundled library (``library = true``) and a few runbooks of its own
that wire the prober's alerts to fixes. Where the library has the fix, the team's
runbook calls the library's runbook (``rb(ctx, **params)`` runs its body) and adds the
precondition and verification that fit this fleet; the rest use the hosts' ``gd``
command. The level alone decides autonomy, through selfdrive's policy matrix.
"""

from __future__ import annotations

from pathlib import Path

from fleet import ADDRESS, GROUPS, PG_PORT, STATE_ROOT, USER, Fleet

RATE_LIMIT_PER_RUNBOOK = 4
RATE_LIMIT_TOTAL = 12
RATE_WINDOW = "10m"


def write(fleet: Fleet, level: str) -> Path:
    root = STATE_ROOT / "levels" / level
    (root / "runbooks").mkdir(parents=True)
    hosts = "\n".join(
        f'[inventory.hosts.{h}]\naddress = "{a}"\nport = {fleet.ssh_port}\nuser = "{USER}"\n'
        f'key = "{fleet.keys[h]}"\n' for h, a in ADDRESS.items())
    groups = "\n".join(f'{role} = {sorted(hs)!r}'.replace("'", '"')
                       for role, hs in GROUPS.items())
    (root / "selfdrive.toml").write_text(f"""\
team = "gameday"
level = "{level}"
runbooks = ["runbooks"]
entry_points = false
library = true

[ssh]
known_hosts = "{fleet.known_hosts}"
connect_timeout = 5

[guardrails]
rate_limit_per_runbook = {RATE_LIMIT_PER_RUNBOOK}
rate_limit_total = {RATE_LIMIT_TOTAL}
rate_window = "{RATE_WINDOW}"
blast_radius = 5

[receiver]
dedup_window = "20s"
workers = 2

{hosts}
[inventory.groups]
{groups}
""")
    (root / "runbooks" / "gameday.py").write_text(
        RUNBOOKS.replace("@GD@", str(fleet.gd)).replace("@FLEET@", str(fleet.root))
        .replace("@PGHOST@", ADDRESS["db1"]).replace("@PGPORT@", str(PG_PORT))
        .replace("@PSQL@", str(fleet.pg_bindir / "psql") if fleet.pg_bindir else "psql"))
    return root


RUNBOOKS = '''\
"""The game day team's runbooks: the prober's alerts wired to fixes on this fleet."""

from __future__ import annotations

import re

from selfdrive import Context, Risk, alert, runbook
from selfdrive.library import check_cert_expiry as _cert
from selfdrive.library import end_idle_postgres_sessions as _pg
from selfdrive.library import free_disk_space as _disk
from selfdrive.library import kill_runaway_process as _cpu
from selfdrive.library import restart_service as _restart

GD = "@GD@"
FLEET = "@FLEET@"
SERVICE = re.compile("front|api|queue|worker|cache|edge")


def _restart_on(ctx: Context, host: str, service: str) -> None:
    _restart.restart_service(ctx, service=service, host=host,
                             restart_command=GD + ' restart "$1"',
                             health_command=GD + ' health "$1"')


def _unhealthy(ctx: Context, host: str, service: str) -> bool:
    return not ctx.ssh(host).run(GD + " health {{ service }}", service=service,
                                 readonly=True, check=False).ok


def _healthy(ctx: Context, host: str, service: str) -> bool:
    return ctx.ssh(host).run(GD + " health {{ service }}", service=service, readonly=True,
                             check=False).ok


@runbook(risk=Risk.LOW, domain="host", lock="service:{{ host }}:{{ service }}", timeout="2m",
         triggers=[alert("ServiceDown", service=SERVICE,
                         params={"host": "{{ labels.host }}", "service": "{{ labels.service }}"})])
def gameday_restart_service(ctx: Context, host: str, service: str) -> None:
    """Restart a service that stopped answering (the library's restart-service, via gd)."""
    _restart_on(ctx, host, service)


@gameday_restart_service.precondition
def restart_needed(ctx: Context, host: str, service: str) -> bool:
    return _unhealthy(ctx, host, service)


@gameday_restart_service.verify(attempts=5, interval="1s")
def restarted(ctx: Context, host: str, service: str) -> bool:
    return _healthy(ctx, host, service)


@runbook(risk=Risk.LOW, domain="host", lock="service:{{ host }}:{{ service }}", timeout="2m",
         triggers=[alert("UpstreamUnavailable", upstream=SERVICE,
                         params={"host": "{{ labels.upstream_host }}",
                                 "service": "{{ labels.upstream }}"})])
def gameday_restart_upstream(ctx: Context, host: str, service: str) -> None:
    """Restart the upstream a service reports dead (the cause), not the reporter."""
    _restart_on(ctx, host, service)


@gameday_restart_upstream.precondition
def upstream_is_down(ctx: Context, host: str, service: str) -> bool:
    return _unhealthy(ctx, host, service)


@gameday_restart_upstream.verify(attempts=5, interval="1s")
def upstream_answers(ctx: Context, host: str, service: str) -> bool:
    return _healthy(ctx, host, service)


@runbook(risk=Risk.LOW, domain="host", lock="disk:{{ host }}:{{ path }}", timeout="2m",
         triggers=[alert("NodeDiskFull", params={"host": "{{ labels.host }}",
                                                 "path": "{{ labels.mountpoint }}"})])
def gameday_free_disk(ctx: Context, host: str, path: str,
                      patterns: list[str] = ["*.tmp"],  # noqa: B006 - never mutated
                      older_than_days: int = 1) -> None:
    """Delete old spool files on a full disk (the library's free-disk-space)."""
    # The library's templates read the run's parameters: this runbook has the same names.
    _disk.free_disk_space(ctx, path=path, patterns=patterns, older_than_days=older_than_days,
                          host=host)


def _used(ctx: Context, host: str) -> int:
    """Percent used of the host's disk (a tmpfs, or a capped folder where mounting fails)."""
    return int(ctx.ssh(host).run(GD + " disk-used", readonly=True, check=True).stdout.strip())


@gameday_free_disk.precondition
def disk_is_full(ctx: Context, host: str, path: str) -> bool:
    if not path.startswith(FLEET + "/"):
        raise ValueError(f"{path} is not a disk of the game day fleet")
    return _used(ctx, host) >= 85


@gameday_free_disk.verify(attempts=3, interval="1s")
def disk_has_room(ctx: Context, host: str, path: str) -> bool:
    return _used(ctx, host) < 80


def _runaway(host: str) -> str:
    return "gameday-runaway " + re.escape(FLEET + "/hosts/" + host) + "( |$)"


@runbook(risk=Risk.MEDIUM, domain="host", lock="processes:{{ host }}", timeout="2m",
         triggers=[alert("HostHighCpu", params={"host": "{{ labels.host }}"})])
def gameday_kill_runaway(ctx: Context, host: str) -> None:
    """Stop the runaway process burning a host's CPU (the library's kill-runaway-process)."""
    _cpu.kill_runaway_process(ctx, match=_runaway(host), min_cpu_percent=10.0,
                              grace_seconds=1, host=host)


@gameday_kill_runaway.precondition
def a_runaway_runs(ctx: Context, host: str) -> bool:
    return ctx.ssh(host).run("pgrep -f -- {{ pattern }}", pattern=_runaway(host),
                             readonly=True, check=False).ok


@gameday_kill_runaway.verify(attempts=3, interval="1s")
def no_runaway_left(ctx: Context, host: str) -> bool:
    return not ctx.ssh(host).run("pgrep -f -- {{ pattern }}", pattern=_runaway(host),
                                 readonly=True, check=False).ok


PG = {"pg_host": "@PGHOST@", "pg_port": @PGPORT@, "pg_user": "postgres", "psql": "@PSQL@"}


@runbook(risk=Risk.MEDIUM, domain="postgres", lock="postgres:{{ host }}", timeout="2m",
         triggers=[alert("PostgresTooManyConnections", params={"host": "{{ labels.host }}"})])
def gameday_end_idle_sessions(ctx: Context, host: str, idle_seconds: int = 1,
                              states: list[str] = ["idle", "idle in transaction"],  # noqa: B006
                              database: str | None = None,
                              exclude_users: list[str] = ["postgres"],  # noqa: B006
                              max_sessions: int = 100, pg_host: str = PG["pg_host"],
                              pg_port: int = PG["pg_port"], pg_user: str = "postgres",
                              pg_database: str = "postgres", password: str | None = None,
                              psql: str = PG["psql"]) -> None:
    """End the application's idle sessions that exhaust PostgreSQL's connections."""
    # The library reads the run's parameters (ctx.params, templates): same names here.
    _pg.end_idle_postgres_sessions(
        ctx, idle_seconds=idle_seconds, states=states, database=database,
        exclude_users=exclude_users, max_sessions=max_sessions, pg_host=pg_host,
        pg_port=pg_port, pg_user=pg_user, pg_database=pg_database, psql=psql, host=host)


@gameday_end_idle_sessions.precondition
def connections_are_exhausted(ctx: Context, host: str) -> bool:
    out = ctx.ssh(host).run(
        "PGCONNECT_TIMEOUT=5 {{ psql }} -X -A -t -q -h {{ pg_host }} -p {{ pg_port }} "
        "-U postgres -d postgres -c {{ sql }}", sql="SELECT count(*) >= "
        "current_setting('max_connections')::int - "
        "current_setting('superuser_reserved_connections')::int FROM pg_stat_activity "
        "WHERE backend_type = 'client backend'", readonly=True, check=True, **PG)
    return out.stdout.strip() == "t"


@gameday_end_idle_sessions.verify(attempts=3, interval="1s")
def the_application_connects(ctx: Context, host: str) -> bool:
    return ctx.ssh(host).run(
        "PGCONNECT_TIMEOUT=5 {{ psql }} -X -q -h {{ pg_host }} -p {{ pg_port }} -U app "
        "-d postgres -c 'SELECT 1'", readonly=True, check=False, **PG).ok


@runbook(risk=Risk.LOW, domain="tls", lock="service:{{ host }}:edge", timeout="2m",
         triggers=[alert("SSLCertExpiringSoon", params={
             "host": "{{ labels.host }}",
             "cert_file": FLEET + "/hosts/{{ labels.host }}/tls/cert.pem",
             "key_file": FLEET + "/hosts/{{ labels.host }}/tls/key.pem"})])
def gameday_renew_cert(ctx: Context, host: str, cert_file: str, key_file: str) -> None:
    """Renew the edge's certificate (the library's check-cert-expiry with gd as the hook)."""
    if not cert_file.startswith(FLEET + "/hosts/" + host + "/"):
        raise ValueError(f"{cert_file} is not {host}'s certificate")
    _cert.check_cert_expiry(ctx, cert_file=cert_file, key_file=key_file, warn_days=14,
                            renew_command=GD + " renew-cert edge", host=host)


@gameday_renew_cert.verify(attempts=5, interval="1s")
def the_edge_serves_a_fresh_certificate(ctx: Context, host: str, cert_file: str) -> bool:
    on = ctx.ssh(host)
    cert = on.run("openssl x509 -noout -checkend 1209600 -in {{ cert_file }}", readonly=True,
                  check=False)
    return cert.ok and _healthy(ctx, host, "edge")


@runbook(risk=Risk.MEDIUM, domain="host", lock="service:{{ host }}:{{ service }}", timeout="2m",
         triggers=[alert("ServiceUnhealthy", reason="config", service=SERVICE,
                         params={"host": "{{ labels.host }}", "service": "{{ labels.service }}"})])
def gameday_rollback_config(ctx: Context, host: str, service: str) -> None:
    """Put back the config a bad deploy replaced (the one it saved as .previous)."""
    ctx.ssh(host).run(GD + " rollback-config {{ service }}", check=True)


@gameday_rollback_config.precondition
def the_config_is_bad_and_a_previous_one_exists(ctx: Context, host: str, service: str) -> bool:
    on = ctx.ssh(host)
    bad = not on.run(GD + " checkconfig {{ service }}", readonly=True, check=False).ok
    saved = on.run("test -f {{ path }}", path=f"{FLEET}/hosts/{host}/etc/{service}.json.previous",
                   readonly=True, check=False).ok
    return bad and saved


@gameday_rollback_config.verify(attempts=5, interval="1s")
def the_service_is_healthy_again(ctx: Context, host: str, service: str) -> bool:
    return _healthy(ctx, host, service)
'''
