"""From a received alert to runs: journal, match, deduplicate, then run under policy.

``AlertIntake.receive`` is the part that must finish before a sender is answered:
one journal transaction records each alert, the runbooks it matched and a claim per
run it may start (or why it may not: a duplicate, a parameter that will not
render). ``AlertIntake.run`` does the slow part later, off the request thread:
``Executor.submit`` under policy, as an unattended request fired by the alert.

The HTTP receiver and ``selfdrive trigger`` share this path, so trying an alert out
on the command line journals, matches, deduplicates and decides exactly as a real
one would.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from selfdrive.config.model import TeamConfig
from selfdrive.executor.engine import Executor, RunRequest
from selfdrive.journal.records import RunRecord
from selfdrive.journal.store import Journal, owner_alive
from selfdrive.policy.decide import Firing
from selfdrive.registry.load import Registry
from selfdrive.sdk.errors import SelfdriveError
from selfdrive.sdk.vocabulary import Level, Risk
from selfdrive.triggers.match import Match, match_alert, order_matches
from selfdrive.triggers.payloads import FIRING, Alert, Limits

#: Who asks for runs an alert starts (approvers are never this "person").
ALERT_REQUESTER = "alert"
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class Job:
    """One run an alert may start: a claim in the journal, waiting for a worker."""

    alert_id: int
    claim_id: int
    alert: Alert
    runbook: str
    params: dict[str, Any]
    dedup_key: str
    diagnostic: bool


@dataclass(frozen=True)
class Received:
    """What the journal now holds for one alert, and the runs it may start."""

    alert_id: int
    alert: Alert
    matched: tuple[str, ...]
    claims: tuple[dict[str, Any], ...]
    jobs: tuple[Job, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {"id": self.alert_id, "name": self.alert.name, "status": self.alert.status,
                "fingerprint": self.alert.fingerprint, "matched": list(self.matched),
                "claims": [{k: c[k] for k in ("runbook", "outcome", "run_id", "detail")}
                           for c in self.claims]}


@dataclass(frozen=True)
class JobResult:
    """Where one claimed run ended (or why it never started)."""

    job: Job
    run: RunRecord | None
    exit_code: int | None
    error: str | None = None


class AlertIntake:
    """Journals alerts and runs what they fire; shared by the receiver and ``trigger``."""

    def __init__(self, config: TeamConfig, registry: Registry, journal: Journal,
                 executor: Executor, *, log: Log = _quiet,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.registry = registry
        self.journal = journal
        self.executor = executor
        self.log = log
        self.clock = clock
        rc = config.receiver
        self.limits = Limits(max_alerts=rc.max_alerts, max_labels=rc.max_labels,
                             max_label_chars=rc.max_label_chars,
                             max_annotation_chars=rc.max_annotation_chars)
        self._brief_lock = threading.Lock()

    # -- the fast part: before the sender is answered ---------------------------

    def is_diagnostic(self, match: Match) -> bool:
        """At L2 and above a matching READ_ONLY runbook is a diagnostic: its output
        becomes the alert's context brief."""
        return self.config.level >= Level.L2 and match.runbook.risk is Risk.READ_ONLY

    def receive(self, alerts: Sequence[Alert], *, remote: str | None = None) -> list[Received]:
        """Journal ``alerts`` with their matches and run claims, in one transaction.

        Raises :class:`~selfdrive.sdk.errors.JournalError` when the journal cannot take
        them; then nothing of them is recorded and the sender should retry.
        """
        now = self.clock().astimezone(UTC).isoformat(timespec="microseconds")
        rows: list[dict[str, Any]] = []
        matches: list[list[Match]] = []
        names: list[list[str]] = []
        for alert in alerts:
            every = order_matches(match_alert(alert, self.registry), self.journal)
            found_names = [m.runbook.name for m in every]
            found = every if alert.status == FIRING else []  # the rest only journaled
            claims = []
            for m in found:
                if m.error is not None:
                    claims.append({"runbook": m.runbook.name, "outcome": "error",
                                   "detail": m.error, "diagnostic": self.is_diagnostic(m)})
                else:
                    claims.append({"runbook": m.runbook.name, "outcome": "claim",
                                   "dedup_key": f"alert:{m.runbook.name}:{alert.fingerprint}:"
                                                f"{now}",
                                   "diagnostic": self.is_diagnostic(m)})
            rows.append({"received_at": now, "source": alert.source, "name": alert.name,
                         "status": alert.status, "labels": dict(alert.labels),
                         "annotations": dict(alert.annotations),
                         "fingerprint": alert.fingerprint, "starts_at": alert.starts_at,
                         "group_key": alert.group_key, "matched": found_names,
                         "remote": remote, "reason": alert.note, "claims": claims})
            matches.append(found)
            names.append(found_names)
        window = self.config.receiver.dedup_window.total_seconds()
        recorded = self.journal.record_alerts(rows, window=window)
        out = []
        for alert, found, matched, rec in zip(alerts, matches, names, recorded, strict=True):
            by_name = {m.runbook.name: m for m in found}
            jobs = tuple(Job(alert_id=rec["id"], claim_id=c["id"], alert=alert,
                             runbook=c["runbook"], params=dict(by_name[c["runbook"]].params),
                             dedup_key=c["dedup_key"], diagnostic=c["diagnostic"])
                         for c in rec["claims"] if c["outcome"] == "queued")
            out.append(Received(alert_id=rec["id"], alert=alert,
                                matched=tuple(matched), claims=tuple(rec["claims"]),
                                jobs=jobs))
            self.log(_describe(out[-1]))
        return out

    # -- the slow part: on a worker ---------------------------------------------

    def run(self, job: Job) -> JobResult:
        """Run one claimed job under policy; journal where it ended on its claim."""
        alert = job.alert
        firing = Firing(kind="alert", name=alert.name, own=True,
                        domain=alert.labels.get(self.config.receiver.domain_label))
        try:
            outcome = self.executor.submit(RunRequest(
                runbook=job.runbook, params=job.params, requested_by=ALERT_REQUESTER,
                firing=firing, dedup_key=job.dedup_key), approver=None)
        except Exception as exc:  # never let one alert's run take the worker down
            error = str(exc) if isinstance(exc, SelfdriveError) else \
                f"{type(exc).__name__}: {exc}"
            run = self._quietly(lambda: self.journal.run_for_dedup_key(job.dedup_key))
            self._quietly(lambda: self.journal.update_alert_claim(
                job.claim_id, outcome="error", run_id=run.id if run else None,
                detail=f"the run could not be started or finished: {error}"))
            self.log(f"alert #{job.alert_id} {alert.name}: {job.runbook} failed to run: {error}")
            if job.diagnostic and run is not None:
                self.refresh_brief(job.alert_id)
            return JobResult(job, run, None, error)
        run = outcome.run
        self._quietly(lambda: self.journal.update_alert_claim(
            job.claim_id, outcome="started", run_id=run.id,
            detail=f"{run.status.value} ({run.mode})"))
        self.log(f"alert #{job.alert_id} {alert.name}: {job.runbook} run {run.id} "
                 f"{run.status.value} ({run.mode})")
        if job.diagnostic:
            self.refresh_brief(job.alert_id)
        return JobResult(job, run, outcome.exit_code)

    def refresh_brief(self, alert_id: int) -> str | None:
        """Render the alert's context brief from its diagnostic runs and store it."""
        from selfdrive.triggers.brief import render_brief

        with self._brief_lock:  # two diagnostics finishing together: the later one wins
            try:
                brief = render_brief(self.journal, alert_id, team=self.config.team)
                if brief is not None:
                    self.journal.set_alert_brief(alert_id, brief)
                return brief
            except Exception as exc:  # a brief is a convenience; the runs are journaled
                self.log(f"alert #{alert_id}: could not render its brief: {exc}")
                return None

    def _quietly(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except SelfdriveError as exc:
            self.log(f"journal: {exc}")
            return None

    # -- after a restart ---------------------------------------------------------

    def orphaned_jobs(self) -> list[Job]:
        """Claims a dead receiver acknowledged but never started, made into jobs again.

        A claim still inside the dedup window is started now (its sender was told the
        alert was taken); an older one is marked ``abandoned``, never run late.
        """
        window = self.config.receiver.dedup_window
        now = self.clock().astimezone(UTC)
        jobs = []
        for claim in self.journal.alert_claims(outcome="queued"):
            if owner_alive(claim.get("owner") or "") is not False:
                continue
            run = self.journal.run_for_dedup_key(claim["dedup_key"])
            if run is not None:
                self.journal.update_alert_claim(claim["id"], outcome="started", run_id=run.id,
                                                detail=f"{run.status.value} ({run.mode})")
                continue
            age = now - datetime.fromisoformat(claim["claimed_at"])
            row = self.journal.get_alert(claim["alert_id"])
            job = self._job_again(claim, row) if row is not None and age <= window else None
            if job is None:
                self.journal.update_alert_claim(
                    claim["id"], outcome="abandoned",
                    detail="the receiver stopped before starting this run; not started late")
                continue
            jobs.append(job)
        return jobs

    def _job_again(self, claim: dict[str, Any], row: dict[str, Any]) -> Job | None:
        alert = Alert(name=row["name"], labels=row["labels"], annotations=row["annotations"],
                      status=row["status"], fingerprint=row["fingerprint"],
                      source=row["source"], starts_at=row["starts_at"],
                      group_key=row["group_key"])
        for m in match_alert(alert, self.registry):
            if m.runbook.name == claim["runbook"] and m.error is None:
                return Job(alert_id=row["id"], claim_id=claim["id"], alert=alert,
                           runbook=m.runbook.name, params=dict(m.params),
                           dedup_key=claim["dedup_key"], diagnostic=bool(claim["diagnostic"]))
        return None


def _describe(received: Received) -> str:
    a = received.alert
    parts = [f"alert #{received.alert_id} {a.name} {a.status} (fingerprint {a.fingerprint}, "
             f"{a.source})"]
    if not received.matched:
        parts.append("matches no runbook")
    for c in received.claims:
        parts.append(f"{c['runbook']}: {c['outcome']}"
                     + (f" ({c['detail']})" if c.get("detail") else ""))
    return "; ".join(parts)


class Dispatcher:
    """Worker threads that run jobs off the request thread.

    Jobs for one runbook always go to the same worker, so one runbook's runs start
    one after another: its rate limit is counted exactly within this process, and a
    burst for one runbook cannot occupy every worker.
    """

    def __init__(self, intake: AlertIntake, workers: int) -> None:
        self.intake = intake
        self.queues: list[queue.Queue[Job | None]] = [queue.Queue() for _ in range(workers)]
        self.threads = [threading.Thread(target=self._work, args=(q,), daemon=True,
                                         name=f"selfdrive-alert-worker-{i}")
                        for i, q in enumerate(self.queues)]
        self.busy = 0
        self._lock = threading.Lock()
        for thread in self.threads:
            thread.start()

    def submit(self, job: Job) -> None:
        shard = zlib.crc32(job.runbook.encode()) % len(self.queues)
        self.queues[shard].put(job)

    @property
    def pending(self) -> int:
        return sum(q.qsize() for q in self.queues) + self.busy

    def _work(self, jobs: queue.Queue[Job | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            with self._lock:
                self.busy += 1
            try:
                self.intake.run(job)
            except BaseException as exc:  # a worker must outlive any job
                self.intake.log(f"worker: job for alert #{job.alert_id} crashed: {exc!r}")
            finally:
                with self._lock:
                    self.busy -= 1

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued job has run; True if that happened in time."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.pending

    def stop(self, timeout: float | None = None) -> None:
        """Let each worker finish its current job; jobs still queued stay ``queued`` in
        the journal and are picked up by the next receiver (see ``orphaned_jobs``)."""
        for q in self.queues:
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            q.put(None)
        for thread in self.threads:
            thread.join(timeout)
