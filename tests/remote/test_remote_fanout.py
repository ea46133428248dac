"""fan_out: concurrency cap, error budget, start/finish ordering, on real and fake targets."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import pytest
from remote_support import Sshd, cmd

from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult
from selfdrive.targets.base import Target
from selfdrive.targets.fanout import FanoutResult, fan_out
from selfdrive.targets.ssh import SshTarget

FAILING = {3, 5, 7, 9}  # 1-based positions of the hosts whose command exits 1


@dataclass
class Trace:
    """What the callbacks saw, with one global sequence number per event."""

    seq: itertools.count[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)
    starts: dict[str, int] = field(default_factory=dict)
    finishes: dict[str, int] = field(default_factory=dict)
    results: dict[str, CommandResult] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0

    def on_start(self, target: Target, command: Command) -> object:
        with self.lock:
            self.starts[target.name] = next(self.seq)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return f"token-{target.name}"

    def on_finish(self, target: Target, command: Command, result: CommandResult,
                  token: object) -> None:
        assert token == f"token-{target.name}"
        assert target.name in self.starts  # intent before result
        with self.lock:
            self.in_flight -= 1
            self.finishes[target.name] = next(self.seq)
            self.results[target.name] = result

    def failure_finishes(self) -> list[int]:
        return sorted(s for n, s in self.finishes.items() if not self.results[n].ok)


class FakeTarget:
    """A target that sleeps, then exits with a chosen code."""

    def __init__(self, name: str, code: int = 0, delay: float = 0.0) -> None:
        self.name = name
        self.code = code
        self.delay = delay

    def run(self, command: Command, timeout: float) -> CommandResult:
        time.sleep(self.delay)
        return CommandResult(command=command, target=self.name, exit_code=self.code)

    def close(self) -> None:
        pass


def check_invariants(result: FanoutResult, trace: Trace, names: list[str]) -> None:
    assert [r.target for r in result.runs] == names  # input order
    assert set(result.succeeded) | set(result.failed) | set(result.skipped) == set(names)
    for run in result.runs:
        if run.skipped:
            assert run.target not in trace.starts
        else:
            assert run.target in trace.starts and run.target in trace.finishes
            assert trace.results[run.target] is run.result


# -- fake targets: fast, exact ---------------------------------------------------------

def test_all_ok_and_results_in_input_order() -> None:
    targets = [FakeTarget(f"f{i}", delay=0.01 * (5 - i)) for i in range(5)]
    trace = Trace()
    result = fan_out(targets, lambda t: cmd(f"echo {t.name}"), timeout=5, max_concurrency=5,
                     max_errors=1, on_start=trace.on_start, on_finish=trace.on_finish)
    assert result.ok and result.succeeded == [f"f{i}" for i in range(5)]
    assert result.failed == [] and result.skipped == [] and result.stop_reason is None
    assert list(result.results) == [f"f{i}" for i in range(5)]
    assert result["f2"] is not None and str(result["f2"].command) == "echo f2"
    assert fan_out([], lambda t: cmd("x"), timeout=1).ok  # nothing to do


def test_never_more_than_max_concurrency_in_flight() -> None:
    targets = [FakeTarget(f"f{i}", delay=0.02) for i in range(20)]
    trace = Trace()
    result = fan_out(targets, lambda t: cmd("x"), timeout=5, max_concurrency=3,
                     max_errors=1, on_start=trace.on_start, on_finish=trace.on_finish)
    assert result.ok
    assert trace.max_in_flight == 3


def test_commands_are_rendered_before_any_target_starts() -> None:
    trace = Trace()

    def render(t: Target) -> Command:
        if t.name == "f3":
            raise ValueError("bad template")
        return cmd("x")

    with pytest.raises(ValueError, match="bad template"):
        fan_out([FakeTarget(f"f{i}") for i in range(5)], render, timeout=1,
                on_start=trace.on_start)
    assert trace.starts == {}


def test_should_stop_halts_new_starts() -> None:
    trace = Trace()
    result = fan_out([FakeTarget(f"f{i}") for i in range(6)], lambda t: cmd("x"), timeout=1,
                     max_concurrency=1, on_start=trace.on_start, on_finish=trace.on_finish,
                     should_stop=lambda: len(trace.finishes) >= 2)
    assert result.succeeded == ["f0", "f1"]
    assert result.skipped == ["f2", "f3", "f4", "f5"]
    assert not result.ok and result.stop_reason == "stopped by the caller"


def test_a_raising_on_start_stops_new_starts_and_is_re_raised() -> None:
    trace = Trace()
    ran: list[str] = []

    class Recording(FakeTarget):
        def run(self, command: Command, timeout: float) -> CommandResult:
            ran.append(self.name)
            return super().run(command, timeout)

    def on_start(target: Target, command: Command) -> object:
        if target.name == "f2":
            raise RuntimeError("journal is fenced")
        return trace.on_start(target, command)

    with pytest.raises(RuntimeError, match="journal is fenced"):
        fan_out([Recording(f"f{i}") for i in range(5)], lambda t: cmd("x"), timeout=1,
                max_concurrency=1, on_start=on_start, on_finish=trace.on_finish)
    assert ran == ["f0", "f1"]  # f2's intent was not recorded, so it did not run


def test_a_target_that_raises_is_a_failure_with_unknown_outcome() -> None:
    class Broken(FakeTarget):
        def run(self, command: Command, timeout: float) -> CommandResult:
            raise OSError("bug")

    result = fan_out([Broken("b")], lambda t: cmd("x"), timeout=1)
    r = result["b"]
    assert r is not None and r.exit_code is None
    assert r.error == "outcome unknown: the target raised OSError: bug"
    assert result.failed == ["b"]


def test_error_budget_with_fake_targets_and_wide_concurrency() -> None:
    names = [f"f{i}" for i in range(1, 31)]
    targets = [FakeTarget(n, code=1 if i in FAILING else 0, delay=0.01)
               for i, n in enumerate(names, 1)]
    for _ in range(5):
        trace = Trace()
        result = fan_out(targets, lambda t: cmd("x"), timeout=5, max_concurrency=8,
                         max_errors=2, on_start=trace.on_start, on_finish=trace.on_finish)
        check_invariants(result, trace, names)
        second_failure = trace.failure_finishes()[1]
        assert all(s < second_failure for s in trace.starts.values())
        assert result.skipped and len(result.failed) >= 2


def test_a_failure_is_finished_only_after_every_start_in_progress() -> None:
    """f1 and f2 fail at once while f3 and f4 are still writing their intent: the
    failure's on_finish must come after those intents, and nothing else starts."""
    trace = Trace()

    def slow_start(target: Target, command: Command) -> object:
        if target.name not in ("f1", "f2"):
            time.sleep(0.1)  # a slow journal write
        return trace.on_start(target, command)

    targets = [FakeTarget(f"f{i}", code=1 if i <= 2 else 0, delay=0.03 if i <= 2 else 0)
               for i in range(1, 9)]
    result = fan_out(targets, lambda t: cmd("x"), timeout=1, max_concurrency=4, max_errors=2,
                     on_start=slow_start, on_finish=trace.on_finish)
    second_failure = trace.failure_finishes()[1]
    assert all(s < second_failure for s in trace.starts.values()), (trace.starts,
                                                                     trace.finishes)
    assert result.failed == ["f1", "f2"]
    # f5 may have been taken after the first failure, before the second.
    assert result.succeeded in (["f3", "f4"], ["f3", "f4", "f5"])
    assert result.skipped[-3:] == ["f6", "f7", "f8"]


