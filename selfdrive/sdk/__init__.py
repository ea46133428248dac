"""The authoring vocabulary. Imports nothing else of selfdrive (and nothing heavy)."""

from selfdrive.sdk.command import Command, Operand, safe
from selfdrive.sdk.context import (
    AnsibleChange,
    AnsibleResult,
    CommandResult,
    Context,
    HostGroup,
    HostsResult,
    RemoteHost,
)
from selfdrive.sdk.runbook import Hook, Param, Runbook, runbook
from selfdrive.sdk.triggers import AlertTrigger, alert
from selfdrive.sdk.vocabulary import Level, Mode, Risk, RunState

__all__ = [
    "AlertTrigger",
    "AnsibleChange",
    "AnsibleResult",
    "Command",
    "CommandResult",
    "Context",
    "Hook",
    "HostGroup",
    "HostsResult",
    "Level",
    "Mode",
    "Operand",
    "Param",
    "RemoteHost",
    "Risk",
    "RunState",
    "Runbook",
    "alert",
    "runbook",
    "safe",
]
