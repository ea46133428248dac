"""Remote commands that fail, or never start, fail the run unless the runbook says check=False.

Real parts: the loopback sshd, a team known_hosts that knows some of its addresses and
not others (an unknown key is refused before anything is sent), and ansible-runner.
"""

from __future__ import annotations

import os
import textwrap
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from remote_support import Sshd

from selfdrive.config import parse_config
from selfdrive.executor import Executor, RunOutcome, RunRequest
from selfdrive.journal import open_journal
from selfdrive.registry import load_registry
from selfdrive.sdk import RunState

S = RunState

RUNBOOKS = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW, timeout="1m")
def one_host(ctx: Context, host: str, marker: str) -> None:
    """A command on one host, then a local change that must not happen after a failure."""
    ctx.ssh(host).run("true")
    ctx.run("touch {{ marker }}")


@one_host.rollback
def note_rollback(ctx: Context, marker: str) -> None:
    ctx.run("touch {{ marker }}.rolled-back")


@runbook(risk=Risk.LOW, timeout="1m")
def fleet(ctx: Context, group: str, marker: str, tolerate: bool = False) -> None:
    """A fan-out, then a local change."""
    result = ctx.hosts(group, max_errors=1, max_concurrency=1).run(
        "echo {{ tag }} > /dev/null", tag=marker, check=not tolerate)
    ctx.note("failed", list(result.failed))
    ctx.note("skipped", list(result.skipped))
    ctx.run("touch {{ marker }}")


@runbook(risk=Risk.LOW, timeout="2m")
def play(ctx: Context, host: str, path: str, marker: str, tolerate: bool = False) -> None:
    """A playbook whose second task fails on the host."""
    tasks = [{"name": "write the file", "copy": {"dest": path, "content": "written\\n"}},
             {"name": "then fail", "command": "false"}]
    result = ctx.ansible([{"hosts": "all", "gather_facts": False, "tasks": tasks}],
                         hosts=host, check=not tolerate)
    ctx.note("playbook_ok", result.ok)
    ctx.run("touch {{ marker }}")
'''


def _team(root: Path, sshd: Sshd, known: list[int]) -> Path:
    """Hosts web1 … web3 on the sshd; the team's known_hosts lists only ``known`` of them."""
    root.mkdir(parents=True)
    (root / "runbooks").mkdir()
    (root / "runbooks" / "check.py").write_text(textwrap.dedent(RUNBOOKS))
    lines = sshd.known_hosts.read_text().splitlines()
    chosen = [line for line in lines
              if any(line.startswith(f"[{sshd.addresses[i]}]:") for i in known)]
    assert len(chosen) == len(known), lines
    (root / "known_hosts").write_text("\n".join(chosen) + "\n")
    config = ['team = "t"', 'level = "L4"', "entry_points = false",
              "[ssh]", 'known_hosts = "known_hosts"', "connect_timeout = 5",
              "[inventory.groups]", 'web = ["web1", "web2", "web3"]']
    for i in range(3):
        config += [f"[inventory.hosts.web{i + 1}]", f'address = "{sshd.addresses[i]}"',
                   f"port = {sshd.port}", f'user = "{sshd.user}"',
                   f'key = "{sshd.client_key}"']
    (root / "selfdrive.toml").write_text("\n".join(config) + "\n")
    return root


@pytest.fixture
def submit(tmp_path: Path, sshd: Sshd) -> Iterator[object]:
    journals = []

    def run(known: list[int], runbook: str, **params: object) -> RunOutcome:
        root = tmp_path / f"team-{uuid.uuid4().hex[:6]}"
        _team(root, sshd, known)
        path = root / "selfdrive.toml"
        config = parse_config(tomllib.loads(path.read_text()), path)
        journal = open_journal(config.journal_path)
        journals.append(journal)
        executor = Executor(config, load_registry(config.runbook_dirs, entry_points=False),
                            journal)
        return executor.submit(RunRequest(runbook=runbook, params=params, requested_by="t"))

    yield run
    for journal in journals:
        journal.close()


def test_a_command_that_never_started_fails_the_run(submit, tmp_path: Path) -> None:
    marker = tmp_path / "after"
    outcome = submit([1, 2], "one-host", host="web1", marker=str(marker))  # web1's key unknown
    assert outcome.exit_code == 1, outcome.message
    assert outcome.run.status is S.ROLLED_BACK
    error = outcome.run.error or ""
    assert error.startswith("true failed on web1: not started: "), error
    assert "host key" in error
    assert not marker.exists()  # the body stopped at the refused command
    assert Path(f"{marker}.rolled-back").exists()


def test_a_known_host_runs_and_the_run_succeeds(submit, tmp_path: Path) -> None:
    marker = tmp_path / "after"
    outcome = submit([0], "one-host", host="web1", marker=str(marker))
    assert outcome.run.status is S.SUCCEEDED, outcome.message
    assert marker.exists()


def test_a_fan_out_with_a_failed_host_raises_naming_it(submit, tmp_path: Path) -> None:
    marker = tmp_path / "after"
    outcome = submit([0, 2], "fleet", group="web", marker=str(marker))  # web2's key unknown
    assert outcome.exit_code == 1 and outcome.run.status is S.FAILED, outcome.message
    error = outcome.run.error or ""
    assert error.startswith(f"echo {marker} > /dev/null failed on 1 of 3 host(s): "
                            f"web2 (not started: "), error
    # then where in the runbook the fan-out was run
    assert "; not started: web3 (max_errors 1) (at " in error, error
    assert not marker.exists()


def test_a_fan_out_with_check_false_returns_its_failures(submit, tmp_path: Path) -> None:
    marker = tmp_path / "after"
    outcome = submit([0, 2], "fleet", group="web", marker=str(marker), tolerate=True)
    assert outcome.run.status is S.SUCCEEDED, outcome.message
    assert marker.exists()


@pytest.mark.slow
def test_a_failed_playbook_raises_unless_check_false(submit, tmp_path: Path,
                                                     sshd: Sshd) -> None:
    home = Path(os.path.expanduser(f"~{sshd.user}"))
    target = home / f"selfdrive-check-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "after"
    try:
        outcome = submit([0], "play", host="web1", path=str(target), marker=str(marker))
        assert outcome.run.status is S.FAILED, outcome.message
        error = outcome.run.error or ""
        assert error.startswith("ansible-playbook inline playbook failed: web1: then fail"), error
        assert target.read_text() == "written\n"  # the playbook did run, and failed after
        assert not marker.exists()

        tolerated = submit([0], "play", host="web1", path=str(target), marker=str(marker),
                           tolerate=True)
        assert tolerated.run.status is S.SUCCEEDED, tolerated.message
        assert marker.exists()
    finally:
        target.unlink(missing_ok=True)
