"""Each read paid once: a live run takes the results of reads its plan just ran.

Planning runs read-only commands for real (a plan must see the real state); the live
run that follows would run them all again. As pyinfra does with facts, a read the
planning pass ran is handed to the live run instead of running again, when:

- the same target is asked the same command in the same phase: the raw text *and*
  its ``env=`` variables (two reads that differ in a secret are two reads); a
  verification never reuses (planning runs none: a verification looks again);
- it is taken in order, at most as many times as the plan ran it;
- the plan saw it succeed (a read that failed, timed out or whose outcome is unknown
  runs again), and no change was planned on that target before it;
- nothing has changed on that target in the live run yet (a change step, even one that
  failed, may have moved what the read saw; an Ansible change counts on every target);
- the live run reads it within ``[executor] reuse_reads`` of the plan's end (``0s``:
  never), in the process that planned.

A :class:`ReadRecorder` collects the reads while planning; the plan keeps them as
:class:`PlanReads` (in memory only: the real output may hold a secret that only the
journal's redacted copy hides); each live run takes them through its own
:class:`ReadLedger`, so no read is reused across runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult
from selfdrive.targets.base import Target

#: A read's key: its phase, where it ran (name and login) and exactly what ran there.
Key = tuple[str, str, str, str, tuple[tuple[str, str], ...]]
#: Stands for "every target" among the changed ones (an Ansible change).
EVERY_TARGET = "\0every target"


def where(target: Target) -> str:
    """The login a command reaches: ``local``, or an SSH target's ``user@host:port``.

    Two handles on one host with different users are two places to read from.
    """
    spec = getattr(target, "host", None)
    login, endpoint = getattr(spec, "login", None), getattr(spec, "endpoint", None)
    return f"{login}@{endpoint}" if login is not None and endpoint is not None else ""


def key_of(phase: str, target: Target, command: Command) -> Key:
    return (phase, target.name, where(target), command.raw, command.env)


@dataclass(frozen=True)
class PlanRead:
    """One read as the planning pass ran it; ``result`` holds the real output."""

    key: Key = field(repr=False)
    step: int
    status: str
    after_change: bool
    result: CommandResult = field(repr=False)

    @property
    def target(self) -> str:
        return self.key[1]

    @property
    def reusable(self) -> bool:
        return self.status == "ok" and not self.after_change


@dataclass(frozen=True)
class PlanReads:
    """The reads of one planning pass, sealed when it ended (monotonic clock)."""

    reads: tuple[PlanRead, ...]
    window: float
    ended: float
    pid: int = field(default_factory=os.getpid)

    @property
    def reusable(self) -> tuple[PlanRead, ...]:
        return tuple(r for r in self.reads if r.reusable)

    def __repr__(self) -> str:  # never the output: it may hold a secret
        return (f"<PlanReads {len(self.reusable)} of {len(self.reads)} reusable "
                f"within {self.window:g}s>")


class ReadRecorder:
    """Collects a planning pass's reads and the changes it plans, in order."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._reads: list[PlanRead] = []
        self._changed: set[str] = set()
        self._lock = threading.Lock()  # a fan-out records from its worker threads

    def take(self, phase: str, target: Target, command: Command) -> None:
        """Planning reuses nothing: it is where reads are paid."""
        return None

    def changed(self, target: str) -> None:
        with self._lock:
            self._changed.add(target)

    def record(self, phase: str, target: Target, command: Command, result: CommandResult,
               status: str, step: int) -> None:
        """A read that ran while planning; ``step`` is its 0-based place in the plan."""
        with self._lock:
            after = bool(self._changed & {target.name, EVERY_TARGET})
            self._reads.append(PlanRead(key=key_of(phase, target, command), step=step + 1,
                                        status=status, after_change=after, result=result))

    def seal(self) -> PlanReads:
        with self._lock:
            return PlanReads(reads=tuple(self._reads), window=self._window,
                             ended=self._clock())


@dataclass(frozen=True)
class Reuse:
    """A planned read a live run takes instead of running it; ``age`` in seconds."""

    read: PlanRead
    age: float

    @property
    def marker(self) -> dict[str, Any]:
        """What the live step's ``data`` says of it: the plan step it came from."""
        return {"reused": {"plan_step": self.read.step, "age": round(self.age, 3)}}


class ReadLedger:
    """One live run's share of its plan's reads: each taken at most once, in order."""

    def __init__(self, plan: PlanReads | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._plan = plan
        self._clock = clock
        self._queues: dict[Key, deque[PlanRead]] = {}
        usable = plan is not None and plan.window > 0 and plan.pid == os.getpid()
        for read in plan.reads if plan is not None and usable else ():
            self._queues.setdefault(read.key, deque()).append(read)
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    def take(self, phase: str, target: Target, command: Command) -> Reuse | None:
        """The plan's result for this read, or None: run it."""
        if not self._queues:
            return None
        with self._lock:
            if self._changed & {target.name, EVERY_TARGET}:
                return None
            queue = self._queues.get(key_of(phase, target, command))
            if not queue:
                return None
            read = queue.popleft()
            assert self._plan is not None
            age = self._clock() - self._plan.ended
            if not read.reusable or age > self._plan.window:
                return None
            return Reuse(read=read, age=max(age, 0.0))

    def changed(self, target: str) -> None:
        """A change is about to start on ``target``: its reads run again from now on."""
        with self._lock:
            self._changed.add(target)

    def record(self, phase: str, target: Target, command: Command, result: CommandResult,
               status: str, step: int) -> None:
        """A live read is not kept: only the plan's are handed on."""
        return None


#: What a context's scope holds: the recorder while planning, a ledger while running.
Reads = ReadRecorder | ReadLedger
