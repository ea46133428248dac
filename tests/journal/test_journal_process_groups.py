"""A dead run's command is ended before its lock is released, and only that command.

Each test records, the way the executor does with a command's intent, the process group
a real process runs in, under a run whose owner is then killed with -9; recovery (the
next open of the journal) must end that group, and release the run's lock only once
nothing of it is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_support import gone_soon, pid_alive

from selfdrive import RunState
from selfdrive.journal import SqliteJournal, open_journal, process_identity

S = RunState

DEAD_RUNNER = """
import sys, time
from pathlib import Path
from selfdrive.journal import open_journal
from selfdrive.sdk.vocabulary import RunState

path, group = Path(sys.argv[1]), sys.argv[2]
j = open_journal(path)
j.runs.create({"id": "run-dead", "runbook": "restart", "mode": "autonomous",
              "requested_by": "alice", "params": {}}, actor="alice")
j.runs.transition("run-dead", RunState.DECIDED, actor="alice")
assert j.locks.acquire("web1", "run-dead", ttl=3600) is None
j.runs.transition("run-dead", RunState.RUNNING, actor="alice")
j.runs.begin_step("run-dead", phase="body", kind="command", target="local",
             command="restart web1", pgroup=group)
print("ready", flush=True)
time.sleep(60)
"""


def _command_group() -> tuple[subprocess.Popen[bytes], list[int]]:
    """A command as the local target starts one: a shell leading its own group, with a
    child; returns the shell and every pid of the group."""
    shell = subprocess.Popen(["bash", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE,
                             start_new_session=True)
    assert shell.stdout is not None
    child = int(shell.stdout.readline())
    return shell, [shell.pid, child]


def _die_holding(path: Path, group: str) -> None:
    """A runner that records a locked run in flight with ``group``, then is killed -9."""
    runner = subprocess.Popen([sys.executable, "-c", DEAD_RUNNER, str(path), group],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None and runner.stdout.readline().strip() == "ready"
    finally:
        runner.kill()
        runner.wait()
        assert runner.stdout is not None
        runner.stdout.close()


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _new_run(journal: SqliteJournal, run_id: str) -> None:
    journal.runs.create({"id": run_id, "runbook": "restart", "mode": "autonomous",
                        "requested_by": "bob", "params": {}}, actor="bob")


def test_recovery_kills_the_recorded_group_before_it_releases_the_lock(path, reap):
    shell, pids = _command_group()
    reap.append(shell)
    group = process_identity(shell.pid)
    _die_holding(path, group)
    assert all(pid_alive(p) for p in pids), "a dead runner alone leaves its command running"

    journal = open_journal(path)  # recovery
    try:
        assert all(gone_soon(p, 0.1) for p in pids), "recovery returns once they are gone"
        run = journal.runs.get("run-dead")
        assert run.status is S.INTERRUPTED and "outlived" not in (run.error or "")
        [step] = journal.runs.steps("run-dead")
        assert (step.status, step.pgroup) == ("unknown", group)
        _new_run(journal, "run-next")
        assert journal.locks.acquire("web1", "run-next", ttl=60) is None
    finally:
        journal.close()


def test_before_recovery_a_dead_runs_live_command_holds_its_lock(path, reap):
    """A process that takes the lock between the runner's death and any recovery (a
    long-lived receiver or scheduler) must not start beside the command either."""
    shell, pids = _command_group()
    reap.append(shell)
    _die_holding(path, process_identity(shell.pid))
    journal = open_journal(path, recover=False)
    try:
        _new_run(journal, "run-next")
        assert journal.locks.acquire("web1", "run-next", ttl=60) == "run-dead"
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        assert all(gone_soon(p) for p in pids)
        assert journal.locks.acquire("web1", "run-next", ttl=60) is None
    finally:
        journal.close()


def test_a_group_recovery_may_not_kill_keeps_the_lock_until_it_is_gone(reap):
    """As when a command ran ``sudo``: the user recovering cannot signal it. The run is
    still interrupted, its lock stays (and says why), and goes when the group does."""
    folder = Path(tempfile.mkdtemp(prefix="selfdrive-pgroup-"))
    os.chmod(folder, 0o777)
    path = folder / "journal.db"
    shell, pids = _command_group()  # as root
    reap.append(shell)
    group = process_identity(shell.pid)
    _die_holding(path, group)
    for file in folder.iterdir():
        os.chmod(file, 0o666)

    recover_as_nobody = (  # imports first: the interpreter's files are root's alone
        "import os, sys, tempfile\n"
        "from pathlib import Path\n"
        "from selfdrive.journal import open_journal\n"
        "with tempfile.TemporaryDirectory() as warm:\n"
        "    open_journal(Path(warm) / 'j.db').close()\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "j = open_journal(Path(sys.argv[1])); print(j.runs.get('run-dead').error); j.close()\n")
    proc = subprocess.run([sys.executable, "-c", recover_as_nobody, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(pid_alive(p) for p in pids)
    error = proc.stdout.strip()
    assert error.startswith("process ") and "not re-run" in error
    assert f"its command's process group {group} outlived it (processes " in error
    assert "could not be stopped); lock 'web1' stays held until they end" in error

    journal = open_journal(path)  # root recovers now: it may kill them
    try:
        assert all(gone_soon(p, 0.1) for p in pids)
        _new_run(journal, "run-next")
        assert journal.locks.acquire("web1", "run-next", ttl=60) is None
        released = [e for e in journal.events("run-dead") if e.kind == "lock.released"]
        assert [e.data["key"] for e in released] == ["web1"]
        [kept] = [e for e in journal.events("run-dead") if e.kind == "lock.kept"]
        assert kept.data["key"] == "web1"
        assert set(kept.data["processes_left"][group]) == set(pids)
    finally:
        journal.close()


def test_a_kept_lock_is_held_whatever_its_expiry_while_the_group_lives(path, reap):
    shell, pids = _command_group()
    reap.append(shell)
    group = process_identity(shell.pid)
    journal = open_journal(path, recover=False)
    try:
        _new_run(journal, "run-old")
        journal.runs.interrupt("run-old", actor="t", reason="its runner died")
        # What recovery leaves when the group outlived the run: an expired lease, kept.
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("INSERT INTO locks (key, run_id, owner, acquired_at, expires_at, pgroup) "
                     "VALUES ('k', 'run-old', 'gone:1:1', '2020-01-01T00:00:00+00:00', "
                     "'2020-01-01T00:00:01+00:00', ?)", (group,))
        conn.close()
        _new_run(journal, "run-new")
        assert journal.locks.acquire("k", "run-new", ttl=60) == "run-old"  # expired, but held
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        assert all(gone_soon(p) for p in pids)
        assert journal.locks.acquire("k", "run-new", ttl=60) is None
    finally:
        journal.close()


def test_a_reused_pid_is_never_killed(path, reap):
    """The recorded leader's start time does not match the process now at that pid:
    the group recorded is long gone, and this one belongs to someone else."""
    shell, pids = _command_group()
    reap.append(shell)
    host, pid, start = process_identity(shell.pid).split(":")
    _die_holding(path, f"{host}:{pid}:{int(start) - 1}")
    journal = open_journal(path)
    try:
        assert journal.runs.get("run-dead").status is S.INTERRUPTED
        assert all(pid_alive(p) for p in pids), "a stranger's processes were killed"
        _new_run(journal, "run-next")
        assert journal.locks.acquire("web1", "run-next", ttl=60) is None
    finally:
        journal.close()


def test_interrupting_a_run_ends_its_command_before_its_lock_goes(path, reap):
    """A forced stop (the scheduler's second signal) marks this process's own run
    interrupted: its command is killed first, then the lock is released."""
    shell, pids = _command_group()
    reap.append(shell)
    journal = open_journal(path)
    try:
        _new_run(journal, "run-mine")
        journal.runs.transition("run-mine", S.DECIDED, actor="t")
        assert journal.locks.acquire("k", "run-mine", ttl=3600) is None
        journal.runs.transition("run-mine", S.RUNNING, actor="t")
        journal.runs.begin_step("run-mine", phase="body", kind="command", target="local",
                           command="sleep", pgroup=process_identity(shell.pid))
        run = journal.runs.interrupt("run-mine", actor="t", reason="stopped at once")
        assert run.status is S.INTERRUPTED
        assert all(gone_soon(p, 0.1) for p in pids)
        _new_run(journal, "run-next")
        assert journal.locks.acquire("k", "run-next", ttl=60) is None
    finally:
        journal.close()
