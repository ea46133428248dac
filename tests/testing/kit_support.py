"""A real team folder for the kit's and the library's tests, and the real side of each
scenario: plans and runs through the real Executor against real targets.

Every scenario runs twice: here, for real (local shell, loopback sshd, Ansible,
PostgreSQL), and through the testing kit with fakes. Equal plan hashes are what keep
the fakes from drifting.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selfdrive.config import TeamConfig, parse_config
from selfdrive.executor import Executor, Plan, RunOutcome, RunRequest
from selfdrive.journal import SqliteJournal, open_journal
from selfdrive.registry import Registry, load_registry
from selfdrive.sdk import Runbook

BIN = Path(sys.executable).parent
SELFDRIVE = str(BIN / "selfdrive")
REMOTE_TESTS = Path(__file__).resolve().parents[1] / "remote"


def approve(*_: object) -> bool:
    return True


class Team:
    """A team folder: selfdrive.toml, runbook files, a journal; the real Executor over it."""

    def __init__(self, root: Path, *, level: str = "L4", library: bool = False,
                 inventory: Mapping[str, Any] | None = None,
                 known_hosts: Path | None = None) -> None:
        self.root = root
        self.runbooks = root / "runbooks"
        self.runbooks.mkdir(parents=True, exist_ok=True)
        lines = ['team = "kit-tests"', f'level = "{level}"', "entry_points = false",
                 f"library = {'true' if library else 'false'}",
                 # HIGH runs are approved by the requester in these tests.
                 "[policy]", 'separation_of_duties = "CRITICAL"',
                 "[guardrails]", "rate_limit_per_runbook = 1000", "rate_limit_total = 1000"]
        if known_hosts is not None:
            lines += ["[ssh]", f'known_hosts = "{known_hosts}"']
        inventory = inventory or {}
        for name, host in inventory.get("hosts", {}).items():
            lines.append(f"[inventory.hosts.{name}]")
            lines += [f"{key} = {_toml(value)}" for key, value in host.items()]
        if inventory.get("groups"):
            lines.append("[inventory.groups]")
            lines += [f"{group} = {_toml(hosts)}" for group, hosts in inventory["groups"].items()]
        (root / "selfdrive.toml").write_text("\n".join(lines) + "\n")
        self._journals: list[SqliteJournal] = []

    # -- building ------------------------------------------------------------------

    def write(self, source: str, name: str = "book.py") -> Path:
        path = self.runbooks / name
        path.write_text(textwrap.dedent(source).lstrip())
        return path

    @property
    def config(self) -> TeamConfig:
        path = self.root / "selfdrive.toml"
        return parse_config(tomllib.loads(path.read_text()), path)

    def registry(self) -> Registry:
        registry = load_registry(self.config.runbook_dirs, entry_points=False)
        assert registry.problems == (), registry.problems
        return registry

    def runbook(self, name: str) -> Runbook:
        return self.registry().get(name)

    def executor(self) -> Executor:
        journal = open_journal(self.config.journal_path)
        self._journals.append(journal)
        return Executor(self.config, self.registry(), journal)

    # -- the real side -------------------------------------------------------------

    def plan(self, name: str, **params: Any) -> Plan:
        """What `selfdrive plan NAME -p …` computes and journals (a dry-run request)."""
        outcome = self.executor().submit(RunRequest(runbook=name, params=params,
                                                    requested_by="alice", dry_run=True))
        assert outcome.run.status.value == "planned", outcome.message
        return outcome.plan

    def run(self, name: str, **params: Any) -> RunOutcome:
        """A real run, approved at the "terminal" when policy asks for a human."""
        return self.executor().submit(RunRequest(runbook=name, params=params,
                                                 requested_by="alice"), approver=approve)

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        """The live run's steps from the journal file (not the plan's)."""
        conn = sqlite3.connect(self.config.journal_path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(
                "SELECT * FROM steps WHERE run_id = ? AND phase NOT LIKE 'plan:%' ORDER BY id",
                (run_id,))]
        finally:
            conn.close()

    def close(self) -> None:
        for journal in self._journals:
            journal.close()


def _toml(value: object) -> str:
    """Strings, numbers, booleans and lists of them (JSON's spelling is TOML's here)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)


def command_steps(steps: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    """(phase, target, command) of the commands a run sent, journal or simulation alike."""
    return [(s["phase"], s["target"], s["command"]) for s in steps if s["kind"] == "command"]
