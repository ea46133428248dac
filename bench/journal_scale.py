"""Learning queries against a big journal: 1,000,000 runs and 5,000,000 steps.

Generates a synthetic journal into a tmp folder (the real schema and indexes: the
file is created and migrated by ``open_journal`` first), then times, in-process, on a
journal opened as the CLI opens it:

* ``SELECT COUNT(*) FROM runs`` — the peer: the cheapest question about every run;
* ``runbook_stats`` (what ``selfdrive stats`` prints) for the default window, for one
  runbook, and for all time;
* ``recommend`` (what ``selfdrive learn`` prints) over a registry of all the runbooks;
* one policy decision, ``Executor.decide`` (track record + guardrail reads + decide);
* ``rank_matches`` for an alert four runbooks match.

Target: each of stats, learn and the decision under 500 ms.

The journal: R runs over D days (default 1,000,000 over 365: ~2,700 a day), 200
runbooks with skewed traffic (runbook i gets a share ∝ 1/(i+1): the busiest has
~17 % of all runs), 15 % dry-runs, 35 % approved, 50 % autonomous; 40 % of live runs
fired by an alert (with its ``alerts`` and ``alert_runs`` rows), 10 % by a schedule;
outcomes mostly verified successes, with verification failures, rollbacks, failures,
unmet preconditions, denials and expiries; 5.5 steps per run on average (plan steps,
preconditions, the body, commands, verification attempts, rollbacks); 100,000
alerts that matched no runbook. The hash-chained ``events`` table is left empty:
no learning query reads it. Generation writes with ``journal_mode=OFF`` and
``synchronous=OFF`` in big ``executemany`` batches, then puts the journal back in
WAL mode.

    .venv/bin/python bench/journal_scale.py                      # generate, time, delete
    .venv/bin/python bench/journal_scale.py --keep --dir /var/tmp/j   # keep the file
    .venv/bin/python bench/journal_scale.py --reuse /var/tmp/j/journal.db -r 9
    .venv/bin/python bench/journal_scale.py --runs 100000 --json    # smaller, quicker
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from selfdrive import Context, Risk, alert, runbook

TARGET_MS = 500.0
RUNBOOKS = 200
ALERT_NAMES = 50          # Alert00 … Alert49 each fire four runbooks
UNCOVERED_NAMES = 10      # Orphan0 … Orphan9 fire none
BATCH = 100_000

RUN_COLS = ("id", "runbook", "mode", "status", "risk", "requested_by", "os_user", "params",
            "decision", "firing", "plan_hash", "dedup_key", "owner", "error", "runbook_file",
            "code_digest", "verified", "created_at", "started_at", "finished_at",
            "updated_at")
STEP_COLS = ("run_id", "seq", "phase", "kind", "name", "target", "command", "readonly",
             "planned", "status", "attempt", "exit_code", "stdout", "started_at",
             "finished_at", "duration")
RISKS = ("READ_ONLY", "LOW", "LOW", "MEDIUM", "MEDIUM", "MEDIUM", "HIGH", "CRITICAL")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def runbook_name(i: int) -> str:
    return f"rb-{i:03d}"


def alert_of(i: int) -> str:
    return f"Alert{i % ALERT_NAMES:02d}"


class Generator:
    """Writes the synthetic journal in chronological order, batch by batch."""

    def __init__(self, conn: sqlite3.Connection, *, runs: int, days: int, seed: int,
                 now: datetime) -> None:
        self.conn = conn
        self.total = runs
        self.rng = random.Random(seed)
        self.end = now.timestamp()
        self.start = self.end - days * 86400
        weights = [1 / (i + 1) for i in range(RUNBOOKS)]
        self.picks = self.rng.choices(range(RUNBOOKS), weights=weights, k=runs)
        # Per runbook: a typical duration, and whether it slows down over its last days.
        self.base = [self.rng.lognormvariate(2.0, 1.0) for _ in range(RUNBOOKS)]
        self.slowing = {i for i in range(RUNBOOKS) if i % 17 == 5}
        self.runs: list[tuple[Any, ...]] = []
        self.steps: list[tuple[Any, ...]] = []
        self.approvals: list[tuple[Any, ...]] = []
        self.alerts: list[tuple[Any, ...]] = []
        self.claims: list[tuple[Any, ...]] = []
        self.counts = dict.fromkeys(("runs", "steps", "approvals", "alerts", "alert_runs"), 0)
        self.alert_id = 0

    def flush(self, final: bool = False) -> None:
        def put(table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
            if rows and (final or len(rows) >= BATCH):
                marks = ", ".join("?" for _ in cols)
                self.conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) "
                                      f"VALUES ({marks})", rows)
                self.counts[table] += len(rows)
                rows.clear()

        put("alerts", ("id", "received_at", "source", "name", "status", "labels",
                       "annotations", "fingerprint", "matched"), self.alerts)
        put("runs", RUN_COLS, self.runs)
        put("alert_runs", ("alert_id", "runbook", "fingerprint", "dedup_key", "run_id",
                           "outcome", "diagnostic", "claimed_at", "updated_at"), self.claims)
        put("steps", STEP_COLS, self.steps)
        put("approvals", ("run_id", "decision", "actor", "os_user", "plan_hash", "at"),
            self.approvals)

    def alert(self, ts: float, name: str, matched: str) -> tuple[int, str]:
        self.alert_id += 1
        fingerprint = f"{self.rng.getrandbits(48):012x}"
        self.alerts.append((self.alert_id, iso(ts), "alertmanager", name, "firing",
                            '{"host":"web1"}', "{}", fingerprint, matched))
        return self.alert_id, fingerprint

    def generate(self) -> None:
        rng = self.rng
        span = self.end - self.start
        uncovered_every = max(1, self.total // 100_000)
        for n in range(self.total):
            ts = self.start + span * (n + rng.random()) / self.total
            i = self.picks[n]
            name = runbook_name(i)
            run_id = f"{datetime.fromtimestamp(ts, UTC):%Y%m%d-%H%M%S}-{n:06x}"
            if n % uncovered_every == 0:
                self.alert(ts, f"Orphan{rng.randrange(UNCOVERED_NAMES)}", "[]")
            self.run(n, ts, i, name, run_id)
            if len(self.steps) >= BATCH:
                self.flush()
        self.flush(final=True)

    def run(self, n: int, ts: float, i: int, name: str, run_id: str) -> None:
        rng = self.rng
        r = rng.random()
        mode = "dry-run" if r < 0.15 else "approval" if r < 0.5 else "autonomous"
        firing = dedup = None
        alert_ts = None
        f = rng.random()
        if mode != "dry-run" and f < 0.4:
            alert_name = alert_of(i)
            firing = f'{{"domain":null,"kind":"alert","name":"{alert_name}","own":true}}'
            alert_ts = ts - rng.uniform(0.05, 2.0)
            _, fingerprint = self.alert(alert_ts, alert_name,
                                               json.dumps([name], separators=(",", ":")))
            dedup = f"alert:{name}:{fingerprint}:{iso(alert_ts)}"
        elif mode != "dry-run" and f < 0.5:
            firing = f'{{"domain":null,"kind":"schedule","name":"{name}","own":true}}'
        created = iso(ts)
        status, verified, started, finished, error = "planned", None, None, None, None
        steps: list[tuple[str, str, str | None, str | None, int, int, str, int | None]] = [
            ("plan:precondition", "check", "ready", None, 1, 0, "ok", None),
            ("plan:body", "command", None, f"systemctl status {name}", 1, 0, "ok", 0),
            ("plan:body", "command", None, f"systemctl restart {name}", 0, 1, "planned", None),
        ]
        approval = None
        if mode != "dry-run":
            steps = steps[1:]
            o = rng.random()
            if mode == "approval" and o < 0.05:
                status, approval = "denied", "deny"
                finished = iso(ts + rng.uniform(30, 900))
            elif mode == "approval" and o < 0.07:
                status, finished = "expired", iso(ts + 3600)
            else:
                if mode == "approval":
                    approval = "approve"
                wait = rng.uniform(20, 600) if mode == "approval" else 0.05
                start = ts + wait
                slow = 2.5 if i in self.slowing and self.end - start < 5 * 86400 else 1.0
                took = self.base[i] * slow * rng.uniform(0.7, 1.4)
                started, finished = iso(start), iso(start + took)
                steps.append(("precondition", "check", "ready", None, 1, 0, "ok", None))
                o = rng.random()
                if o < 0.02:
                    status, error = "precondition_failed", "precondition ready unmet"
                    steps[-1] = ("precondition", "check", "ready", None, 1, 0, "failed", None)
                else:
                    steps.append(("body", "call", name.replace("-", "_"), None, 0, 0, "ok",
                                  None))
                    steps.append(("body", "command", None, f"systemctl restart {name}", 0, 0,
                                  "ok", 0))
                    if o < 0.05:
                        status, error = "rolled_back", "CommandFailedError: exit 1"
                        steps[-1] = ("body", "command", None, f"systemctl restart {name}", 0,
                                     0, "failed", 1)
                        steps.append(("rollback", "call", "undo", None, 0, 0, "ok", None))
                    elif o < 0.06:
                        status, error = "failed", "CommandFailedError: exit 1"
                    elif o < 0.065:
                        status, error = "interrupted", "process died; not re-run"
                    elif o < 0.095:
                        status, verified = "rolled_back", 0
                        error = "verification failed: healthy: returned False"
                        for attempt in (1, 2, 3):
                            steps.append(("verify", "check", "healthy", None, 1, 0, "failed",
                                          attempt))
                        steps.append(("rollback", "call", "undo", None, 0, 0, "ok", None))
                    else:
                        status, verified = "succeeded", 1
                        attempts = 1 if rng.random() < 0.95 else rng.choice((2, 3))
                        for attempt in range(1, attempts + 1):
                            steps.append(("verify", "check", "healthy", None, 1, 0,
                                          "ok" if attempt == attempts else "failed", attempt))
        runbook_risk = RISKS[i % len(RISKS)]
        self.runs.append((
            run_id, name, mode, status, runbook_risk, "alert" if firing else "alice", "alice",
            '{"host":"web1","token":"******"}',
            f'{{"mode":"{mode}","reasons":["level L4 (cross-environment) × {runbook_risk} risk: '
            f'autonomous (default matrix)"],"rule":"auto"}}',
            firing, f"{n:064x}", dedup, None, error, f"runbooks/{name}.py:1",
            f"{i:016x}", verified, created, started, finished, finished or created))
        for seq, (phase, kind, step_name, command, readonly, planned, st, attempt) in \
                enumerate(steps, 1):
            out = "active (running)\n" if command and readonly else None
            self.steps.append((run_id, seq, phase, kind, step_name, "local" if command else None,
                               command, readonly, planned, st,
                               attempt if kind == "check" and phase == "verify" else None,
                               0 if command and st == "ok" else None, out, started or created,
                               finished or created, 0.01))
        if approval:
            self.approvals.append((run_id, approval, "bob", "bob", f"{n:064x}",
                                   iso(ts + 10)))
        if dedup is not None:
            self.claims.append((self.alert_id, name, None, dedup, run_id, "started", 0,
                                iso(alert_ts or ts), iso(ts)))


def generate(path: Path, *, runs: int, days: int, seed: int, now: datetime) -> dict[str, Any]:
    """Create, migrate (the real schema), then fill the journal; return row counts."""
    from selfdrive.journal.store import open_journal

    open_journal(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA temp_store=MEMORY")
    started = time.perf_counter()
    conn.execute("BEGIN")
    gen = Generator(conn, runs=runs, days=days, seed=seed, now=now)
    gen.generate()
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return {**gen.counts, "seconds": round(time.perf_counter() - started, 1),
            "bytes": path.stat().st_size}


# -- timing ------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """First call (cold caches of this process) and the median of ``repeat`` more."""
    t0 = time.perf_counter()
    fn()
    first = (time.perf_counter() - t0) * 1000
    laps = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        laps.append((time.perf_counter() - t0) * 1000)
    return {"first_ms": first, "median_ms": statistics.median(laps), "max_ms": max(laps)}


def make_registry() -> Any:
    """The 200 runbooks the journal talks about, each fired by its alert."""
    from selfdrive.registry.load import Registry

    books = []
    for i in range(RUNBOOKS):
        def body(ctx: Context, host: str = "web1") -> None:
            """Restart the service."""
            ctx.run("systemctl restart svc")

        body.__name__ = f"rb_{i:03d}"
        rb = runbook(risk=Risk[RISKS[i % len(RISKS)]], name=runbook_name(i),
                     triggers=[alert(alert_of(i))])(body)

        def healthy(ctx: Context) -> bool:
            return True

        rb.verify(healthy)
        books.append(rb)
    # One runbook that never ran: stale.
    def never(ctx: Context) -> None:
        """Never run."""
        ctx.run("true")

    books.append(runbook(risk=Risk.LOW, name="never-run")(never))
    return Registry.of(*books)


def measure(path: Path, *, repeat: int, now: datetime) -> dict[str, Any]:
    from selfdrive.config import parse_config
    from selfdrive.executor.engine import Executor, RunRequest
    from selfdrive.journal.store import open_journal
    from selfdrive.learning import rank_matches, recommend, runbook_stats

    journal = open_journal(path)
    config = parse_config({"team": "bench", "level": "L4", "entry_points": False},
                          path.parent / "selfdrive.toml")
    registry = make_registry()
    executor = Executor(config, registry, journal)
    busiest = registry.get(runbook_name(0))
    since = (now - timedelta(days=30)).isoformat(timespec="microseconds")
    week = (now - timedelta(days=7)).isoformat(timespec="microseconds")
    candidates = [runbook_name(i) for i in range(RUNBOOKS) if alert_of(i) == "Alert00"]

    def peer() -> int:
        return int(journal._read("SELECT COUNT(*) AS n FROM runs")[0]["n"])

    cases: dict[str, Callable[[], Any]] = {
        "SELECT COUNT(*) FROM runs (peer)": peer,
        "stats, last 30 days (default)": lambda: runbook_stats(journal, since=since),
        "stats, last 7 days": lambda: runbook_stats(journal, since=week),
        f"stats {busiest.name} (busiest), 30 days": lambda: runbook_stats(
            journal, since=since, runbook=busiest.name),
        "learn, last 30 days (default)": lambda: recommend(
            journal, registry, config, since=since, now=now),
        f"policy decision ({busiest.name}, Executor.decide)": lambda: executor.decide(
            busiest, RunRequest(runbook=busiest.name, params={}, requested_by="alice")),
        f"rank_matches (Alert00, {len(candidates)} runbooks)": lambda: rank_matches(
            candidates, "Alert00", journal),
        "stats, all time": lambda: runbook_stats(journal, since=None),
    }
    out = {}
    for label, fn in cases.items():
        out[label] = timed(fn, repeat)
    journal.close()
    with tempfile.TemporaryDirectory(prefix="journal-scale-cli-") as project:
        out["`selfdrive stats` CLI, whole process"] = timed(cli_stats(path, Path(project)),
                                                            repeat)
    return out


def cli_stats(path: Path, project: Path) -> Callable[[], Any]:
    """``selfdrive stats --json`` as a user runs it: a fresh process on this journal."""
    (project / "runbooks").mkdir()
    (project / "selfdrive.toml").write_text(
        f'team = "bench"\nlevel = "L4"\nentry_points = false\njournal = "{path}"\n')
    exe = str(Path(sys.executable).parent / "selfdrive")

    def run() -> None:
        subprocess.run([exe, "stats", "--json"], cwd=project, check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "SELFDRIVE_USER": "bench"})

    return run


def remove_journal(path: Path) -> None:
    """The journal and what SQLite and the write gate keep beside it."""
    for suffix in ("", "-wal", "-shm", "-journal", ".write.lock", ".migrate.lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("-r", "--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the journal")
    parser.add_argument("--keep", action="store_true", help="keep the journal afterwards")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="time an existing journal made by --keep (skip generating)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    now = datetime.now(UTC)
    with contextlib.ExitStack() as cleanup:
        if args.reuse is not None:
            path, made = args.reuse, {}
            now = datetime.fromisoformat(sqlite3.connect(path).execute(
                "SELECT MAX(created_at) FROM runs").fetchone()[0]) + timedelta(minutes=1)
        else:
            if args.dir is not None:
                args.dir.mkdir(parents=True, exist_ok=True)
                path = args.dir / "journal.db"
                if path.exists():
                    sys.exit(f"{path} exists; use --reuse {path} or another --dir")
            else:
                path = Path(cleanup.enter_context(tempfile.TemporaryDirectory(
                    prefix="journal-scale-"))) / "journal.db"
            if args.keep:
                cleanup.callback(print, f"kept {path}", file=sys.stderr)
            else:  # whatever ends the run (an error, Ctrl-C), the generated journal goes
                cleanup.callback(remove_journal, path)
            print(f"generating {args.runs:,} runs into {path} …", file=sys.stderr)
            made = generate(path, runs=args.runs, days=args.days, seed=args.seed, now=now)
            print(f"  {made}", file=sys.stderr)
        figures = measure(path, repeat=args.repeat, now=now)
    peer = next(iter(figures.values()))["median_ms"]
    if args.json:
        print(json.dumps({"journal": str(path), "generated": made, "figures": figures},
                         indent=2))
    else:
        print(f"{'query':<44} {'first':>9} {'median':>9} {'max':>9} {'× peer':>8}")
        for label, f in figures.items():
            ratio = f["median_ms"] / peer if peer else math.nan
            print(f"{label:<44} {f['first_ms']:>7.1f}ms {f['median_ms']:>7.1f}ms "
                  f"{f['max_ms']:>7.1f}ms {ratio:>7.1f}×")
    slow = [label for label, f in figures.items() if label.startswith(("stats,", "learn",
                                                                       "policy"))
            and not label.endswith("all time") and f["first_ms"] > TARGET_MS]
    for label in slow:
        print(f"OVER TARGET ({TARGET_MS:.0f} ms): {label}", file=sys.stderr)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
