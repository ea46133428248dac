"""Worker processes that run what alerts start, off the receiver's interpreter.

The receiver's job is to answer every sender promptly; a run's job is to plan, decide,
journal and spawn commands. In one process they share one interpreter lock, so a storm
of runs slows the answers. Here each worker is a process of its own (started with
``spawn``, so it never inherits the receiver's threads or journal connection) that
loads the team's config, runbooks and journal itself and runs one job at a time.

Work is pulled, not pushed: the receiver hands a job to a worker only when that worker
is idle, so a worker holds at most one job, a job lost with a worker is exactly the one
it held, and jobs still waiting at shutdown are simply not handed out (their claims stay
``queued`` in the journal for the next receiver). Runs of a runbook that declares a
``lock`` all go to one worker, in arrival order, so they queue instead of skipping each
other; other runs go to whichever worker is free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from selfdrive.sdk.errors import SelfdriveError
from selfdrive.targets.private import private_root, sweep
from selfdrive.triggers.intake import AlertIntake, Job

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

#: Builds a worker's intake in the worker process; returns it and what closes it.
Factory = Callable[[], tuple[AlertIntake, Callable[[], None]]]

#: A worker that dies this soon after starting is restarted only after a pause.
QUICK_DEATH_SECONDS = 5.0
MAX_RESTART_PAUSE = 30.0


class WorkerStartError(SelfdriveError):
    """A worker process could not load the team's config, runbooks or journal."""


def _portable(job: Job) -> Job:
    """The job with plain dicts, so it pickles whatever mappings the parser made."""
    alert = dataclasses.replace(job.alert, labels=dict(job.alert.labels),
                                annotations=dict(job.alert.annotations))
    return dataclasses.replace(job, alert=alert, params=dict(job.params))


def worker_main(factory: Factory, conn: Connection, parent: int, nice: int) -> None:
    """A worker's life: build the intake, say ready, run jobs until told to stop.

    SIGINT is the terminal's Ctrl-C to the whole process group: the receiver decides
    when to stop. SIGTERM (a service manager signalling the group) lets the current
    run finish, then ends the worker.
    """
    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    try:
        intake, close = factory()
    except BaseException as exc:  # reported to the receiver, which refuses to start
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ready", os.getpid()))
        while not stopping.is_set():
            if not conn.poll(1.0):
                if os.getppid() != parent:  # the receiver died: nobody will hand out jobs
                    return
                continue
            job = conn.recv()
            if job is None:
                return
            try:
                intake.run(job)
            except BaseException as exc:  # a worker must outlive any job
                intake.log(f"worker {os.getpid()}: job for alert #{job.alert_id} crashed: "
                           f"{exc!r}")
            conn.send(("done", job.claim_id))
    except (EOFError, BrokenPipeError, OSError):
        return  # the receiver went away
    finally:
        close()


@dataclasses.dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    conn: Connection | None = None
    ready: bool = False
    current: Job | None = None
    own: deque[Job] = dataclasses.field(default_factory=deque)
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


