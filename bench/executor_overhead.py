"""What the executor adds per step, against running the same commands bare.

A runbook of 20 local ``true`` steps (``readonly=False``, LOW risk, team level L4 so it
runs autonomously, no hooks) goes through ``Executor.submit`` in-process, against a
real SQLite journal in a tmp folder (``synchronous=FULL``, as shipped). The baseline
is 20 bare ``subprocess.run(["true"])`` calls. Each side is repeated R times
(default 15) and the medians compared:

    overhead per step (ms) = (executor time - bare time) / 20

``submit`` does more than the live run: it decides (reads the track record), plans
(renders all 20 commands and records them as planned changes), journals the plan,
then runs. All of that is in the figure, as it is in every real run.

The breakdown times the parts of the same runs: journal writes (each is one
``BEGIN IMMEDIATE … COMMIT`` with an fsync under ``synchronous=FULL``), the planning
pass, the command processes (bash reading the command from stdin, in a new session,
with pipes), and the rest.
``--sync NORMAL`` re-runs with ``PRAGMA synchronous=NORMAL`` set on the bench's own
connection, to show what the fsyncs cost (the package is not changed).

    .venv/bin/python bench/executor_overhead.py [-r 15] [--steps 20] [--dir DIR]
                                                [--sync FULL|NORMAL] [--profile] [--json]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfdrive import Context, Risk, runbook
from selfdrive.config import TeamConfig
from selfdrive.executor.engine import Executor, RunRequest
from selfdrive.journal.store import SqliteJournal, open_journal
from selfdrive.registry.load import Registry
from selfdrive.targets.local import LocalTarget

TARGET_MS = 2.0
#: Journal methods that write: each its own BEGIN IMMEDIATE … COMMIT, or part of a
#: larger one inside ``Journal.atomic`` (transactions are counted from the COMMITs).
JOURNAL_WRITES = ("runs.begin_step", "runs.finish_step", "runs.create", "runs.transition",
                  "event", "locks.acquire", "locks.release", "flags.set")


def make_runbook(steps: int) -> Any:
    def twenty_trues(ctx: Context) -> None:
        """Runs `true` N times."""
        for _ in range(steps):
            ctx.run("true", readonly=False)

    twenty_trues.__name__ = "many_trues"
    return runbook(risk=Risk.LOW, name="many-trues")(twenty_trues)


class Timers:
    """Accumulates wall time spent inside wrapped callables, by label."""

    def __init__(self) -> None:
        self.total: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self._wrapped: list[tuple[Any, str, Any]] = []

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        """Time ``obj.attr`` (a dotted path: ``runs.get``) from now on; skip names this
        version does not have."""
        *path, attr = attr.split(".")
        for step in path:
            obj = getattr(obj, step, None)
        original: Callable[..., Any] | None = getattr(obj, attr, None)
        if original is None:
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.total[label] += time.perf_counter() - start
                self.calls[label] += 1

        self._wrapped.append((obj, attr, original))
        setattr(obj, attr, timed)

    def unwrap_all(self) -> None:
        for obj, attr, original in reversed(self._wrapped):
            setattr(obj, attr, original)
        self._wrapped.clear()

    def reset(self) -> None:
        self.total.clear()
        self.calls.clear()


def bare(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        subprocess.run(["true"], check=True)
    return time.perf_counter() - start


def bare_like_target(steps: int) -> float:
    """What LocalTarget spawns per command, without selfdrive: bash reading the command
    from its stdin (the target's reader), in a new session, with pipes."""
    from selfdrive.targets.shell import READER

    start = time.perf_counter()
    for _ in range(steps):
        proc = subprocess.Popen(["bash", "-c", READER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        proc.communicate(b"true\0")
    return time.perf_counter() - start


def setup(folder: Path, steps: int, sync: str, timers: Timers | None) -> Executor:
    data: dict[str, Any] = {"team": "bench", "level": "L4", "entry_points": False,
                            "journal": ".selfdrive/journal.db"}
    if "guardrails" in TeamConfig.model_fields:  # 15+ runs in a row must stay autonomous
        data["guardrails"] = {"rate_limit_per_runbook": 10**6, "rate_limit_total": 10**6}
    config = TeamConfig.model_validate(data).located(folder / "selfdrive.toml")
    journal = open_journal(config.journal_path)
    if timers is not None:
        def count(sql: str) -> None:
            if sql == "COMMIT":
                timers.calls["COMMIT"] += 1

        journal.conn.set_trace_callback(count)
    if sync != "FULL":
        journal.conn.execute(f"PRAGMA synchronous={sync}")
    registry = Registry.of(make_runbook(steps))
    executor = Executor(config, registry, journal)
    if timers is not None:
        for name in JOURNAL_WRITES:
            timers.wrap(journal, name, f"journal.{name}")
        for name in ("runs.get", "runs.count", "runs.recent_outcomes",
                     "runs.verified_successes", "flags.get"):
            timers.wrap(journal, name, f"journal.{name} (read)")
        for name in ("plan", "decide", "journal_plan", "_journal_plan"):
            timers.wrap(executor, name, f"executor.{name}")
        assert isinstance(executor.target, LocalTarget)
        timers.wrap(executor.target, "run", "target.run")
        # Popen.communicate(timeout=...) ends in Popen.wait(timeout), which polls with
        # time.sleep (1 ms first) when the child has closed its pipes but is not yet
        # reaped. Nothing else in a hook-less run sleeps, so this times that polling.
        timers.wrap(subprocess.time, "sleep", "time.sleep (Popen.wait polling)")
    return executor


def submit_once(executor: Executor) -> float:
    request = RunRequest(runbook="many-trues", params={}, requested_by="bench", os_user="bench")
    start = time.perf_counter()
    outcome = executor.submit(request)
    took = time.perf_counter() - start
    if outcome.exit_code != 0 or outcome.run.status.value != "succeeded":
        raise SystemExit(f"run ended {outcome.run.status.value}: {outcome.message}")
    if outcome.run.mode != "autonomous":
        raise SystemExit(f"run was {outcome.run.mode}, not autonomous")
    return took


def write_count(journal: SqliteJournal, run_id: str) -> int:
    rows = journal.conn.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (run_id,))
    return int(rows.fetchone()[0])


def measure(folder: Path, steps: int, repeats: int, sync: str) -> dict[str, Any]:
    timers = Timers()
    executor = setup(folder, steps, sync, timers)
    submit_once(executor)  # warm-up: imports, template cache, page cache
    bare(steps)
    bare_like_target(steps)
    timers.reset()

    executor_s, bare_s, target_like_s = [], [], []
    for _ in range(repeats):
        bare_s.append(bare(steps))
        target_like_s.append(bare_like_target(steps))
        executor_s.append(submit_once(executor))

    journal = executor.journal
    assert isinstance(journal, SqliteJournal)
    latest = journal.runs.find(limit=1)[0]
    step_rows = write_count(journal, latest.id)
    journal.close()

    timers.unwrap_all()
    ex, ba, tl = (statistics.median(v) for v in (executor_s, bare_s, target_like_s))
    per_run = {label: total / repeats for label, total in timers.total.items()}
    calls = {label: count // repeats for label, count in timers.calls.items()}
    journal_write_s = sum(per_run.get(f"journal.{n}", 0.0) for n in JOURNAL_WRITES)
    writes = calls.get("COMMIT", 0)
    overhead = (ex - ba) * 1000 / steps
    shell = (tl - ba) * 1000 / steps
    polling = per_run.get("time.sleep (Popen.wait polling)", 0.0) * 1000 / steps
    journal_ms = journal_write_s * 1000 / steps
    attribution = {
        "bash (command on stdin) + new session + pipes, vs bare `true`": shell,
        "Popen.wait(timeout) polling sleeps": polling,
        "journal write calls (a commit each, unless grouped)": journal_ms,
        "the rest (plan, decide, render, reads, bookkeeping)":
            overhead - shell - polling - journal_ms,
    }
    return {
        "steps": steps, "repeats": repeats, "synchronous": sync,
        "attribution_ms_per_step": attribution,
        "executor_ms": ex * 1000, "bare_ms": ba * 1000, "bare_like_target_ms": tl * 1000,
        "overhead_per_step_ms": (ex - ba) * 1000 / steps,
        "overhead_per_step_vs_target_like_ms": (ex - tl) * 1000 / steps,
        "ratio": ex / ba,
        "step_rows_per_run": step_rows,
        "journal_writes_per_run": writes,
        "journal_write_ms_per_run": journal_write_s * 1000,
        "journal_ms_per_write": journal_write_s * 1000 / max(writes, 1),
        "breakdown_ms_per_run": {k: v * 1000 for k, v in sorted(per_run.items())},
        "calls_per_run": dict(sorted(calls.items())),
        "samples_ms": {"executor": [x * 1000 for x in executor_s],
                       "bare": [x * 1000 for x in bare_s]},
    }


def profile(folder: Path, steps: int, repeats: int, sync: str) -> str:
    executor = setup(folder, steps, sync, None)
    submit_once(executor)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeats):
        submit_once(executor)
    prof.disable()
    executor.journal.close()  # type: ignore[attr-defined]
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


def report(r: dict[str, Any]) -> None:
    n = r["steps"]
    print(f"executor overhead: {n} local `true` steps, {r['repeats']} repeats, "
          f"journal synchronous={r['synchronous']} (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpu)")
    print(f"  Executor.submit            {r['executor_ms']:8.1f} ms per run (median)")
    print(f"  bare subprocess.run(true)  {r['bare_ms']:8.1f} ms per {n} calls (median)")
    print(f"  bash, true on stdin        {r['bare_like_target_ms']:8.1f} ms per {n} calls "
          f"(what LocalTarget spawns)")
    verdict = "OK" if r["overhead_per_step_ms"] < TARGET_MS else "OVER TARGET"
    print(f"  overhead per step          {r['overhead_per_step_ms']:8.2f} ms  "
          f"(target < {TARGET_MS:g} ms: {verdict}); ratio {r['ratio']:.2f}×")
    print(f"  … of which not the shell   {r['overhead_per_step_vs_target_like_ms']:8.2f} ms "
          f"per step (vs that bash)")
    print(f"\n  journal: {r['journal_writes_per_run']} write transactions per run "
          f"({r['step_rows_per_run']} step rows), {r['journal_write_ms_per_run']:.1f} ms "
          f"per run = {r['journal_ms_per_write']:.2f} ms per write")
    print("\n  where the overhead goes (ms per step; the rest is the residual):")
    for label, ms in r["attribution_ms_per_step"].items():
        print(f"    {label:<52}{ms:6.2f}")
    print("\n  time inside (ms per run; nested entries overlap):")
    for label, ms in sorted(r["breakdown_ms_per_run"].items(), key=lambda kv: -kv[1]):
        if label == "COMMIT":
            continue
        print(f"    {label:<36}{ms:8.1f}  ({r['calls_per_run'][label]} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dir", type=Path,
                        help="folder for the journal (default: a new tmp folder); the "
                             "filesystem matters, fsync is most of a journal write")
    parser.add_argument("--sync", choices=["FULL", "NORMAL", "OFF"], default="FULL",
                        help="PRAGMA synchronous for the bench's journal (shipped: FULL)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="selfdrive-bench-", dir=args.dir) as tmp:
        result = measure(Path(tmp) / "m", args.steps, args.repeats, args.sync)
        prof = profile(Path(tmp) / "p", args.steps, args.repeats, args.sync) \
            if args.profile else None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    if prof:
        print("\n" + prof)


if __name__ == "__main__":
    main()
