"""restart-service: a real process (an HTTP server with a pidfile) restarted locally and
over the loopback sshd, verified from the outside; failure paths with fakes."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit_support import Team
from remote_support import Sshd, wait_until

from selfdrive.library.restart_service import restart_service
from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, plan_of, simulate

# A "service" without systemd: restart = stop the pid in the pidfile, start a new one.
SERVICE = """#!/bin/bash
set -u
dir=$1 port=$2
if [ -f "$dir/pid" ]; then
    old=$(cat "$dir/pid"); kill "$old" 2>/dev/null
    while kill -0 "$old" 2>/dev/null; do sleep 0.05; done
fi
cd "$dir" || exit 1
nohup python3 -m http.server "$port" --bind 127.0.0.1 >"$dir/log" 2>&1 </dev/null &
echo $! > "$dir/pid"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid(folder: Path) -> int:
    return int((folder / "pid").read_text())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    folder = tmp_path / "demo"
    folder.mkdir()
    script = tmp_path / "svc.sh"
    script.write_text(SERVICE)
    script.chmod(0o755)
    port = _free_port()
    command = f"{script} {folder} {port}"
    subprocess.run(["bash", "-c", command], check=True, timeout=10)
    yield folder, port, command
    subprocess.run(["bash", "-c", f'kill "$(cat {folder}/pid)"'], check=False)


def test_a_real_restart_gets_a_new_process_that_answers(team: Team,
                                                        service: tuple[Path, int, str]) -> None:
    folder, port, command = service
    before = _pid(folder)
    params = {"service": "demo", "restart_command": command, "pidfile": str(folder / "pid"),
              "health_url": f"http://127.0.0.1:{port}/"}
    outcome = team.run("restart-service", **params)
    assert outcome.run.status is RunState.SUCCEEDED, outcome.message
    after = _pid(folder)
    assert after != before and _alive(after) and not _alive(before)
    curl = subprocess.run(["curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                          check=False)
    assert curl.returncode == 0
    # The plan it was approved on, and the same plan computed with fakes.
    fake = FakeContext().on(f"cat -- {folder}/pid", stdout=f"{before}\n")
    assert plan_of(restart_service, fake, **params).hash == outcome.plan.hash
    assert [c.command for c in outcome.plan.changes] == [
        f"sh -c {shlex.quote(command)} sh demo"]


def test_a_restart_over_ssh_on_one_inventory_host(fleet: Team, sshd: Sshd) -> None:
    user = pwd.getpwnam(sshd.user)
    home = Path(user.pw_dir)
    folder = home / f"selfdrive-svc-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    script = folder / "svc.sh"
    script.write_text(SERVICE)
    script.chmod(0o755)
    for path in (folder, script):
        os.chown(path, user.pw_uid, user.pw_gid)
    port = _free_port()
    command = f"{script} {folder} {port}"
    params = {"service": "demo", "host": "web2", "restart_command": command,
              "pidfile": str(folder / "pid"), "health_url": f"http://127.0.0.1:{port}/"}
    try:
        real_plan = fleet.plan("restart-service", **params)
        fake = FakeContext(config=fleet.config)
        fake.on(f"cat -- {folder}/pid", target="web2", exit_code=1, stderr="No such file")
        assert plan_of(restart_service, fake, **params).hash == real_plan.hash
        assert real_plan.targets == ("web2",)

        outcome = fleet.run("restart-service", **params)  # nothing ran yet: this starts it
        assert outcome.run.status is RunState.SUCCEEDED, outcome.message
        first = _pid(folder)
        again = fleet.run("restart-service", **params)
        assert again.run.status is RunState.SUCCEEDED, again.message
        second = _pid(folder)
        assert second != first and wait_until(lambda: not _alive(first))
        owner = Path(f"/proc/{second}").stat().st_uid
        assert owner == user.pw_uid  # it ran as the SSH user, on "web2"
        targets = {s["target"] for s in fleet.steps(again.run.id) if s["kind"] == "command"}
        assert targets == {"web2"}
    finally:
        subprocess.run(["bash", "-c", f'kill "$(cat {folder}/pid)" 2>/dev/null'], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _systemd(fake: FakeContext, *, active: list[int]) -> FakeContext:
    fake.on("systemctl cat -- nginx.service", stdout="# /lib/systemd/system/nginx.service\n")
    fake.on("sh -c 'systemctl restart -- \"$1\"' sh nginx.service")
    for code in active:
        fake.on("sh -c 'systemctl is-active --quiet -- \"$1\"' sh nginx.service",
                exit_code=code, times=1)
    return fake


def test_systemd_by_default_and_a_slow_start_is_waited_for() -> None:
    sim = simulate(restart_service, _systemd(FakeContext(), active=[3, 3, 0]),
                   service="nginx.service")
    assert sim.ok and sim.attempts("the_service_answers") == 3
    assert sim.changes == ["sh -c 'systemctl restart -- \"$1\"' sh nginx.service"]


def test_a_service_that_never_answers_fails_verification_without_rollback() -> None:
    sim = simulate(restart_service, _systemd(FakeContext(), active=[3] * 10),
                   service="nginx.service")
    assert sim.status is RunState.VERIFICATION_FAILED and sim.exit_code == 5
    assert sim.attempts("the_service_answers") == 10 and sim.rollback_steps == ()
    assert "no rollback declared" in sim.message


def test_a_custom_restart_needs_a_health_check_and_unknown_units_stop_early() -> None:
    sim = simulate(restart_service, FakeContext(), service="app", restart_command="true")
    assert sim.status is RunState.PRECONDITION_FAILED and "health_url" in sim.message
    unknown = FakeContext().on("systemctl cat -- ghost", exit_code=1)
    assert simulate(restart_service, unknown, service="ghost").exit_code == 4