# -- real hosts over SSH ---------------------------------------------------------------

def ssh_targets(sshd: Sshd, count: int) -> list[SshTarget]:
    return [sshd.target(i) for i in range(count)]


def fail_some(delay: float) -> object:
    def command_for(target: Target) -> Command:
        position = int(target.name[1:])
        return cmd(f"sleep {delay}; exit {1 if position in FAILING else 0}")
    return command_for


def test_serial_fan_out_stops_after_the_second_failure(sshd: Sshd) -> None:
    targets = ssh_targets(sshd, 10)
    trace = Trace()
    try:
        result = fan_out(targets, fail_some(0), timeout=10,  # type: ignore[arg-type]
                         max_concurrency=1, max_errors=2, on_start=trace.on_start,
                         on_finish=trace.on_finish)
    finally:
        for t in targets:
            t.close()
    names = [f"h{i}" for i in range(1, 11)]
    check_invariants(result, trace, names)
    assert result.succeeded == ["h1", "h2", "h4"]
    assert result.failed == ["h3", "h5"]
    assert result.skipped == ["h6", "h7", "h8", "h9", "h10"]
    assert list(trace.starts) == ["h1", "h2", "h3", "h4", "h5"]
    assert result.stop_reason == "2 target(s) failed (max_errors=2)"
    assert not result.ok
    assert all(t.connects == 0 for t in targets[5:])  # skipped hosts were never contacted


def test_parallel_fan_out_starts_nothing_after_the_second_failure(sshd: Sshd) -> None:
    targets = ssh_targets(sshd, 10)
    trace = Trace()
    try:
        result = fan_out(targets, fail_some(0.2), timeout=10,  # type: ignore[arg-type]
                         max_concurrency=4, max_errors=2, on_start=trace.on_start,
                         on_finish=trace.on_finish)
    finally:
        for t in targets:
            t.close()
    names = [f"h{i}" for i in range(1, 11)]
    check_invariants(result, trace, names)
    assert trace.max_in_flight <= 4
    second_failure = trace.failure_finishes()[1]
    late = [n for n, s in trace.starts.items() if s > second_failure]
    assert late == [], f"started after the 2nd failure was seen: {late}"
    assert len(result.failed) >= 2 and result.skipped
    assert "h10" in result.skipped
    for name in result.failed:
        r = result[name]
        assert r is not None and r.exit_code == 1
    for name in result.succeeded:
        r = result[name]
        assert r is not None and r.exit_code == 0


def test_fan_out_runs_all_hosts_in_parallel(sshd: Sshd) -> None:
    targets = ssh_targets(sshd, 12)
    started = time.monotonic()
    try:
        result = fan_out(targets, lambda t: cmd("sleep 0.5; echo $SSH_CONNECTION"),  # type: ignore[arg-type]
                         timeout=10, max_concurrency=12, max_errors=1)
    finally:
        for t in targets:
            t.close()
    elapsed = time.monotonic() - started
    assert result.ok, [r.error for r in result.results.values()]
    # Each host saw its own address: the connections really went to 12 places.
    seen = {name: r.stdout.split()[2] for name, r in result.results.items()}
    assert seen == {f"h{i + 1}": sshd.addresses[i] for i in range(12)}
    assert elapsed < 4, elapsed
