"""The simulated people: an on-call approver and an on-call fixer.

The approver watches the journal for runs waiting for approval and, after a seeded
delay, approves (then resumes) or denies them with ``selfdrive --as oncall-bob``; a
run whose alert has resolved meanwhile is denied, as a person would. The fixer fixes by
hand what is still broken ``fix_delay`` seconds after its fault. Every answer and every
fix is a human touch, recorded for the score.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from scenario import Humans

APPROVER = "oncall-bob"
SELFDRIVE = str(Path(sys.executable).with_name("selfdrive"))


def journal_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Read the journal without writing to it (WAL readers never block its writers)."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return list(con.execute(sql, params))
    except sqlite3.OperationalError:  # no such table yet: the receiver is still starting
        return []
    finally:
        con.close()


class Approver:
    def __init__(self, project: Path, seed: int, humans: Humans) -> None:
        self.project = project
        self.db = project / ".selfdrive" / "journal.db"
        self.seed = seed
        self.humans = humans
        self.touches: list[dict[str, Any]] = []
        self.seen: set[str] = set()  # run id and plan hash answered
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="approver")
        self.children: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()
        self.answering: list[threading.Thread] = []

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        for t in self.answering:
            t.join(timeout=120)
        for child in self.children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()

    def busy(self) -> bool:
        # a request still waiting is not work in progress: the level can end around it
        pending = journal_rows(self.db, "SELECT id FROM runs WHERE status IN "
                               "('approved', 'running', 'requested', 'decided', "
                               "'rolling_back')")
        return (bool(pending) or any(c.poll() is None for c in self.children)
                or any(t.is_alive() for t in self.answering))

    def _sd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SELFDRIVE, "--as", APPROVER, *args], cwd=self.project,
                              check=False, capture_output=True, text=True, timeout=120)

    def _loop(self) -> None:
        due: list[tuple[float, str, bool, str]] = []
        while not self.stop_event.is_set():
            for row in journal_rows(self.db, "SELECT r.id, r.runbook, r.plan_hash, a.fingerprint "
                                    "FROM runs r LEFT JOIN alert_runs a ON a.run_id = r.id "
                                    "WHERE r.status = 'pending_approval'"):
                # a plan that changed before it ran (resume) is a new question
                key = f"{row['id']}:{row['plan_hash']}"
                if key in self.seen:
                    continue
                self.seen.add(key)
                rng = random.Random(f"{self.seed}:{row['runbook']}:{row['fingerprint']}")
                delay = rng.uniform(*self.humans.approve_delay)
                deny = rng.random() < self.humans.deny_share
                due.append((time.monotonic() + delay, row["id"], deny, row["fingerprint"] or ""))
            now = time.monotonic()
            for item in [d for d in due if d[0] <= now]:
                due.remove(item)
                t = threading.Thread(target=self._answer, args=item[1:], daemon=True)
                t.start()
                self.answering.append(t)
            self.stop_event.wait(0.3)

    def _resolved(self, fingerprint: str) -> bool:
        if not fingerprint:
            return False
        rows = journal_rows(self.db, "SELECT status FROM alerts WHERE fingerprint = ? "
                            "ORDER BY id DESC LIMIT 1", (fingerprint,))
        return bool(rows) and rows[0]["status"] == "resolved"

    def _answer(self, run_id: str, deny: bool, fingerprint: str) -> None:
        if self.stop_event.is_set():  # the level is over: nobody answers any more
            return
        at = time.time()
        if self._resolved(fingerprint):
            proc = self._sd("deny", run_id, "--reason", "the alert resolved before I looked")
            action = "deny-resolved"
        elif deny:
            proc = self._sd("deny", run_id, "--reason", "not now: looking at it myself")
            action = "deny"
        else:
            proc = self._sd("approve", run_id, "--reason", "game day on-call")
            action = "approve"
            if proc.returncode == 0 and not self.stop_event.is_set():
                child = subprocess.Popen([SELFDRIVE, "--as", APPROVER, "resume", run_id],
                                         cwd=self.project, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
                with self.lock:
                    self.children.append(child)
        with self.lock:
            self.touches.append({"kind": action, "run_id": run_id, "at": at,
                                 "fingerprint": fingerprint, "exit": proc.returncode,
                                 "stderr": proc.stderr.strip()[-300:]})
