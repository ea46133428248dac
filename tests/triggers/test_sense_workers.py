"""Alert runs in worker processes, and alerts that arrive together sharing a commit."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from process_support import gone_soon, pid_alive
from sense_support import (
    Project,
    Server,
    alertmanager,
    broken_intake,
    project_intake,
    request,
)

from selfdrive.sdk.errors import JournalError, JournalLockedError
from selfdrive.triggers.intake import AlertIntake, GroupCommit
from selfdrive.triggers.payloads import Alert
from selfdrive.triggers.workers import WorkerPool, WorkerStartError

BOOKS = '''
@runbook(risk=Risk.LOW, triggers=[alert("Slow", params={"n": "{{ labels.n }}"})])
def slow(ctx: Context, n: int) -> None:
    """Takes a while, so two of them overlap when they can."""
    ctx.run("sleep {{ secs }}", secs=0.6)


@runbook(risk=Risk.LOW, lock="the-one",
         triggers=[alert("Locked", params={"n": "{{ labels.n }}"})])
def locked(ctx: Context, n: int) -> None:
    """Declares a lock: its runs must queue, never skip each other."""
    ctx.run("sleep 0.2")


@runbook(risk=Risk.LOW, triggers=[alert("Hang", params={"n": "{{ labels.n }}"})])
def hang(ctx: Context, n: int) -> None:
    """Long enough to kill its worker in the middle."""
    ctx.run("sleep 8")


@runbook(risk=Risk.LOW, triggers=[alert("Quick", params={"n": "{{ labels.n }}"})])
def quick(ctx: Context, n: int) -> None:
    """One cheap step."""
    ctx.run("true")


@runbook(risk=Risk.LOW, lock="shared",
         triggers=[alert("Held", params={"dir": "{{ labels.dir }}"})])
def held(ctx: Context, dir: str) -> None:
    """Holds the lock through a long step (its shell and a child, both noted)."""
    ctx.run("echo $$ > {{ dir }}/pids; sleep 30 & echo $! >> {{ dir }}/pids; "
            "touch {{ dir }}/started; wait", check=False)


@runbook(risk=Risk.LOW, lock="shared",
         triggers=[alert("Peek", params={"dir": "{{ labels.dir }}"})])
def peek(ctx: Context, dir: str) -> None:
    """Notes which of held's processes are alive while it holds the lock itself."""
    ctx.run('for p in $(cat {{ dir }}/pids); do s=$(cat /proc/$p/stat 2>/dev/null) || '
            'continue; case "${s##*) }" in Z*) ;; *) echo "$p";; esac; done > {{ dir }}/seen',
            check=False)
