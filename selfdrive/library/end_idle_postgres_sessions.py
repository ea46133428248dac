"""PostgreSQL: terminate sessions that sat idle (often inside a transaction) for too long."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, StringConstraints

from selfdrive import Context, Operand, Risk, runbook
from selfdrive.library._common import HostName, OneOrMore, Runner, sql_literal, where

PgName = Annotated[Operand, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_$.-]{0,62}$")]
PgHost = Annotated[Operand, StringConstraints(pattern=r"^[A-Za-z0-9/][A-Za-z0-9._:/-]*$")]
State = Literal["idle", "idle in transaction", "idle in transaction (aborted)"]
# Unaligned, tuples only, no psqlrc; any SQL error is an error exit.
PSQL = ("{% if password %}PGPASSWORD={{ password }} {% endif %}PGCONNECT_TIMEOUT=10 "
        "{{ psql }} -X -A -t -q -v ON_ERROR_STOP=1 -F '|' -h {{ pg_host }} -p {{ pg_port }} "
        "-U {{ pg_user }} -d {{ pg_database }} -c {{ sql }}")


@runbook(risk=Risk.MEDIUM, domain="postgres", lock="postgres:{{ pg_host }}:{{ pg_port }}",
         timeout="5m", tags=["library", "postgres", "database"])
def end_idle_postgres_sessions(
        ctx: Context,
        idle_seconds: Annotated[int, Field(ge=1)] = 3600,
        states: OneOrMore[State] = ["idle in transaction",  # noqa: B006 - never mutated
                               "idle in transaction (aborted)"],
        database: PgName | None = None,
        exclude_users: OneOrMore[PgName] = [],  # noqa: B006 - never mutated
        max_sessions: Annotated[int, Field(ge=1, le=10_000)] = 100,
        pg_host: PgHost = "127.0.0.1", pg_port: Annotated[int, Field(ge=1, le=65535)] = 5432,
        pg_user: PgName = "postgres", pg_database: PgName = "postgres",
        password: SecretStr | None = None, psql: str = "psql",
        host: HostName | None = None) -> None:
    """Terminate client sessions idle for more than `idle_seconds` in one of `states`.

    The classic incident: sessions left "idle in transaction" hold locks and stop
    vacuum, or idle connections exhaust `max_connections`. The default `states` are
    the two "idle in transaction" ones; add `idle` to end plain idle sessions too
    (connection pools reconnect). `database` limits it to one database,
    `exclude_users` spares roles (e.g. replication or a pooler's own role); more than
    `max_sessions` matches refuses to act.

    It runs `psql` (on `host` over SSH, or locally) against `pg_host:pg_port` as
    `pg_user` — a superuser or a member of `pg_signal_backend`. `password` is masked
    everywhere selfdrive shows it but does appear in the shell command line on the
    host; prefer a `.pgpass` file or peer/cert authentication.

    The plan lists one `pg_terminate_backend` per session (pid and start time). Each
    re-checks, when it runs, that the session is the same one (pid and
    `backend_start`) and is still idle long enough: a session that woke up or a pid
    reused in between is left alone. Verification: no session matches any more (3
    tries, 1 s apart). A terminated session cannot be revived: no rollback.
    """
    on = where(ctx, host)
    sessions = on.run(PSQL, sql=_select(ctx.params), readonly=True, check=True)
    rows = [line.split("|") for line in sessions.stdout.splitlines() if line.strip()]
    if len(rows) > max_sessions:
        raise RuntimeError(f"{len(rows)} sessions match, more than max_sessions="
                           f"{max_sessions}; narrow the criteria or raise max_sessions")
    ctx.note("sessions", [{"pid": int(r[0]), "user": r[2], "database": r[3], "state": r[4],
                           "idle_seconds": int(r[5])} for r in rows])
    for pid, started, *_ in rows:
        on.run(PSQL, sql=_terminate(ctx.params, int(pid), started), check=True)


def _criteria(p: Mapping[str, Any]) -> list[str]:
    """The WHERE clauses, built here with quoted literals (never from raw text)."""
    clauses = [
        "backend_type = 'client backend'",
        "pid <> pg_backend_pid()",
        "state IN (" + ", ".join(sql_literal(s) for s in p["states"]) + ")",
        f"state_change < now() - make_interval(secs => {int(p['idle_seconds'])})",
    ]
    if p.get("database"):
        clauses.append(f"datname = {sql_literal(p['database'])}")
    if p.get("exclude_users"):
        clauses.append("usename NOT IN (" + ", ".join(sql_literal(u) for u in
                                                       p["exclude_users"]) + ")")
    return clauses


def _select(params: Mapping[str, Any]) -> str:
    return ("SELECT pid, backend_start, usename, datname, state, "
            "EXTRACT(EPOCH FROM now() - state_change)::bigint FROM pg_stat_activity WHERE "
            + " AND ".join(_criteria(params)) + " ORDER BY state_change")


def _terminate(params: Mapping[str, Any], pid: int, started: str) -> str:
    return (f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = {pid} AND "
            f"backend_start = {sql_literal(started)}::timestamptz AND "
            + " AND ".join(_criteria(params)))


def _count(on: Runner, params: Mapping[str, Any]) -> int:
    out = on.run(PSQL, sql="SELECT count(*) FROM pg_stat_activity WHERE "
                 + " AND ".join(_criteria(params)), readonly=True, check=True)
    return int(out.stdout.strip())


@end_idle_postgres_sessions.precondition
def the_server_lets_us_signal_backends(ctx: Context, host: str | None) -> bool:
    """psql connects, and the role may terminate other sessions."""
    out = where(ctx, host).run(
        PSQL, sql="SELECT rolsuper OR pg_has_role(current_user, 'pg_signal_backend', "
                  "'MEMBER') FROM pg_roles WHERE rolname = current_user", readonly=True,
        check=False)
    return out.ok and out.stdout.strip() == "t"


@end_idle_postgres_sessions.verify(attempts=3, interval="1s")
def no_idle_session_is_left(ctx: Context, host: str | None) -> bool:
    return _count(where(ctx, host), ctx.params) == 0
