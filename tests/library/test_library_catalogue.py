"""The library as a team sees it: `library = true` loads it, and lint finds nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from kit_support import SELFDRIVE, Team

from selfdrive.config.model import LIBRARY_DIR
from selfdrive.sdk import Risk

NAMES = {"check-cert-expiry", "end-idle-postgres-sessions", "free-disk-space",
         "kill-runaway-process", "reload-nginx-config", "restart-service",
         "rollout-config-line", "tame-runaway-log"}


def _sd(team: Team, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SELFDRIVE, *args], cwd=team.root, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SELFDRIVE_USER": "alice"},
                          stdin=subprocess.DEVNULL)


def test_the_config_key_loads_the_library_and_lint_is_clean(team: Team) -> None:
    lint = _sd(team, "lint", "--json")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert json.loads(lint.stdout) == {"findings": [], "runbooks": len(NAMES)}
    listed = json.loads(_sd(team, "list", "--json").stdout)
    assert {r["name"] for r in listed["runbooks"]} == NAMES
    assert all(r["location"].startswith(str(LIBRARY_DIR)) for r in listed["runbooks"])


def test_every_library_runbook_is_documented_typed_and_verified(team: Team) -> None:
    registry = team.registry()
    assert {rb.name for rb in registry} == NAMES
    for rb in registry:
        assert len(rb.description.splitlines()) >= 5, rb.name  # reads as documentation
        assert "library" in rb.tags and rb.domain, rb.name
        assert rb.preconditions, rb.name
        assert rb.risk == Risk.READ_ONLY or rb.verifications, rb.name
        assert all(p.annotation is not None for p in rb.params), rb.name
    with_rollback = {rb.name for rb in registry if rb.rollbacks}
    assert with_rollback == {"check-cert-expiry", "reload-nginx-config", "rollout-config-line",
                             "tame-runaway-log"}


def test_without_the_key_the_library_stays_out(tmp_path: Path) -> None:
    team = Team(tmp_path / "plain")
    assert len(team.registry()) == 0
    team.close()


def test_the_examples_in_docs_library_md_are_valid_requests(team: Team) -> None:
    """Each `selfdrive plan|run NAME -p …` line of the catalogue passes validation."""
    import shlex

    from selfdrive.cli.session import parse_params

    docs = Path(__file__).resolve().parents[2] / "docs" / "library.md"
    registry = team.registry()
    examples = [line for line in docs.read_text().splitlines()
                if line.startswith(("selfdrive plan ", "selfdrive run "))]
    assert {shlex.split(line)[2] for line in examples} == NAMES
    for line in examples:
        words = shlex.split(line)
        pairs = tuple(words[i + 1] for i, w in enumerate(words) if w == "-p")
        registry.get(words[2]).validate_params(parse_params(pairs))
