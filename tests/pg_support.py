"""A real PostgreSQL server from Debian's packages, for the tests that need one.

One throw-away cluster per test session (initdb in a tmp folder, as the ``postgres``
user when we are root; loopback only; fsync off), started on first use and stopped at
exit; each test gets a database of its own (``fresh_database``). Password
authentication is on for TCP (scram), so the tests exercise what a team's server asks.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The role the journal connects as, and its password (given through PGPASSWORD).
USER = "journal"
PASSWORD = "pw-" + os.urandom(6).hex()


@dataclass(frozen=True)
class Postgres:
    port: int
    bindir: Path
    folder: Path

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over the cluster's socket folder (no password)."""
        return subprocess.run([str(self.bindir / "psql"), "-X", "-A", "-t", "-q", "-h",
                               str(self.folder), "-p", str(self.port), "-U", "postgres", "-d",
                               database, "-v", "ON_ERROR_STOP=1", "-c", sql],
                              capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()

    def url(self, database: str, *, user: str = USER) -> str:
        """How a team writes it in selfdrive.toml: no password in it."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql "
                    "(.ci/run does it)", pytrace=False)
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_lock = threading.Lock()
_server: Postgres | None = None
_names = itertools.count(1)
#: Every database made, in order (tests/conftest.py checks each test's journals in them).
created: list[str] = []


def server(*, durable: bool = False) -> Postgres:
    """The session's cluster, started on first use. Tests run it with fsync off;
    ``durable`` (the benchmarks) keeps PostgreSQL's own defaults, fsync on."""
    global _server
    with _lock:
        if _server is None:
            _server = _start(durable)
        return _server


def fresh_database(*, durable: bool = False) -> str:
    """A new, empty database owned by the journal role; its name."""
    pg = server(durable=durable)
    name = f"j{os.getpid()}_{next(_names)}"
    pg.psql(f"CREATE DATABASE {name} OWNER {USER}")
    created.append(name)
    return name


def _start(durable: bool) -> Postgres:
    binaries = bindir()
    folder = Path(tempfile.mkdtemp(prefix="selfdrive-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_owner, str(binaries / "initdb"), "-D", str(data), "--auth-local=trust",
                    "--auth-host=scram-sha-256", "-U", "postgres", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    start = subprocess.run([*as_owner, str(binaries / "pg_ctl"), "-D", str(data), "-l",
                            str(folder / "log"), "-o", options, "-w", "-t", "60", "start"],
                           capture_output=True, text=True, timeout=120)
    if start.returncode != 0:
        log = (folder / "log").read_text(errors="replace") if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start:\n{start.stdout}{start.stderr}\n{log}",
                    pytrace=False)

    def stop() -> None:
        subprocess.run([*as_owner, str(binaries / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    pg = Postgres(port, binaries, folder)
    pg.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    return pg
