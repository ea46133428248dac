"""Fixtures for the remote-target tests: a real OpenSSH server on loopback.

One session-scoped sshd (scripts/loopback-sshd.sh) listens on 127.0.0.2 … 127.0.0.13
on a free port, with its own host key, known_hosts and client key under a tmp folder.
If it cannot start, every test using it FAILS with the server's log: nothing is
skipped silently (CI installs openssh-server; the script installs it when missing).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The approval tests' CLI helpers (a team folder driven through the real `selfdrive`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "approvals"))

from remote_support import HOSTS, Sshd, start_sshd, stop_sshd

from selfdrive.targets.ssh import SshTarget


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """The loopback sshd with 12 addresses (127.0.0.2 … 127.0.0.13)."""
    directory = tmp_path_factory.mktemp("sshd")
    server, handle = start_sshd(directory, HOSTS)
    try:
        yield server
    finally:
        stop_sshd(handle)


@pytest.fixture
def targets() -> Iterator[list[SshTarget]]:
    """Collects targets a test makes and closes them at its end."""
    made: list[SshTarget] = []
    yield made
    for t in made:
        with contextlib.suppress(Exception):
            t.close()


