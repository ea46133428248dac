"""The scheduler: runbooks on cron schedules, with catch-up and without double runs.

Schedules come from ``@runbook(schedule="*/10 * * * *")`` and from ``[[schedules]]``
in ``selfdrive.toml``. Fire times are computed by cronsim in the schedule's time
zone. On the autumn clock change cronsim fires a daily job once (at the first of the
two 02:30s); on the spring-forward day, when 02:30 does not exist, it fires once at
the first minute after the gap (03:00). Sub-hourly schedules fire by the wall clock,
so they fire in both halves of the repeated hour, as elapsed time requires.

The journal holds each schedule's latest handled fire. After downtime the newest
fire missed runs once if it is no more than ``grace`` late; every other missed fire
is journaled as ``missed`` (one row each, and one ``schedule.missed`` event with the
count and the range). Each fire is claimed in one ``BEGIN IMMEDIATE`` transaction
(a unique row per schedule and fire time) before it runs, so two schedulers on one
journal never run the same fire twice, and a schedule whose previous run is still in
progress in a live process gets ``skipped`` rather than overlapping it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from selfdrive.config.model import TeamConfig
from selfdrive.config.sense import check_cron, check_timezone
from selfdrive.executor.engine import Executor, RunRequest
from selfdrive.journal.records import RunRecord
from selfdrive.journal.store import Journal
from selfdrive.policy.decide import Firing
from selfdrive.registry.load import Registry
from selfdrive.sdk.errors import SelfdriveError, UsageError
from selfdrive.triggers.rules import ScheduleOverlap

REQUESTER = "scheduler"
DEFAULT_GRACE = timedelta(minutes=5)
#: How far one catch-up enumerates missed fires before it only counts the newest.
MAX_ENUMERATED = 100_000
#: Missed fires journaled one row each (the first and last halves of a long outage).
MAX_MISSED_ROWS = 1000
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def iso(moment: datetime) -> str:
    """A fire time as the journal stores it: UTC, ISO 8601, sortable as text."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Schedule:
    """One schedule: which runbook, when (cron in a time zone), with what parameters."""

    id: str
    runbook: str
    cron: str
    expression: str
    timezone: str = "UTC"
    grace: timedelta = DEFAULT_GRACE
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str = "config"

    def fires(self, after: datetime, until: datetime,
              limit: int = MAX_ENUMERATED) -> tuple[list[datetime], bool]:
        """Fire times in (after, until], oldest first; True when cut at ``limit``."""
        from cronsim import CronSim

        tz = ZoneInfo(self.timezone)
        out: list[datetime] = []
        for moment in CronSim(self.cron, after.astimezone(tz)):
            if moment > until:
                return out, False
            if len(out) >= limit:
                return out, True
            out.append(moment)
        return out, False  # pragma: no cover - cronsim iterates without end

    def latest(self, until: datetime) -> datetime | None:
        """The newest fire at or before ``until``."""
        from cronsim import CronSim

        tz = ZoneInfo(self.timezone)
        start = (until + timedelta(seconds=1)).astimezone(tz)  # so that ``until`` counts
        for moment in CronSim(self.cron, start, reverse=True):
            if moment <= until:
                return moment
        return None  # pragma: no cover - cronsim iterates without end

    def next_after(self, moment: datetime) -> datetime:
        from cronsim import CronSim

        return next(CronSim(self.cron, moment.astimezone(ZoneInfo(self.timezone))))


def collect_schedules(config: TeamConfig, registry: Registry) -> tuple[list[Schedule],
                                                                        list[str]]:
    """Every schedule (decorators first, then ``[[schedules]]``) and each problem found.

    A problem (an unknown runbook, parameters that do not validate, one id declared
    twice) names where it was declared; that schedule is left out.
    """
    found: dict[str, Schedule] = {}
    where: dict[str, str] = {}
    problems: list[str] = []
    for rb in registry.runbooks.values():
        if not rb.schedule:
            continue
        place = f"@runbook(schedule={rb.schedule!r}) on {rb.name} at {rb.location}"
        try:
            cron = check_cron(rb.schedule)
            rb.validate_params({})
        except (ValueError, SelfdriveError) as exc:
            problems.append(f"{place}: {exc}"
                            + ("; schedule it from [[schedules]] with params instead"
                               if isinstance(exc, SelfdriveError) else ""))
            continue
        sid = f"{rb.name}@{rb.schedule.strip()}"
        found[sid] = Schedule(id=sid, runbook=rb.name, cron=cron, expression=rb.schedule,
                              source="decorator")
        where[sid] = place
    file = config.path or "selfdrive.toml"
    for i, sc in enumerate(config.schedules):
        place = f"{file}: schedules[{i}] (runbook {sc.runbook!r})"
        sid = sc.name or f"{sc.runbook}@{sc.cron.strip()}"
        if sid in found:
            problems.append(f"{place}: schedule id {sid!r} is already declared by "
                            f"{where[sid]}; give this entry a distinct name")
            continue
        try:
            rb = registry.get(sc.runbook)
            rb.validate_params(sc.params)
            check_timezone(sc.timezone)
            cron = check_cron(sc.cron)
        except (ValueError, SelfdriveError) as exc:
            problems.append(f"{place}: {exc}")
            continue
        found[sid] = Schedule(id=sid, runbook=rb.name, cron=cron, expression=sc.cron,
                              timezone=sc.timezone, grace=sc.grace, params=dict(sc.params),
                              source="config")
        where[sid] = place
    return list(found.values()), problems


