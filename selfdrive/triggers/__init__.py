"""Sense: what starts runs without a person — alerts (the receiver, ``trigger``) and
schedules (the scheduler). Between the CLI and the executor: it journals what arrived,
decides what it fires and hands runs to the executor under policy.

Heavy or optional imports (waitress, cronsim) happen inside the functions that need
them, so importing this package stays cheap.
"""

from selfdrive.triggers.intake import AlertIntake, GroupCommit, Job, JobResult, Received
from selfdrive.triggers.match import Match, match_alert, order_matches
from selfdrive.triggers.payloads import Alert, Limits, PayloadError
from selfdrive.triggers.schedule import Schedule, Scheduler, collect_schedules, due

__all__ = ["Alert", "AlertIntake", "GroupCommit", "Job", "JobResult", "Limits", "Match",
           "PayloadError", "Received", "Schedule", "Scheduler", "collect_schedules", "due",
           "match_alert", "order_matches"]
