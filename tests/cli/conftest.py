"""Fixtures for the end-to-end CLI tests (helpers live in cli_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import Project, team_config


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """An empty project folder (no selfdrive.toml yet)."""
    return Project(tmp_path / "proj")


@pytest.fixture
def l4(project: Project) -> Project:
    """A project at level L4: LOW and MEDIUM runbooks run autonomously."""
    project.config(team_config("L4"))
    return project
