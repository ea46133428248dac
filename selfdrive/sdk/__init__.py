"""The authoring vocabulary. Imports nothing else of selfdrive (and nothing heavy)."""

from selfdrive.sdk.command import Command, safe
from selfdrive.sdk.context import CommandResult, Context
from selfdrive.sdk.runbook import Hook, Param, Runbook, runbook
from selfdrive.sdk.triggers import AlertTrigger, alert
from selfdrive.sdk.vocabulary import Level, Mode, Risk, RunState

__all__ = ["AlertTrigger", "Command", "CommandResult", "Context", "Hook", "Level", "Mode",
           "Param", "Risk", "RunState", "Runbook", "alert", "runbook", "safe"]
