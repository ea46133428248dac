"""When an alert is a duplicate, and when a schedule's fire would overlap the last one.

These are the triggers' rules; the journal only offers the atomic claim they guard
(:mod:`selfdrive.journal.alerts`). Each rule is asked inside the claim's write
transaction about what holds the key now, so its answer cannot go stale before the
claim is written, across threads, processes and machines alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from selfdrive.journal.processes import owner_alive
from selfdrive.sdk.vocabulary import RunState


def _age(since: str, now: str) -> float:
    return (datetime.fromisoformat(now) - datetime.fromisoformat(since)).total_seconds()


@dataclass(frozen=True)
class AlertDedup:
    """One run per runbook and alert fingerprint at a time: a second claim on them is a
    duplicate while the run the first one started has not ended, or while that first
    claim is younger than ``window`` seconds (``receiver.dedup_window``), whatever its
    run did, so that a flapping alert does not restart a runbook that just ran."""

    window: float

    def __call__(self, prior: dict[str, Any], now: str) -> str | None:
        """Why a claim at ``now`` duplicates ``prior`` (the latest claim on the same
        runbook and fingerprint: ``alert_id``, ``claimed_at``, ``run_id``, and its run's
        ``status``), or None when it starts a run of its own."""
        age = _age(prior["claimed_at"], now)
        status = prior["status"]
        in_flight = status is not None and not RunState(status).final
        if not in_flight and age >= self.window:
            return None
        what = f"run {prior['run_id']}" if prior["run_id"] else "a queued run"
        if in_flight:
            return (f"{what} for this alert fingerprint is still {status} (claimed by "
                    f"alert #{prior['alert_id']})")
        return (f"{what} was started for this alert fingerprint by alert "
                f"#{prior['alert_id']} {age:.0f}s ago, within the {self.window:g}s dedup "
                f"window")


@dataclass(frozen=True)
class ScheduleOverlap:
    """A schedule never overlaps itself: a fire is skipped while an earlier fire's run
    goes on in a live scheduler. A scheduler on another host cannot be checked from
    here, so its fire counts as going on for ``stale_after`` seconds after its claim
    (twice the runbook's timeout, and a minute); after that, or once its scheduler is
    known dead, the earlier fire is over (interrupted) and the new one runs."""

    stale_after: float

    def __call__(self, busy: dict[str, Any], now: str) -> str | None:
        """Why the earlier fire ``busy`` (``fire_time``, ``owner``, ``claimed_at``) is
        still in progress at ``now``, or None when it is over."""
        alive = owner_alive(busy["owner"])
        if alive or (alive is None and _age(busy["claimed_at"], now) < self.stale_after):
            return (f"the run for fire {busy['fire_time']} is still in progress "
                    f"(scheduler {busy['owner']}); schedules never overlap")
        return None