class WorkerPool:
    """N worker processes fed by the receiver, which hands each a job when it is idle."""

    def __init__(self, factory: Factory, workers: int, *, intake: AlertIntake,
                 nice: int = 0, start_timeout: float = 60.0) -> None:
        self.factory = factory
        self.intake = intake
        self.nice = nice
        self._mp = multiprocessing.get_context("spawn")
        self._lock = threading.RLock()
        self._shared: deque[Job] = deque()
        self._slots = [_Slot(i) for i in range(workers)]
        self._stopping = False
        self._lost: dict[int, int] = {}  # claim id → times its worker died holding it
        for slot in self._slots:
            self._start(slot)
        self._await_ready(start_timeout)
        self._monitor = threading.Thread(target=self._watch, daemon=True,
                                         name="selfdrive-worker-monitor")
        self._monitor.start()

    # -- the face the receiver uses ------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._lock:
            self._queue_for(job).append(_portable(job))
            self._feed()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._shared) + sum(len(s.own) + (s.current is not None)
                                           for s in self._slots)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [s.process.pid for s in self._slots
                    if s.process is not None and s.process.pid is not None]

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.pending

    def stop(self, timeout: float | None = None) -> None:
        """Hand out nothing more; let each worker finish its current run, then end it.
        Jobs not yet handed out stay ``queued`` in the journal for the next receiver."""
        with self._lock:
            self._stopping = True
            self._shared.clear()
            for slot in self._slots:
                slot.own.clear()
                if slot.conn is not None:
                    with contextlib.suppress(OSError, ValueError):
                        slot.conn.send(None)
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join(timeout)
        self._monitor.join(2.0)

    # -- starting and feeding workers -------------------------------------------------

    def _queue_for(self, job: Job) -> deque[Job]:
        rb = self.intake.registry.runbooks.get(job.runbook)
        if rb is not None and rb.lock:
            return self._slots[zlib.crc32(job.runbook.encode()) % len(self._slots)].own
        return self._shared

    def _start(self, slot: _Slot) -> None:
        mine, theirs = self._mp.Pipe(duplex=True)
        process = self._mp.Process(target=worker_main, name=f"selfdrive-worker-{slot.index}",
                                   args=(self.factory, theirs, os.getpid(), self.nice),
                                   daemon=False)
        process.start()
        theirs.close()
        slot.process, slot.conn, slot.ready, slot.current = process, mine, False, None
        slot.started, slot.restart_at = time.monotonic(), None

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            assert slot.conn is not None and slot.process is not None
            left = deadline - time.monotonic()
            message: Any = None
            try:
                if slot.conn.poll(max(0.0, left)):
                    message = slot.conn.recv()
            except (EOFError, OSError):
                message = ("failed", f"exited with code {slot.process.exitcode}")
            if message is not None and message[0] == "ready":
                slot.ready = True
                continue
            self._abort()
            why = message[1] if message is not None else f"not ready after {timeout:g}s"
            raise WorkerStartError(f"alert worker process {slot.index} could not start: {why}")

    def _abort(self) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(5)

    def _feed(self) -> None:
        """Hand a job to every idle worker that has one waiting (caller holds the lock)."""
        if self._stopping:
            return
        for slot in self._slots:
            if not slot.ready or slot.current is not None or slot.conn is None:
                continue
            queue = slot.own if slot.own else self._shared
            if not queue:
                continue
            job = queue.popleft()
            try:
                slot.conn.send(job)
            except (OSError, ValueError):  # it just died; the monitor hands the job on
                queue.appendleft(job)
                continue
            slot.current = job

    # -- watching workers ---------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._stopping and all(s.process is None or not s.process.is_alive()
                                          for s in self._slots):
                    return
                waitables: list[Any] = []
                for slot in self._slots:
                    if slot.conn is not None:
                        waitables.append(slot.conn)
                    if slot.process is not None:
                        waitables.append(slot.process.sentinel)
            if waitables:
                ready = wait(waitables, timeout=0.5)
            else:  # every worker is waiting out a restart pause
                time.sleep(0.5)
                ready = []
            with self._lock:
                for slot in self._slots:
                    self._read(slot, ready)
                now = time.monotonic()
                for slot in self._slots:
                    if slot.restart_at is not None and now >= slot.restart_at \
                            and not self._stopping:
                        self._start(slot)
                self._feed()

    def _read(self, slot: _Slot, ready: list[Any]) -> None:
        conn, process = slot.conn, slot.process
        if conn is not None and conn in ready:
            try:
                while conn.poll():
                    kind, value = conn.recv()
                    if kind == "ready":
                        slot.ready = True
                    elif kind == "done":
                        self._lost.pop(value, None)
                        slot.current = None
                    elif kind == "failed":
                        self.intake.log(f"alert worker {slot.index} could not start: {value}")
            except (EOFError, OSError):  # it is exiting: nothing more to hand it
                conn.close()
                slot.conn = None
        if process is not None and process.sentinel in ready and not process.is_alive():
            self._died(slot)

    def _died(self, slot: _Slot) -> None:
        assert slot.process is not None
        code, lost = slot.process.exitcode, slot.current
        if slot.conn is not None:
            with contextlib.suppress(OSError):
                slot.conn.close()
        slot.process, slot.conn, slot.ready, slot.current = None, None, False, None
        if self._stopping:
            return
        self.intake.log(f"alert worker {slot.index} died (exit code {code})"
                        + (f" while running the job for alert #{lost.alert_id}" if lost else "")
                        + "; starting another")
        with contextlib.suppress(SelfdriveError):
            self.intake.journal.runs.recover()  # its run, if it had one, is interrupted now
        with contextlib.suppress(OSError):  # and its playbook's files (secrets) go
            sweep(private_root(self.intake.config.state_dir))
        if lost is not None:
            self._hand_on(lost)
        quick = time.monotonic() - slot.started < QUICK_DEATH_SECONDS
        slot.quick_deaths = slot.quick_deaths + 1 if quick else 0
        pause = min(MAX_RESTART_PAUSE, 2.0 ** slot.quick_deaths) if slot.quick_deaths else 0.0
        slot.restart_at = time.monotonic() + pause

    def _hand_on(self, job: Job) -> None:
        """A job whose worker died: run it again once if its run never started."""
        deaths = self._lost[job.claim_id] = self._lost.get(job.claim_id, 0) + 1
        try:
            again = self.intake.settle_lost(job, give_up=deaths > 1)
        except SelfdriveError as exc:
            self.intake.log(f"alert #{job.alert_id}: cannot settle the job its worker lost: "
                            f"{exc}")
            return
        if again:
            self._queue_for(job).appendleft(job)
