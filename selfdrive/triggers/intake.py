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

import dataclasses
import threading
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
from selfdrive.sdk.errors import (
    DuplicateRunError,
    JournalError,
    JournalLockedError,
    SelfdriveError,
)
from selfdrive.sdk.vocabulary import Level, Risk
from selfdrive.triggers.match import Match, match_alert, order_matches
from selfdrive.triggers.payloads import FIRING, IGNORED, Alert, Limits
from selfdrive.triggers.rules import AlertDedup

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
    """What the journal now holds for one alert, and the runs it may start.

    A ``replay`` (a delivery seen before) wrote nothing new: ``alert_id`` is the alert
    it repeats, and it starts nothing.
    """

    alert_id: int
    alert: Alert
    matched: tuple[str, ...]
    claims: tuple[dict[str, Any], ...]
    jobs: tuple[Job, ...] = field(default=())
    replay: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"id": self.alert_id, "name": self.alert.name, "status": self.alert.status,
                "fingerprint": self.alert.fingerprint, "matched": list(self.matched),
                "replay": self.replay, "note": self.alert.note,
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
        duplicate = AlertDedup(config.receiver.dedup_window.total_seconds())
        replays = config.receiver.replay_window.total_seconds()
        self._record = GroupCommit(lambda rows: journal.alerts.record(
            rows, duplicate=duplicate, replay_window=replays))

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
        clock = self.clock().astimezone(UTC)
        now = clock.isoformat(timespec="microseconds")
        alerts = [self._stale(alert, clock) for alert in alerts]
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
                         "remote": remote, "reason": alert.note, "claims": claims,
                         "deliveries": list(alert.deliveries)})
            matches.append(found)
            names.append(found_names)
        recorded = self._record(rows)
        out = []
        for sent, found, matched, rec in zip(alerts, matches, names, recorded, strict=True):
            alert = sent
            if rec["status"] != sent.status or rec["replay"]:  # the journal knew better
                alert = dataclasses.replace(sent, status=rec["status"], note=rec["reason"])
            by_name = {m.runbook.name: m for m in found}
            jobs = tuple(Job(alert_id=rec["id"], claim_id=c["id"], alert=alert,
                             runbook=c["runbook"], params=dict(by_name[c["runbook"]].params),
                             dedup_key=c["dedup_key"], diagnostic=c["diagnostic"])
                         for c in rec["claims"] if c["outcome"] == "queued")
            out.append(Received(alert_id=rec["id"], alert=alert,
                                matched=tuple(matched), claims=tuple(rec["claims"]),
                                jobs=jobs, replay=rec["replay"]))
            self.log(_describe(out[-1]))
        return out

    def _stale(self, alert: Alert, now: datetime) -> Alert:
        """A firing event with delivery ids that is older than ``replay_window`` starts
        nothing: its ids may be forgotten by now, so it could be a replay of anything."""
        if alert.status != FIRING or not alert.deliveries or not alert.starts_at:
            return alert
        window = self.config.receiver.replay_window
        try:
            began = datetime.fromisoformat(alert.starts_at)
            age = now - (began if began.tzinfo else began.replace(tzinfo=UTC))
        except (ValueError, OverflowError):
            return alert
        if age <= window:
            return alert
        return dataclasses.replace(
            alert, status=IGNORED,
            note=f"the event occurred at {alert.starts_at}, longer ago than "
                 f"receiver.replay_window ({window}): a late delivery or a replay; starts "
                 f"nothing")

    # -- the slow part: on a worker ---------------------------------------------

    def run(self, job: Job) -> JobResult:
        """Run one claimed job under policy; journal where it ended on its claim."""
        alert = job.alert
        firing = Firing(kind="alert", name=alert.name, own=True,
                        domain=alert.labels.get(self.config.receiver.domain_label))
        journal = self.executor.journal  # the run's own connection: one transaction

        def link(run: RunRecord) -> None:
            journal.alerts.update_claim(job.claim_id, outcome="started", run_id=run.id,
                                       detail=f"decided {run.mode}")

        try:
            outcome = self.executor.submit(RunRequest(
                runbook=job.runbook, params=job.params, requested_by=ALERT_REQUESTER,
                firing=firing, dedup_key=job.dedup_key, on_recorded=link), approver=None)
        except DuplicateRunError as dup:
            return self._taken(job, dup.run_id)
        except Exception as exc:  # never let one alert's run take the worker down
            error = str(exc) if isinstance(exc, SelfdriveError) else \
                f"{type(exc).__name__}: {exc}"
            run = self._quietly(lambda: self.journal.runs.for_dedup_key(job.dedup_key))
            self._quietly(lambda: self.journal.alerts.update_claim(
                job.claim_id, outcome="error", run_id=run.id if run else None,
                detail=f"the run could not be started or finished: {error}"))
            self.log(f"alert #{job.alert_id} {alert.name}: {job.runbook} failed to run: {error}")
            if job.diagnostic and run is not None:
                self.refresh_brief(job.alert_id)
            return JobResult(job, run, None, error)
        run = outcome.run
        self.log(f"alert #{job.alert_id} {alert.name}: {job.runbook} run {run.id} "
                 f"{run.status.value} ({run.mode})")
        if job.diagnostic:
            self.refresh_brief(job.alert_id)
        return JobResult(job, run, outcome.exit_code)

    def _taken(self, job: Job, run_id: str) -> JobResult:
        """Another process already recorded this claim's run (the orphaned worker of a
        receiver that stopped, while a new receiver queued the claim again): say so on
        the claim, linked to that run; never run it twice."""
        run = self._quietly(lambda: self.journal.runs.get(run_id))
        state = f"{run.status.value} ({run.mode})" if run is not None else "its state unknown"
        detail = (f"a duplicate of run {run_id}, which another process (the worker of a "
                  f"receiver that stopped) had already started for this claim: {state}; "
                  f"not run again")
        self._quietly(lambda: self.journal.alerts.update_claim(
            job.claim_id, outcome="duplicate", run_id=run_id, detail=detail))
        self.log(f"alert #{job.alert_id} {job.alert.name}: {job.runbook}: {detail}")
        return JobResult(job, run, None)

    def refresh_brief(self, alert_id: int) -> str | None:
        """Render the alert's context brief from its diagnostic runs and store it."""
        from selfdrive.triggers.brief import render_brief

        with self._brief_lock:  # two diagnostics finishing together: the later one wins
            try:
                brief = render_brief(self.journal, alert_id, team=self.config.team)
                if brief is not None:
                    self.journal.alerts.set_brief(alert_id, brief)
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
        for claim in self.journal.alerts.claims(outcome="queued"):
            if owner_alive(claim.get("owner") or "") is not False:
                continue
            if self._started(claim["id"], claim["dedup_key"]):
                continue
            age = now - datetime.fromisoformat(claim["claimed_at"])
            row = self.journal.alerts.get(claim["alert_id"])
            job = self._job_again(claim, row) if row is not None and age <= window else None
            if job is None:
                self.journal.alerts.update_claim(
                    claim["id"], outcome="abandoned",
                    detail="the receiver stopped before starting this run; not started late")
                continue
            jobs.append(job)
        return jobs

    def settle_lost(self, job: Job, *, give_up: bool = False) -> bool:
        """A job whose worker process died holding it: True if it should run again.

        If its run exists, the claim records where the run rests (interrupted, once the
        journal has recovered it) and nothing is re-run. If it never started, it runs
        again, unless ``give_up``: a job that took two workers down is not tried a third
        time.
        """
        if self._started(job.claim_id, job.dedup_key, why="; its worker process died"):
            return False
        if give_up:
            self.journal.alerts.update_claim(
                job.claim_id, outcome="error",
                detail="its worker process died twice before the run started; not retried")
            self.log(f"alert #{job.alert_id} {job.alert.name}: {job.runbook} not retried: "
                     f"two worker processes died on it")
            return False
        return True

    def _started(self, claim_id: int, dedup_key: str, why: str = "") -> bool:
        """If the claim's run exists, record it on the claim and say so."""
        run = self.journal.runs.for_dedup_key(dedup_key)
        if run is None:
            return False
        self.journal.alerts.update_claim(claim_id, outcome="started", run_id=run.id,
                                        detail=f"{run.status.value} ({run.mode}){why}")
        return True

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


