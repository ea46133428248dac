"""end-idle-postgres-sessions against a real PostgreSQL server from Debian's packages: a
throw-away cluster on a free loopback port, real idle sessions held open by psql."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pg_support
import pytest
from kit_support import Team
from remote_support import wait_until

from selfdrive.library.end_idle_postgres_sessions import (
    PSQL,
    _select,
    end_idle_postgres_sessions,
)
from selfdrive.sdk import RunState
from selfdrive.sdk.command import render_command
from selfdrive.testing import FakeContext, plan_of, simulate

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Postgres:
    port: int
    bindir: Path

    def psql(self, sql: str, user: str = "postgres") -> str:
        return subprocess.run([str(self.bindir / "psql"), "-X", "-A", "-t", "-q", "-h",
                               "127.0.0.1", "-p", str(self.port), "-U", user, "-d", "postgres",
                               "-c", sql], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    def idle_session(self, user: str = "postgres", *, in_transaction: bool = False,
                     tag: str = "") -> subprocess.Popen[bytes]:
        """A psql that connects, maybe opens a transaction, then waits on its stdin."""
        first = "BEGIN; SELECT 1;" if in_transaction else "SELECT 1;"
        script = f"echo \"SET application_name = '{tag}'; {first}\"; exec sleep 120"
        return subprocess.Popen(f"({script}) | {self.bindir / 'psql'} -X -q -h 127.0.0.1 "
                                f"-p {self.port} -U {user} -d postgres >/dev/null",
                                shell=True, start_new_session=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A private cluster: initdb in a tmp folder (as the postgres user when we are root),
    trust authentication on 127.0.0.1 only, a free port, fsync off; stopped at the end."""
    bindir = pg_support.bindir()
    folder = Path(tempfile.mkdtemp(prefix="selfdrive-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", pg_support.free_port()
    subprocess.run([*as_owner, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres", "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                   timeout=120)
    options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
               f"-c full_page_writes=off")
    start = subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-l",
                            str(folder / "log"), "-o", options, "-w", "-t", "60", "start"],
                           capture_output=True, text=True, timeout=120)
    if start.returncode != 0:
        log = (folder / "log").read_text(errors="replace") if (folder / "log").exists() else ""
        pytest.fail(f"PostgreSQL did not start:\n{start.stdout}{start.stderr}\n{log}",
                    pytrace=False)
    server = Postgres(port, bindir)
    try:
        server.psql("CREATE ROLE keeper LOGIN")
        yield server
    finally:
        subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _backends(pg: Postgres, tag: str) -> list[str]:
    out = pg.psql(f"SELECT usename || ':' || state FROM pg_stat_activity "
                  f"WHERE application_name = '{tag}' ORDER BY usename, state")
    return [line for line in out.splitlines() if line]


def test_idle_sessions_are_terminated_and_excluded_users_spared(
        team: Team, postgres: Postgres) -> None:
    tag = f"sd-{os.getpid()}"
    sessions = [postgres.idle_session(tag=tag), postgres.idle_session(tag=tag,
                                                                      in_transaction=True),
                postgres.idle_session("keeper", tag=tag)]
    try:
        assert wait_until(lambda: len(_backends(postgres, tag)) == 3, timeout=15)
        assert _backends(postgres, tag) == ["keeper:idle", "postgres:idle",
                                            "postgres:idle in transaction"]
        time.sleep(1.2)  # older than idle_seconds
        params = {"idle_seconds": 1, "states": ["idle", "idle in transaction"],
                  "exclude_users": ["keeper"], "pg_port": postgres.port,
                  "psql": str(postgres.bindir / "psql")}

        # The plan with fakes answering what the server answers now, then the real plan.
        values = end_idle_postgres_sessions.validate_params(params)
        select = render_command(PSQL, {**values, "sql": _select(values)}).raw
        listing = subprocess.run(["bash", "-c", select], capture_output=True, text=True,
                                 check=True).stdout
        fake = FakeContext()
        fake.on(re.compile(r"rolsuper"), stdout="t\n")
        fake.on(re.compile(r"SELECT pid, backend_start"), stdout=listing)
        fake_plan = plan_of(end_idle_postgres_sessions, fake, **params)
        real_plan = team.plan("end-idle-postgres-sessions", **params)
        assert fake_plan.hash == real_plan.hash
        assert len(real_plan.changes) == 2
        assert all("pg_terminate_backend" in c.command and "backend_start = " in c.command
                   for c in real_plan.changes)

        outcome = team.run("end-idle-postgres-sessions", **params)
        assert outcome.run.status is RunState.SUCCEEDED, outcome.message
        assert wait_until(lambda: _backends(postgres, tag) == ["keeper:idle"], timeout=10)
    finally:
        for proc in sessions:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_a_busy_server_is_left_alone_and_the_role_must_be_allowed(postgres: Postgres,
                                                                   team: Team) -> None:
    nothing = team.run("end-idle-postgres-sessions", pg_port=postgres.port,
                       psql=str(postgres.bindir / "psql"))
    assert nothing.run.status is RunState.SUCCEEDED and nothing.plan.changes == ()
    weak = team.run("end-idle-postgres-sessions", pg_port=postgres.port, pg_user="keeper",
                    psql=str(postgres.bindir / "psql"))
    assert weak.run.status is RunState.PRECONDITION_FAILED and weak.exit_code == 4


def test_too_many_matches_refuse_and_the_password_never_shows() -> None:
    fake = FakeContext()
    fake.on(re.compile(r"rolsuper"), stdout="t\n")
    rows = "".join(f"{100 + i}|2026-11-25 21:00:0{i}+00|app|shop|idle in transaction|900\n"
                   for i in range(3))
    fake.on(re.compile(r"SELECT pid, backend_start"), stdout=rows)
    sim = simulate(end_idle_postgres_sessions, fake, max_sessions=2, password="hunter2")
    assert sim.status is RunState.FAILED and "3 sessions match" in sim.message
    plan = plan_of(end_idle_postgres_sessions, fake, password="hunter2")
    assert len(plan.changes) == 3
    assert all(c.command.startswith("PGPASSWORD=****** ") for c in plan.changes)
    assert "hunter2" not in repr(plan.as_json()) + repr(fake.calls)
