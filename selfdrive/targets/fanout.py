"""One command on many targets in parallel, with a concurrency cap and an error budget.

Ordering guarantees (what the executor's journal relies on):

- at most ``max_concurrency`` targets are between ``on_start`` and ``on_finish``;
- a target *starts* when a worker takes it: ``should_stop()`` is asked and the failure
  count is read under one lock, so once ``max_errors`` targets have failed, or
  ``should_stop()`` returned true, no further target starts; those left are *skipped*;
- ``on_start(target, command)`` runs in the worker before the command; its return
  value is passed to ``on_finish(target, command, result, token)`` after it;
- when the failure that uses up the budget comes in, every target already taken gets
  through its ``on_start`` before that failure's ``on_finish`` is called, so no
  ``on_start`` ends after it begins (journaling the failure in ``on_finish`` and
  reading the journal shows no host started after it);
- if ``on_start`` raises, that target does not run (it is reported skipped) and no new
  target starts; if ``on_finish`` raises, no new target starts. Targets in flight
  finish, and ``fan_out`` then re-raises the first such exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult
from selfdrive.targets.base import Target

OnStart = Callable[[Target, Command], object]
OnFinish = Callable[[Target, Command, CommandResult, object], None]


@dataclass(frozen=True)
class HostRun:
    """One target's part of a fan-out: its command and result (``None`` when skipped)."""

    target: str
    command: Command
    result: CommandResult | None

    @property
    def skipped(self) -> bool:
        return self.result is None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok


@dataclass(frozen=True)
class FanoutResult:
    """Per-target outcomes in input order, and who succeeded, failed or was skipped."""

    runs: tuple[HostRun, ...]
    stop_reason: str | None = None
    succeeded: list[str] = field(init=False)
    failed: list[str] = field(init=False)
    skipped: list[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "succeeded", [r.target for r in self.runs if r.ok])
        object.__setattr__(self, "failed",
                           [r.target for r in self.runs if not r.skipped and not r.ok])
        object.__setattr__(self, "skipped", [r.target for r in self.runs if r.skipped])

    @property
    def ok(self) -> bool:
        """True when every target ran and succeeded (none failed, none skipped)."""
        return not self.failed and not self.skipped

    @property
    def results(self) -> dict[str, CommandResult]:
        """Results of the targets that ran, by target name, in input order."""
        return {r.target: r.result for r in self.runs if r.result is not None}

    def __getitem__(self, name: str) -> CommandResult | None:
        for run in self.runs:
            if run.target == name:
                return run.result
        raise KeyError(name)


def fan_out(targets: Sequence[Target], command_for: Callable[[Target], Command], *,
            timeout: float, max_concurrency: int = 10, max_errors: int = 1,
            on_start: OnStart | None = None, on_finish: OnFinish | None = None,
            should_stop: Callable[[], bool] | None = None) -> FanoutResult:
    """Run ``command_for(target)`` on every target, at most ``max_concurrency`` at once.

    Every command is rendered first, in the caller's thread, so a template error stops
    the fan-out before any target starts. After ``max_errors`` targets have failed (a
    result that is not ``ok``), no new target starts. ``timeout`` applies to each
    command. Targets are not closed here; their owner closes them.
    """
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    if max_errors < 1:
        raise ValueError("max_errors must be at least 1")
    commands = [command_for(t) for t in targets]
    state = _State(len(targets), max_errors, should_stop)

    def work() -> None:
        while True:
            index = state.take()
            if index is None:
                return
            target, command = targets[index], commands[index]
            try:
                token = on_start(target, command) if on_start is not None else None
            except BaseException as exc:
                state.abort(exc)
                state.started_done()
                continue
            state.started_done()
            result = _run(target, command, timeout)
            state.results[index] = result
            if not result.ok:
                state.failure()
            try:
                if on_finish is not None:
                    on_finish(target, command, result, token)
            except BaseException as exc:
                state.abort(exc)

    workers = min(max_concurrency, len(targets))
    if workers:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="selfdrive-fanout") as pool:
            futures = [pool.submit(work) for _ in range(workers)]
            try:
                for future in futures:
                    future.result()
            except BaseException as exc:  # e.g. KeyboardInterrupt in the caller
                state.abort(exc)
                for future in futures:
                    future.exception()
                raise
    if state.error is not None:
        raise state.error
    runs = tuple(HostRun(target=t.name, command=c, result=r)
                 for t, c, r in zip(targets, commands, state.results, strict=True))
    return FanoutResult(runs=runs, stop_reason=state.stop_reason)


def _run(target: Target, command: Command, timeout: float) -> CommandResult:
    try:
        return target.run(command, timeout)
    except Exception as exc:  # a target must not raise; if one does, the outcome is unknown
        return CommandResult(command=command, target=target.name, exit_code=None,
                             error=f"outcome unknown: the target raised "
                                   f"{type(exc).__name__}: {exc}")


class _State:
    """What the workers share: the next index, failures, and the start gate."""

    def __init__(self, count: int, max_errors: int,
                 should_stop: Callable[[], bool] | None) -> None:
        self.count = count
        self.max_errors = max_errors
        self.should_stop = should_stop
        self.results: list[CommandResult | None] = [None] * count
        self.next = 0
        self.failures = 0
        self.starting = 0
        self.stop_reason: str | None = None
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def take(self) -> int | None:
        """The next index to start, or ``None`` when nothing more may start."""
        with self.cond:
            if self.stop_reason is None and self.next < self.count:
                if self.failures >= self.max_errors:
                    self.stop_reason = (f"{self.failures} target(s) failed "
                                        f"(max_errors={self.max_errors})")
                elif self.should_stop is not None and self._stop_asked():
                    self.stop_reason = "stopped by the caller"
            if self.stop_reason is not None or self.next >= self.count:
                return None
            index = self.next
            self.next += 1
            self.starting += 1
            return index

    def _stop_asked(self) -> bool:
        assert self.should_stop is not None
        try:
            return bool(self.should_stop())
        except BaseException as exc:
            self.error = self.error or exc
            return True

    def started_done(self) -> None:
        with self.cond:
            self.starting -= 1
            self.cond.notify_all()

    def failure(self) -> None:
        """Count a failure; the one that uses up the budget waits for every start in progress."""
        with self.cond:
            self.failures += 1
            if self.failures >= self.max_errors:
                self.cond.wait_for(lambda: self.starting == 0)

    def abort(self, exc: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = exc
            if self.stop_reason is None:
                self.stop_reason = f"a callback raised {type(exc).__name__}"