class _Waiter:
    """One request's rows in a group commit, and what became of them."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.lead = False
        self.result: list[dict[str, Any]] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def outcome(self) -> list[dict[str, Any]]:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class GroupCommit:
    """Requests that arrive together share one journal transaction, so one fsync.

    No request waits for company: the first to arrive commits at once, alone. Those
    that arrive while a commit is in progress queue up, and the first of them then
    commits the whole queue in one transaction and hands over to the next. A request
    is answered only after the transaction holding its rows has committed. Inside a
    batch, rows are written in arrival order, so dedup sees earlier rows of the same
    batch. A batch that fails for a reason other than a busy journal is retried one
    request at a time, so one bad request cannot fail its neighbours.
    """

    def __init__(self, commit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._busy = False
        self.batches = 0  # transactions committed, for tests and benchmarks

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        me = _Waiter(rows)
        with self._lock:
            self._queue.append(me)
            if not self._busy:
                self._busy = me.lead = True
        if not me.lead:
            me.done.wait()
            if not me.lead:  # another request's transaction carried these rows
                return me.outcome()
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queue:  # hand over: the next in line commits what queued meanwhile
                    self._queue[0].lead = True
                    self._queue[0].done.set()
                else:
                    self._busy = False
        return me.outcome()

    def _run(self, batch: list[_Waiter]) -> None:
        try:
            results = self._commit([row for w in batch for row in w.rows])
            self.batches += 1
        except JournalLockedError as exc:  # the journal is busy: every sender retries
            for w in batch:
                w.error = exc
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for w in batch:
                    try:
                        w.result = self._commit(w.rows)
                        self.batches += 1
                    except Exception as own:
                        w.error = own
        else:
            at = 0
            for w in batch:
                w.result = results[at:at + len(w.rows)]
                at += len(w.rows)
        finally:
            for w in batch:
                if w.result is None and w.error is None:
                    w.error = JournalError("the alert's journal transaction was interrupted")
                if not w.lead:
                    w.done.set()


def _describe(received: Received) -> str:
    a = received.alert
    if received.replay:
        return (f"alert {a.name} ({a.source}): {a.note}; counted there, starts nothing")
    parts = [f"alert #{received.alert_id} {a.name} {a.status} (fingerprint {a.fingerprint}, "
             f"{a.source})"]
    if a.note and a.status != FIRING:
        parts.append(a.note)
    if not received.matched:
        parts.append("matches no runbook")
    for c in received.claims:
        parts.append(f"{c['runbook']}: {c['outcome']}"
                     + (f" ({c['detail']})" if c.get("detail") else ""))
    return "; ".join(parts)