@dataclass(frozen=True)
class Due:
    """What one tick decided for one schedule: a fire to run, and fires missed."""

    schedule: Schedule
    fire: datetime | None
    missed: tuple[datetime, ...] = ()
    missed_total: int = 0
    seen: datetime | None = None


def due(schedule: Schedule, last: datetime | None, now: datetime) -> Due | None:
    """What is due at ``now`` given the latest handled fire ``last`` (None: never seen).

    A schedule seen for the first time runs its newest fire if that is no more than
    ``grace`` old, and counts nothing before it as missed.
    """
    if last is None:
        newest = schedule.latest(now)
        if newest is None:
            return None
        # Remembered even when too old to run, so that later downtime counts as missed.
        return Due(schedule, newest if now - newest <= schedule.grace else None, seen=newest)
    fires, cut = schedule.fires(last, now)
    if not fires:
        return None
    if cut:  # a very long outage: count what was enumerated, find the true newest
        newest = schedule.latest(now)
        if newest is not None and newest > fires[-1]:
            fires.append(newest)
    newest = fires[-1]
    run = newest if now - newest <= schedule.grace else None
    missed = fires[:-1] if run is not None else fires
    rows = missed if len(missed) <= MAX_MISSED_ROWS else \
        missed[:MAX_MISSED_ROWS // 2] + missed[-MAX_MISSED_ROWS // 2:]
    return Due(schedule, run, tuple(rows), len(missed))


@dataclass(frozen=True)
class FireResult:
    """One fire handled by a tick: run (with where the run ended), skipped or missed."""

    schedule: str
    fire: str | None
    status: str
    run: RunRecord | None = None
    missed: int = 0
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "fire": self.fire, "status": self.status,
                "run": self.run.as_json() if self.run else None, "missed": self.missed,
                "detail": self.detail}


