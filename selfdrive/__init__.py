"""selfdrive: runbook-as-code with bounded autonomy.

The public authoring API. Names load on first use, so ``import selfdrive`` (and the
CLI's start-up) costs nothing until a runbook actually needs the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AlertTrigger", "Command", "CommandResult", "Context", "Level", "Mode", "Operand",
           "Risk", "RunState", "Runbook", "SecretStr", "alert", "runbook", "safe"]

if TYPE_CHECKING:
    from pydantic import SecretStr

    from selfdrive.sdk import (
        AlertTrigger,
        Command,
        CommandResult,
        Context,
        Level,
        Mode,
        Operand,
        Risk,
        Runbook,
        RunState,
        alert,
        runbook,
        safe,
    )


def __getattr__(name: str) -> Any:
    if name == "SecretStr":
        return importlib.import_module("pydantic").SecretStr
    if name in __all__:
        return getattr(importlib.import_module("selfdrive.sdk"), name)
    raise AttributeError(f"module 'selfdrive' has no attribute {name!r}")
