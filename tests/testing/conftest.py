"""Fixtures for the testing kit's own tests: a real team folder and the loopback sshd.

The sshd comes from scripts/loopback-sshd.sh through tests/remote/remote_support.py;
if it cannot start, the tests that need it FAIL with its log (nothing is skipped).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))

from kit_support import Team
from remote_support import Sshd, start_sshd, stop_sshd


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    t = Team(tmp_path / "team")
    yield t
    t.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A loopback sshd on 127.0.0.2 … 127.0.0.4."""
    server, handle = start_sshd(tmp_path_factory.mktemp("kit-sshd"), 3)
    try:
        yield server
    finally:
        stop_sshd(handle)
