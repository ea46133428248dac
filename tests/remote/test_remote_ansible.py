"""run_playbook through ansible-runner against the loopback sshd: check mode, real runs,
strict host keys, and no secret left on disk."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from remote_support import Sshd, cmd, remote_processes, wait_until

from selfdrive.targets.ansible import AnsibleEvent, run_playbook
from selfdrive.targets.ssh import SshTarget

pytestmark = pytest.mark.slow


def lineinfile_play(path: str) -> list[dict[str, object]]:
    return [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "set a", "lineinfile": {"path": path, "regexp": "^a=", "line": "a=2"}},
        {"name": "a command", "command": "true"},
    ]}]


@pytest.fixture
def remote_file(sshd: Sshd) -> tuple[Path, SshTarget]:
    """A file owned by the sshd user, holding ``a=1``."""
    home = Path(os.path.expanduser(f"~{sshd.user}"))
    path = home / f"selfdrive-ansible-{uuid.uuid4().hex[:8]}.conf"
    t = sshd.target(0)
    assert t.run(cmd(f"printf 'a=1\\nb=1\\n' > {path}"), timeout=10).ok
    yield path, t
    t.run(cmd(f"rm -f {path}"), timeout=10)
    t.close()


def test_check_mode_predicts_the_change_with_a_diff_and_touches_nothing(
        sshd: Sshd, remote_file: tuple[Path, SshTarget], tmp_path: Path) -> None:
    path, _ = remote_file
    events: list[AnsibleEvent] = []
    r = run_playbook(lineinfile_play(str(path)), [sshd.host(0)], known_hosts=sshd.known_hosts,
                     check=True, timeout=120, on_event=events.append, private_root=tmp_path)
    assert r.ok and r.rc == 0 and r.status == "successful" and r.check, (r.error, r.stdout)
    # The command is skipped in check mode: a change no diff can show, so a possible one.
    assert [(c.host, c.task, c.unpredictable) for c in r.changes] == [
        ("h1", "set a", False), ("h1", "a command", True)]
    assert r.changes[1].diff == "command: true"
    diff = r.changes[0].diff
    assert "-a=1\n" in diff and "+a=2\n" in diff
    assert path.read_text() == "a=1\nb=1\n"  # untouched
    statuses = {(t.host, t.task): t.status for t in r.tasks}
    assert statuses == {("h1", "set a"): "changed", ("h1", "a command"): "skipped"}
    assert r.hosts["h1"].changed == 1 and r.hosts["h1"].skipped == 1
    assert any(e.status == "changed" and e.diff == diff for e in events)
    assert list(tmp_path.iterdir()) == []  # the private data dir is gone


def test_real_run_changes_the_file_and_reports_it(
        sshd: Sshd, remote_file: tuple[Path, SshTarget], tmp_path: Path) -> None:
    path, _ = remote_file
    r = run_playbook(lineinfile_play(str(path)), [sshd.host(0)], known_hosts=sshd.known_hosts,
                     check=False, timeout=120, pipelining=True, private_root=tmp_path)
    assert r.ok, (r.error, r.failures, r.stdout)
    assert path.read_text() == "a=2\nb=1\n"
    assert [(c.host, c.task) for c in r.changes] == [("h1", "set a"), ("h1", "a command")]
    assert "+a=2" in r.changes[0].diff
    assert r.failures == {}
    assert list(tmp_path.iterdir()) == []


def test_unknown_host_key_makes_the_host_unreachable(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    runner_tmp = tmp_path / "runner"
    runner_tmp.mkdir()
    play = [{"hosts": "all", "gather_facts": False, "tasks": [{"name": "ping", "ping": {}}]}]
    r = run_playbook(play, [sshd.host(2)], known_hosts=empty, timeout=120, private_root=runner_tmp)
    assert not r.ok and r.status == "failed"
    assert r.hosts["h3"].unreachable == 1
    [failure] = r.failures["h3"]
    assert failure.startswith("ping: unreachable")
    assert f"No ED25519 host key is known for [{sshd.addresses[2]}]:{sshd.port}" in failure
    assert "strict checking" in failure
    assert empty.read_text() == ""


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            try:
                if needle in p.read_bytes():
                    found.append(p)
            except OSError:
                continue
    return found


def test_a_secret_in_extravars_leaves_no_trace_on_disk(sshd: Sshd, tmp_path: Path) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    runner_tmp = tmp_path / "runner"
    runner_tmp.mkdir()
    during: list[tuple[list[Path], list[Path]]] = []
    events: list[AnsibleEvent] = []

    def on_event(event: AnsibleEvent) -> None:
        events.append(event)
        if event.event == "runner_on_ok" and not during:
            during.append((_files_containing(runner_tmp, secret.encode()),
                           _files_containing(runner_tmp, sshd.addresses[3].encode())))

    play = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "show it", "debug": {"msg": "token is {{ token }}"}},
        {"name": "use it", "command": "echo {{ token }}"},
    ]}]
    r = run_playbook(play, [sshd.host(3)], known_hosts=sshd.known_hosts,
                     extravars={"token": secret}, secrets=[secret], timeout=120,
                     on_event=on_event, private_root=runner_tmp)
    assert r.ok, (r.error, r.failures)
    # While it ran, the private data dir held the run's files (the scan reads them: the
    # inventory names the host), but none held the secret: ansible-playbook had read the
    # extra variables, and its output and events stay in memory.
    [(secret_files, inventory_files)] = during
    assert inventory_files, "expected the inventory among the runner's files"
    assert secret_files == []
    # ... and afterwards nothing under the runner's tmp root holds it, nor the results.
    assert list(runner_tmp.iterdir()) == []
    assert _files_containing(tmp_path, secret.encode()) == []
    local_ansible = Path.home() / ".ansible"
    if local_ansible.exists():
        assert _files_containing(local_ansible, secret.encode()) == []
    assert secret not in r.stdout and "token is ******" in r.stdout
    assert all(secret not in f"{e.stdout}{e.message}{e.diff}" for e in events)
    assert any("token is ******" in e.stdout for e in events)


def test_timeout_stops_the_run_and_the_task_in_flight(sshd: Sshd, tmp_path: Path) -> None:
    """ansible-runner alone would kill only ansible-playbook's group and return ~5 s late,
    while Ansible's worker and its ssh went on running the task."""
    play = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "hang", "command": "sleep 71.5"}, {"name": "never", "ping": {}}]}]
    started = time.monotonic()
    r = run_playbook(play, [sshd.host(4)], known_hosts=sshd.known_hosts, timeout=2,
                     private_root=tmp_path)
    elapsed = time.monotonic() - started
    assert r.status == "timeout" and r.timed_out and not r.ok
    assert r.error == "the playbook timed out after 2s"
    assert 2 <= elapsed < 4, elapsed
    assert r.warnings and r.warnings[0].startswith("stopped the run (timeout) and killed")
    assert not [t for t in r.tasks if t.task == "never"]
    # Without pipelining Ansible's ssh has a pty: killing it ends the remote command.
    assert wait_until(lambda: not remote_processes(sshd.user, "sleep 71.5"), timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_should_stop_cancels_the_run(sshd: Sshd, tmp_path: Path) -> None:
    play = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "hang", "command": "sleep 72.5"}]}]
    began = time.monotonic()
    r = run_playbook(play, [sshd.host(5)], known_hosts=sshd.known_hosts, timeout=60,
                     should_stop=lambda: time.monotonic() - began > 1.5, private_root=tmp_path)
    assert r.status == "canceled" and r.error == "the playbook was canceled"
    assert time.monotonic() - began < 4
    assert wait_until(lambda: not remote_processes(sshd.user, "sleep 72.5"), timeout=5)
