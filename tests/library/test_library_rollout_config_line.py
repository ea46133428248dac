"""rollout-config-line through real Ansible over the loopback sshd (web1 … web3): the
canary first, then the rest; a failing canary stops the rest and is rolled back."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit_support import Team

from selfdrive.library.rollout_config_line import BACKUP_TASK, CHANGE_TASK, rollout_config_line
from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, plan_of, simulate

pytestmark = pytest.mark.slow
HOSTS = ["web1", "web2", "web3"]


@pytest.fixture
def files(fleet: Team) -> Iterator[Path]:
    """~sdtest/rollout-PID/<host>/app.conf holding a=1, b=1, owned by the SSH user."""
    ssh_user = pwd.getpwnam(fleet.config.inventory.hosts["web1"].user or "sdtest")
    root = Path(ssh_user.pw_dir) / f"selfdrive-rollout-{os.getpid()}"
    for host in HOSTS:
        (root / host).mkdir(parents=True, exist_ok=True)
        (root / host / "app.conf").write_text("a=1\nb=1\n")
    for path in [root, *root.rglob("*")]:
        os.chown(path, ssh_user.pw_uid, ssh_user.pw_gid)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _content(root: Path) -> dict[str, str]:
    return {h: (root / h / "app.conf").read_text() for h in HOSTS}


def _ansible_targets(fleet: Team, run_id: str) -> list[str]:
    return [s["target"] for s in fleet.steps(run_id) if s["kind"] == "ansible"]


def test_canary_first_then_the_rest_in_batches(fleet: Team, files: Path) -> None:
    params = {"group": "web", "path": f"{files}/{{host}}/app.conf", "line": "a=2",
              "regexp": "^a=", "batch_size": 2}
    outcome = fleet.run("rollout-config-line", **params)
    assert outcome.run.status is RunState.SUCCEEDED, outcome.message
    assert _content(files) == {h: "a=2\nb=1\n" for h in HOSTS}
    assert _ansible_targets(fleet, outcome.run.id) == ["web1", "web2,web3"]  # canary first
    assert all((files / h / "app.conf.selfdrive-prev").read_text() == "a=1\nb=1\n"
               for h in HOSTS)
    # Ansible's check mode predicted both tasks on every host.
    predicted = sorted((c.target, c.command) for c in outcome.plan.changes
                       if c.kind == "ansible-change")
    assert predicted == sorted((h, f"ansible inline playbook: {task}") for h in HOSTS
                               for task in (BACKUP_TASK, CHANGE_TASK))


def test_a_failing_canary_stops_the_rest_and_is_rolled_back(fleet: Team, files: Path) -> None:
    params = {"group": "pair", "path": f"{files}/{{host}}/app.conf", "line": "a=2",
              "regexp": "^a=",
              # The canary's health check: fails on web1 (its path names it).
              "check_command": 'case "$1" in */web1/*) exit 1;; esac'}
    outcome = fleet.run("rollout-config-line", **params)
    assert outcome.run.status is RunState.ROLLED_BACK and outcome.exit_code == 1, \
        outcome.message
    assert _ansible_targets(fleet, outcome.run.id) == ["web1"]  # the rest never started
    assert _content(files) == {h: "a=1\nb=1\n" for h in HOSTS}  # web1 restored
    assert not list(files.rglob("*.selfdrive-prev"))

    # The plan it ran on (check mode, one host per call, so Ansible's order is fixed) is
    # the plan the fakes give when they predict what Ansible predicted, diffs included.
    diffs = {(CHANGE_TASK, h): (f"--- before: {files}/{h}/app.conf (content)\n"
                                f"+++ after: {files}/{h}/app.conf (content)\n"
                                "@@ -1,2 +1,2 @@\n-a=1\n+a=2\n b=1\n") for h in HOSTS}
    fake = FakeContext(config=fleet.config)
    fake.on_ansible("inline playbook", check=True, changed=[BACKUP_TASK, CHANGE_TASK],
                    diff=diffs)
    plan = plan_of(rollout_config_line, fake, **params)
    assert [(c.phase, c.target, c.command, c.text) for c in plan.changes] == [
        (c.phase, c.target, c.command, c.text) for c in outcome.plan.changes]
    assert plan.hash == outcome.plan.hash


def test_max_errors_stops_new_batches() -> None:
    fake = FakeContext(groups={"web": [f"w{i}" for i in range(1, 8)]}, default_ok=True)
    fake.on_ansible(check=True, changed=[CHANGE_TASK])
    fake.on_ansible(check=False, changed=[CHANGE_TASK], failed={"w3": "boom", "w4": "boom"})
    sim = simulate(rollout_config_line, fake, group="web", path="/etc/app.conf", line="x=1",
                   batch_size=2, max_errors=2)
    assert sim.status is RunState.ROLLED_BACK
    assert "2 host(s) failed" in sim.message and "2 host(s) not started" in sim.message
    live = [c.hosts for c in fake.ansible_calls if not c.check]
    assert live == [("w1",), ("w2", "w3"), ("w4", "w5")]  # w6, w7 never started