'''


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path / "proj")
    p.runbook(BOOKS)
    yield p
    p.close()


def _intake(project: Project) -> AlertIntake:
    journal = project.journal()
    return AlertIntake(project.config(), project.registry(), journal,
                       project.executor(journal))


def _pool(project: Project, take: AlertIntake, workers: int = 2) -> WorkerPool:
    return WorkerPool(functools.partial(project_intake, str(project.root)), workers,
                      intake=take)


def _through_a_pool(project: Project, alertname: str, count: int) -> set[int]:
    """Alerts n=0…count-1 received in-process and run by a 2-worker pool; its pids."""
    take = _intake(project)
    pool = _pool(project, take)
    try:
        workers = set(pool.pids)
        for n in range(count):
            for job in take.receive([Alert(alertname, {"n": str(n)})])[0].jobs:
                pool.submit(job)
        assert pool.wait_idle(30)
    finally:
        pool.stop(timeout=30)
    return workers


def _interval(run: dict[str, Any]) -> tuple[datetime, datetime]:
    return (datetime.fromisoformat(run["started_at"]),
            datetime.fromisoformat(run["finished_at"]))


def _pid(owner: str) -> int:
    return int(owner.rsplit(":", 2)[1])


def test_runs_happen_in_worker_processes_and_unlocked_ones_overlap(project: Project) -> None:
    workers = _through_a_pool(project, "Slow", 2)
    assert len(workers) == 2 and os.getpid() not in workers
    runs = project.rows("SELECT * FROM runs WHERE runbook = 'slow' ORDER BY started_at")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert {_pid(r["owner"]) for r in runs} == workers  # one run in each worker
    a_end, b_start = _interval(runs[0])[1], _interval(runs[1])[0]
    assert b_start < a_end, "two free workers should run two unlocked runs at once"
    claims = project.rows("SELECT outcome, run_id FROM alert_runs")
    assert {c["outcome"] for c in claims} == {"started"}
    assert all(not pid_alive(pid) for pid in workers)


def test_runs_of_a_runbook_with_a_lock_queue_on_one_worker(project: Project) -> None:
    _through_a_pool(project, "Locked", 4)
    runs = project.rows("SELECT * FROM runs WHERE runbook = 'locked' ORDER BY started_at")
    assert [r["status"] for r in runs] == ["succeeded"] * 4  # none skipped on the lock
    assert len({r["owner"] for r in runs}) == 1
    assert [json_n(r) for r in runs] == [0, 1, 2, 3]  # in arrival order
    for earlier, later in itertools.pairwise(runs):
        assert _interval(earlier)[1] <= _interval(later)[0]


def json_n(run: dict[str, Any]) -> int:
    return int(json.loads(run["params"])["n"])


def test_worker_nice_lowers_the_workers_priority_only(project: Project) -> None:
    take = _intake(project)
    pool = WorkerPool(functools.partial(project_intake, str(project.root)), 2, intake=take,
                      nice=7)
    try:
        nices = {pid: _nice(pid) for pid in pool.pids}
    finally:
        pool.stop(timeout=30)
    assert set(nices.values()) == {_nice(os.getpid()) + 7}
    assert _nice(os.getpid()) == os.getpriority(os.PRIO_PROCESS, 0)  # the receiver: unchanged


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_worker_that_cannot_start_stops_the_pool_with_its_reason(project: Project) -> None:
    take = _intake(project)
    with pytest.raises(WorkerStartError, match="Permission denied"):
        WorkerPool(functools.partial(broken_intake, str(project.root)), 2, intake=take)


def test_a_killed_worker_is_replaced_and_its_run_marked_interrupted(project: Project) -> None:
    server = Server(project)
    sleeper: int | None = None
    try:
        status, _ = request(f"{server.base}/alerts/alertmanager",
                            alertmanager("Hang", {"n": "1"}))
        assert status == 202
        deadline = time.monotonic() + 20
        run: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            rows = project.rows("SELECT r.id, r.owner, r.status FROM runs r JOIN steps s "
                                "ON s.run_id = r.id WHERE s.kind = 'command' "
                                "AND s.phase = 'body' AND s.status = 'started'")
            if rows:
                run = rows[0]
                break
            time.sleep(0.05)
        assert run is not None, server.log
        worker = _pid(run["owner"])
        assert worker != server.proc.pid
        # The claim names its run from the transaction that created the run.
        [live] = project.rows("SELECT outcome, run_id FROM alert_runs WHERE runbook = 'hang'")
        assert live == {"outcome": "started", "run_id": run["id"]}
        shown = project.sd("alerts", "show", str(1))
        assert f"hang: started, run {run['id']} (running)" in shown.stdout, shown.stdout
        sleeper = _child_sleep(worker)
        # What a worker killed mid-playbook leaves: a private data dir no one holds.
        left = project.root / ".selfdrive" / "ansible" / "run-of-the-dead-worker"
        left.mkdir(parents=True)
        (left / "extravars").write_text("secret")
        os.kill(worker, signal.SIGKILL)
        assert gone_soon(worker, 5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "died" not in server.log:
            time.sleep(0.05)
        assert "alert worker" in server.log and "died (exit code -9)" in server.log
        server.wait_idle()
        assert not left.exists()  # removed with no command run meanwhile
        [after] = project.rows("SELECT status, error FROM runs WHERE id = ?", (run["id"],))
        assert after["status"] == "interrupted"
        [step] = project.rows("SELECT status FROM steps WHERE run_id = ? AND kind = 'command' "
                              "AND phase = 'body'",
                              (run["id"],))
        assert step["status"] == "unknown"
        [claim] = project.rows("SELECT outcome, run_id, detail FROM alert_runs "
                               "WHERE runbook = 'hang'")
        assert claim["outcome"] == "started" and claim["run_id"] == run["id"]
        assert "worker process died" in claim["detail"]
        assert project.rows("SELECT COUNT(*) AS n FROM runs WHERE runbook = 'hang'")[0]["n"] == 1
        # The replacement takes the next alert.
        status, _ = request(f"{server.base}/alerts/alertmanager",
                            alertmanager("Quick", {"n": "2"}))
        assert status == 202
        server.wait_idle()
        [quick] = project.rows("SELECT status, owner FROM runs WHERE runbook = 'quick'")
        assert quick["status"] == "succeeded" and _pid(quick["owner"]) not in (worker,
                                                                               server.proc.pid)
    finally:
        assert server.stop() == 0, server.log
        if sleeper:
            with contextlib.suppress(OSError):
                os.killpg(sleeper, signal.SIGKILL)


def test_a_killed_workers_command_never_overlaps_the_next_run_of_its_lock(
        project: Project, tmp_path: Path) -> None:
    """kill -9 of the worker during a locked step: the next run of that lock (on the
    other worker, or on the replacement) never runs alongside the old command."""
    server = Server(project)
    pids: list[int] = []
    try:
        box = tmp_path / "box"
        box.mkdir()
        status, _ = request(f"{server.base}/alerts/alertmanager",
                            alertmanager("Held", {"dir": str(box)}))
        assert status == 202
        deadline = time.monotonic() + 20
        while not (box / "started").exists():
            assert time.monotonic() < deadline, server.log
            time.sleep(0.02)
        pids = [int(p) for p in (box / "pids").read_text().split()]
        [run] = project.rows("SELECT id, owner FROM runs WHERE runbook = 'held'")
        os.kill(_pid(run["owner"]), signal.SIGKILL)
        status, _ = request(f"{server.base}/alerts/alertmanager",
                            alertmanager("Peek", {"dir": str(box)}))
        assert status == 202
        server.wait_idle()
        deadline = time.monotonic() + 20
        while not project.rows("SELECT status FROM runs WHERE runbook = 'peek' AND status "
                               "IN ('succeeded', 'skipped')"):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)
        [peek] = project.rows("SELECT status, error FROM runs WHERE runbook = 'peek'")
        if peek["status"] == "succeeded":
            assert (box / "seen").read_text().split() == [], "it ran beside the old command"
        else:
            assert "lock 'shared' is held" in peek["error"]
        assert all(gone_soon(p, 5) for p in pids), "the old command outlived its worker"
        [after] = project.rows("SELECT status FROM runs WHERE id = ?", (run["id"],))
        assert after["status"] == "interrupted"
    finally:
        assert server.stop() == 0, server.log
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_workers_leave_when_their_receiver_is_killed(project: Project) -> None:
    server = Server(project)
    try:
        workers = [pid for pid in _children(server.proc.pid) if b"multiprocessing.spawn"
                   in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2
        server.proc.kill()
        server.proc.wait(5)
        assert all(gone_soon(pid, 5) for pid in workers), "orphaned alert workers"
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _child_sleep(worker: int) -> int | None:
    """The pid of the ``sleep`` the worker started (its own process group leader)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == worker and b"sleep" in cmd:
            return int(entry.name)
    return None


def test_two_workers_racing_keep_the_rate_limit_exact(project: Project) -> None:
    """Runs of one runbook decide in two processes at once; the limit (5 an hour, the
    default) still lets exactly five run on their own and sends the rest to a human."""
    server = Server(project)
    try:
        bodies = [alertmanager("Quick", {"n": str(n)}) for n in range(9)]
        assert _concurrently_http(server, bodies) == [202] * 9
        server.wait_idle()
    finally:
        assert server.stop() == 0, server.log
    runs = project.rows("SELECT status, mode, owner, decision FROM runs "
                        "WHERE runbook = 'quick'")
    assert len(runs) == 9
    assert sorted(r["status"] for r in runs) == ["pending_approval"] * 4 + ["succeeded"] * 5
    assert sum(r["mode"] == "autonomous" for r in runs) == 5
    assert all("rate limit" in r["decision"] for r in runs if r["mode"] == "approval")
    assert server.proc.pid not in {_pid(r["owner"]) for r in runs if r["owner"]}
    assert "2 worker process(es)" in server.log


# -- group commit --------------------------------------------------------------------


def _slow_commit(log: list[list[dict[str, Any]]], bad: str | None = None):  # type: ignore[no-untyped-def]
    def commit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        time.sleep(0.05)
        if bad is not None and any(r["name"] == bad for r in rows):
            raise JournalError(f"cannot record {bad}")
        log.append(rows)
        return [{"id": r["name"]} for r in rows]
    return commit


def _concurrently(commit: GroupCommit, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gate = threading.Barrier(len(names))

    def one(name: str) -> None:
        gate.wait()
        try:
            out[name] = commit([{"name": name}])
        except Exception as exc:
            out[name] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_requests_arriving_together_share_transactions_and_get_their_own_rows() -> None:
    log: list[list[dict[str, Any]]] = []
    commit = GroupCommit(_slow_commit(log))
    names = [f"a{i}" for i in range(12)]
    out = _concurrently(commit, names)
    assert {n: out[n] for n in names} == {n: [{"id": n}] for n in names}
    assert sorted(r["name"] for batch in log for r in batch) == sorted(names)
    assert commit.batches == len(log) < len(names)  # fewer transactions than requests
    assert commit([{"name": "alone"}]) == [{"id": "alone"}]  # idle: commits at once


def test_one_bad_request_in_a_batch_does_not_fail_its_neighbours() -> None:
    log: list[list[dict[str, Any]]] = []
    commit = GroupCommit(_slow_commit(log, bad="a3"))
    names = [f"a{i}" for i in range(8)]
    out = _concurrently(commit, names)
    assert isinstance(out["a3"], JournalError)
    assert {n: out[n] for n in names if n != "a3"} == {n: [{"id": n}] for n in names
                                                       if n != "a3"}
    assert "a3" not in {r["name"] for batch in log for r in batch}


def test_a_busy_journal_fails_every_request_of_the_batch_for_a_retry() -> None:
    calls: list[int] = []

    def busy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append(len(rows))
        time.sleep(0.05)
        raise JournalLockedError("journal is locked by another writer")

    out = _concurrently(GroupCommit(busy), [f"a{i}" for i in range(6)])
    assert all(isinstance(v, JournalLockedError) for v in out.values())
    assert sum(calls) == 6  # never retried one by one: the sender retries


def test_the_same_alert_posted_at_once_by_20_senders_gives_one_run(project: Project) -> None:
    server = Server(project)
    try:
        body = alertmanager("Quick", {"n": "7"}, fingerprint="same-one")
        out = _concurrently_http(server, [body] * 20)
        assert out == [202] * 20
        server.wait_idle()
    finally:
        assert server.stop() == 0, server.log
    claims = project.rows("SELECT outcome FROM alert_runs WHERE runbook = 'quick'")
    assert sorted(c["outcome"] for c in claims) == ["duplicate"] * 19 + ["started"]
    assert project.rows("SELECT COUNT(*) AS n FROM runs WHERE runbook = 'quick'")[0]["n"] == 1
    assert project.rows("SELECT COUNT(*) AS n FROM alerts WHERE name = 'Quick'")[0]["n"] == 20


def _concurrently_http(server: Server, bodies: list[dict[str, Any]]) -> list[int]:
    statuses: list[int] = []
    gate = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> None:
        gate.wait()
        status, _ = request(f"{server.base}/alerts/alertmanager", body)
        statuses.append(status)

    threads = [threading.Thread(target=one, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return statuses
