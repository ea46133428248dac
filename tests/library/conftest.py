"""Fixtures for the runbook library's tests: a team with `library = true`, the loopback
sshd (3 hosts) and helpers from the kit's tests (tests/testing/kit_support.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "testing"), str(TESTS / "remote")]

from kit_support import Team  # noqa: E402
from remote_support import Sshd, start_sshd, stop_sshd  # noqa: E402


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    """A team whose only runbooks are the library's."""
    t = Team(tmp_path / "team", library=True)
    yield t
    t.close()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A loopback sshd on 127.0.0.2 … 127.0.0.4 (FAILS with its log if it cannot start)."""
    server, handle = start_sshd(tmp_path_factory.mktemp("library-sshd"), 3)
    try:
        yield server
    finally:
        stop_sshd(handle)


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd) -> Iterator[Team]:
    """The library and an inventory on the loopback sshd: web1 … web3, groups web and pair."""
    inventory = {"hosts": {f"web{i + 1}": {"address": sshd.addresses[i], "port": sshd.port,
                                           "user": sshd.user, "key": str(sshd.client_key)}
                           for i in range(3)},
                 "groups": {"web": ["web1", "web2", "web3"], "pair": ["web1", "web2"]}}
    t = Team(tmp_path / "fleet", library=True, inventory=inventory,
             known_hosts=sshd.known_hosts)
    yield t
    t.close()