class Scheduler:
    """Checks every schedule each tick and runs what is due, each fire at most once.

    ``clock`` is injectable so catch-up and grace can be tested without waiting.
    Runs happen on their own threads (one at a time per schedule), so a long run does
    not make the other schedules late.
    """

    def __init__(self, config: TeamConfig, registry: Registry, journal: Journal,
                 executor: Executor, schedules: list[Schedule], *, log: Log = _quiet,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.registry = registry
        self.journal = journal
        self.executor = executor
        self.schedules = schedules
        self.log = log
        self.clock = clock
        self.stopping = threading.Event()
        self.results: list[FireResult] = []
        self._running: dict[str, tuple[threading.Thread, str]] = {}
        self._lock = threading.Lock()
        self._forced = False

    # -- one tick ----------------------------------------------------------------

    def tick(self, *, wait: bool = False) -> list[FireResult]:
        """Claim and start every fire due now; with ``wait``, wait for their runs."""
        now = self.clock()
        handled: list[FireResult] = []
        started: list[threading.Thread] = []
        for schedule in self.schedules:
            if self.stopping.is_set():
                break
            with self._lock:
                busy = schedule.id in self._running
            if busy:
                continue  # its previous run is still going here; the next tick looks again
            last_text = self.journal.schedules.last_fire(schedule.id)
            last = datetime.fromisoformat(last_text) if last_text else None
            plan = due(schedule, last, now)
            if plan is None:
                continue
            fire_text = iso(plan.fire) if plan.fire is not None else None
            ttl = 2 * self._timeout(schedule) + 60
            claim = self.journal.schedules.claim_fire(
                schedule.id, fire_time=fire_text, missed=[iso(m) for m in plan.missed],
                missed_total=plan.missed_total, overlaps=ScheduleOverlap(stale_after=ttl),
                seen=iso(plan.seen) if plan.seen is not None else None)
            if claim["missed"]:
                self.log(f"schedule {schedule.id}: {claim['missed']} fire(s) missed "
                         f"(more than {_words(schedule.grace)} late), journaled as missed")
                handled.append(self._record(FireResult(schedule.id, None, "missed",
                                                       missed=int(claim["missed"]))))
            if fire_text is None:
                continue
            if not claim["claimed"]:
                self.log(f"schedule {schedule.id}: fire {fire_text} {claim['status']}: "
                         f"{claim['detail']}")
                handled.append(self._record(FireResult(
                    schedule.id, fire_text, str(claim["status"]), detail=claim["detail"])))
                continue
            self.log(f"schedule {schedule.id}: fire {fire_text} claimed; running "
                     f"{schedule.runbook}")
            thread = threading.Thread(target=self._fire, args=(schedule, fire_text),
                                      name=f"schedule-{schedule.id}", daemon=True)
            with self._lock:
                self._running[schedule.id] = (thread, fire_text)
            thread.start()
            started.append(thread)
        if wait:
            for thread in started:
                thread.join()
        return handled

    def _timeout(self, schedule: Schedule) -> float:
        try:
            return self.registry.get(schedule.runbook).timeout.total_seconds()
        except SelfdriveError:
            return 1800.0

    def _fire(self, schedule: Schedule, fire_text: str) -> None:
        key = dedup_key(schedule.id, fire_text)
        try:
            outcome = self.executor.submit(RunRequest(
                runbook=schedule.runbook, params=dict(schedule.params), requested_by=REQUESTER,
                firing=Firing(kind="schedule", name=schedule.id, own=True),
                dedup_key=key), approver=None)
        except BaseException as exc:
            error = str(exc) if isinstance(exc, SelfdriveError) else \
                f"{type(exc).__name__}: {exc}"
            run = self._safe(lambda: self.journal.runs.for_dedup_key(key))
            if not self._forced:  # a forced stop already marked this fire interrupted
                self._safe(lambda: self.journal.schedules.finish_fire(
                    schedule.id, fire_text, status="error", run_id=run.id if run else None,
                    detail=error))
            self.log(f"schedule {schedule.id}: fire {fire_text}: {error}")
            self._record(FireResult(schedule.id, fire_text, "error", run, detail=error))
            if not isinstance(exc, Exception):
                raise
        else:
            run = outcome.run
            self._safe(lambda: self.journal.schedules.finish_fire(
                schedule.id, fire_text, status="done", run_id=run.id,
                detail=f"{run.status.value} ({run.mode})"))
            self.log(f"schedule {schedule.id}: fire {fire_text}: run {run.id} "
                     f"{run.status.value} ({run.mode})")
            self._record(FireResult(schedule.id, fire_text, "ran", run))
        finally:
            with self._lock:
                self._running.pop(schedule.id, None)

    def _record(self, result: FireResult) -> FireResult:
        with self._lock:
            self.results.append(result)
        return result

    def _safe(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except SelfdriveError as exc:
            self.log(f"journal: {exc}")
            return None

    # -- the loop ----------------------------------------------------------------

    @property
    def running(self) -> list[tuple[str, str]]:
        """(schedule id, fire time) of every run in progress."""
        with self._lock:
            return [(sid, fire) for sid, (_, fire) in self._running.items()]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the runs in progress; True when none is left."""
        with self._lock:
            threads = [t for t, _ in self._running.values()]
        for thread in threads:
            thread.join(timeout)
        return not self.running

    def run_forever(self, tick: float) -> None:
        """Tick every ``tick`` seconds until :meth:`stop`; then let running runs finish."""
        while not self.stopping.is_set():
            try:
                self.tick()
            except SelfdriveError as exc:  # e.g. the journal is busy: try again next tick
                self.log(f"tick failed: {exc}")
            self.stopping.wait(tick)
        running = self.running
        if running:
            self.log(f"stopping: waiting for {len(running)} run(s) in progress to finish")
        self.wait_idle()

    def stop(self) -> None:
        self.stopping.set()

    def interrupt_running(self, reason: str) -> list[str]:
        """A forced stop: mark each run in progress ``interrupted`` (never left running)."""
        self._forced = True
        marked = []
        for sid, fire in self.running:
            try:
                run = self.journal.runs.for_dedup_key(dedup_key(sid, fire))
                if run is not None and not run.status.final:
                    marked.append(self.journal.runs.interrupt(run.id, actor=REQUESTER,
                                                             reason=reason).id)
                self.journal.schedules.finish_fire(sid, fire, status="interrupted",
                                                  run_id=run.id if run else None,
                                                  detail=reason)
            except SelfdriveError as exc:
                self.log(f"journal: {exc}")
        return marked


def dedup_key(schedule_id: str, fire_text: str) -> str:
    return f"schedule:{schedule_id}:{fire_text}"


def _words(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def check_schedules(config: TeamConfig, registry: Registry) -> list[Schedule]:
    """The schedules, or a :class:`UsageError` listing every problem."""
    schedules, problems = collect_schedules(config, registry)
    if problems:
        raise UsageError("schedules with problems (nothing was run):\n  " + "\n  ".join(problems))
    return schedules
