"""Runbooks reaching hosts through ctx.ssh / ctx.hosts / ctx.ansible, end to end.

The three "hosts" are loopback addresses of one real sshd, so each keeps its demo
service in a folder named after the address the SSH session arrived on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from remote_support import Sshd, remote_processes, wait_until

from selfdrive.config import parse_config
from selfdrive.executor import Executor, RunRequest
from selfdrive.journal import open_journal
from selfdrive.registry import load_registry
from selfdrive.sdk import RunState

BIN = Path(sys.executable).parent

RUNBOOK = '''
from selfdrive import Context, Risk, runbook

HERE = 'd="$HOME/demo-{{ tag }}/$(echo $SSH_CONNECTION | cut -d" " -f3)"; mkdir -p "$d"; '

@runbook(risk=Risk.LOW, domain="web", timeout="1m")
def restart_demo(ctx: Context, tag: str, group: str = "web") -> None:
    """Restart the demo service on every host of a group."""
    web = ctx.hosts(group, max_concurrency=3, max_errors=1)
    status = web.run(HERE + 'cat "$d/pid" 2>/dev/null || echo none', readonly=True)
    ctx.note("pids_before", {h: r.stdout.strip() for h, r in status.results.items()})
    result = web.run(HERE + 'if [ -f "$d/pid" ]; then kill "$(cat "$d/pid")" 2>/dev/null; fi; '
                     'nohup sleep 300 "demo-{{ tag }}-$(basename "$d")" >/dev/null 2>&1 '
                     '</dev/null & echo $! > "$d/pid"')
    if not result.ok:
        raise RuntimeError(f"restart failed on {', '.join(result.failed)}")

@restart_demo.verify(attempts=3, interval="0.2s")
def every_demo_answers(ctx: Context, tag: str, group: str) -> bool:
    check = ctx.hosts(group).run(HERE + 'kill -0 "$(cat "$d/pid")"', readonly=True)
    return check.ok

@runbook(risk=Risk.LOW, timeout="1m")
def whoami_on(ctx: Context, host: str) -> None:
    """Say who we are on one host."""
    ctx.log(ctx.ssh(host).run("id -un", readonly=True, check=True).stdout.strip())
'''


def _project(root: Path, sshd: Sshd, *, hosts: int = 3) -> Path:
    (root / "runbooks").mkdir(parents=True, exist_ok=True)
    (root / "runbooks" / "demo.py").write_text(textwrap.dedent(RUNBOOK))
    lines = ['team = "web-sre"', 'level = "L4"', "", "[ssh]",
             f'known_hosts = "{sshd.known_hosts}"', "", "[inventory.groups]",
             "web = [" + ", ".join(f'"web{i + 1}"' for i in range(hosts)) + "]", ""]
    for i in range(hosts):
        lines += [f"[inventory.hosts.web{i + 1}]", f'address = "{sshd.addresses[i]}"',
                  f"port = {sshd.port}", f'user = "{sshd.user}"', f'key = "{sshd.client_key}"',
                  ""]
    (root / "selfdrive.toml").write_text("\n".join(lines))
    return root


def _pid_files(sshd: Sshd, tag: str, hosts: int = 3) -> dict[str, str | None]:
    home = Path(os.path.expanduser(f"~{sshd.user}"))
    out = {}
    for address in sshd.addresses[:hosts]:
        pid = home / f"demo-{tag}" / address / "pid"
        out[address] = pid.read_text().strip() if pid.exists() else None
    return out


def _executor(root: Path) -> Executor:
    config = parse_config(__import__("tomllib").loads((root / "selfdrive.toml").read_text()),
                          root / "selfdrive.toml")
    return Executor(config, load_registry(config.runbook_dirs, entry_points=False),
                    open_journal(config.journal_path))


TAG = uuid.uuid4().hex[:12]  # this session's demo folders and processes, no one else's


@pytest.fixture
def project(tmp_path: Path, sshd: Sshd) -> Iterator[Path]:
    yield _project(tmp_path / "team", sshd)
    subprocess.run(["pkill", "-u", sshd.user, "-f", f"sleep 300 demo-{TAG}-"], check=False)
    shutil.rmtree(Path(os.path.expanduser(f"~{sshd.user}")) / f"demo-{TAG}",
                  ignore_errors=True)


def test_dry_run_changes_nothing_then_a_run_restarts_all_three(project: Path,
                                                              sshd: Sshd) -> None:
    executor = _executor(project)
    # First run starts the services; remember their pids.
    first = executor.submit(RunRequest(runbook="restart-demo", params={"tag": TAG},
                                         requested_by="t"))
    assert first.run.status is RunState.SUCCEEDED, first.message
    before = _pid_files(sshd, TAG)
    assert all(before.values()), before

    planned = executor.submit(RunRequest(runbook="restart-demo", params={"tag": TAG},
                                         requested_by="t", dry_run=True))
    assert planned.run.status is RunState.PLANNED
    assert _pid_files(sshd, TAG) == before  # dry-run changed nothing on any host
    assert planned.plan.targets == ("web1", "web2", "web3")
    assert len(planned.plan.changes) == 3
    assert all("nohup sleep 300" in c.command for c in planned.plan.changes)

    again = executor.submit(RunRequest(runbook="restart-demo", params={"tag": TAG},
                                         requested_by="t"))
    assert again.run.status is RunState.SUCCEEDED, again.message
    after = _pid_files(sshd, TAG)
    assert all(after[a] and after[a] != before[a] for a in after), (before, after)
    for pid in after.values():
        assert wait_until(lambda p=pid: Path(f"/proc/{p}").exists())
    steps = executor.journal.runs.steps(again.run.id)
    live = [s for s in steps if s.phase == "body" and s.kind == "command" and not s.readonly]
    assert sorted(s.target for s in live) == ["web1", "web2", "web3"]
    assert all(s.status == "ok" for s in live)
    verify = [s for s in steps if s.phase == "verify" and s.kind == "command"]
    assert {s.target for s in verify} == {"web1", "web2", "web3"}


def test_cli_plan_and_run_over_ssh(project: Path, sshd: Sshd) -> None:
    env = {**os.environ, "SELFDRIVE_USER": "oncall"}
    run = subprocess.run([str(BIN / "selfdrive"), "run", "whoami-on", "-p", "host=web2",
                          "--json"], cwd=project, env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["run"]["status"] == "succeeded"
    logs = subprocess.run([str(BIN / "selfdrive"), "logs", record["run"]["id"], "--json"],
                          cwd=project, env=env, capture_output=True, text=True, check=True)
    steps = json.loads(logs.stdout)["steps"]
    assert any(s["kind"] == "log" and s["stdout"] == sshd.user for s in steps)
    assert any(s["kind"] == "command" and s["target"] == "web2" for s in steps)


def test_unknown_host_is_an_error_before_any_action(project: Path, sshd: Sshd) -> None:
    env = {**os.environ, "SELFDRIVE_USER": "oncall"}
    run = subprocess.run([str(BIN / "selfdrive"), "run", "whoami-on", "-p", "host=web9"],
                         cwd=project, env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    assert run.returncode == 2
    assert "unknown host or group 'web9'" in run.stderr
    assert not remote_processes(sshd.user, "id -un")


def test_changed_host_key_fails_the_step_with_a_reason(project: Path, sshd: Sshd,
                                                       tmp_path: Path) -> None:
    bad = tmp_path / "bad_known_hosts"
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    key = other.with_suffix(".pub").read_text().split()
    bad.write_text(f"[{sshd.addresses[0]}]:{sshd.port} {key[0]} {key[1]}\n")
    toml = (project / "selfdrive.toml").read_text().replace(str(sshd.known_hosts), str(bad))
    (project / "selfdrive.toml").write_text(toml)
    outcome = _executor(project).submit(RunRequest(runbook="whoami-on",
                                                   params={"host": "web1"}, requested_by="t"))
    assert outcome.run.status is RunState.FAILED
    assert outcome.exit_code == 1
    assert "web1" in (outcome.run.error or "")
    assert "changed" in (outcome.run.error or "").lower()
