"""Plans and runs: the run state machine, contexts, dry-run, verification, rollback."""

from selfdrive.executor.engine import Approver, Executor, RunOutcome, RunRequest, halt, unhalt
from selfdrive.executor.observe import Observer, SilentObserver, StepEvent
from selfdrive.executor.orchestrator import Orchestrator
from selfdrive.executor.plan import Plan, PlannedStep

__all__ = ["Approver", "Executor", "Observer", "Orchestrator", "Plan", "PlannedStep", "RunOutcome",
           "RunRequest", "SilentObserver", "StepEvent", "halt", "unhalt"]
