"""Fixtures for the learning tests (helpers live in learning_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from learning_support import Team


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    """An empty team folder at level L4 (write its runbooks in the test)."""
    t = Team(tmp_path / "team")
    yield t
    t.close()
