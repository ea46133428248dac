"""Fixtures for the approval, guardrail, lock, notification and audit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from approvals_support import Team


@pytest.fixture
def team(tmp_path: Path) -> Team:
    """An empty team folder (write its selfdrive.toml and runbooks in the test)."""
    return Team(tmp_path / "team")
