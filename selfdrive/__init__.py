"""selfdrive: runbook-as-code with bounded autonomy.

The public authoring API. Importing it pulls in the SDK only, never targets,
the journal or the CLI.
"""

from pydantic import SecretStr

from selfdrive.sdk import (
    AlertTrigger,
    Command,
    CommandResult,
    Context,
    Level,
    Mode,
    Risk,
    Runbook,
    RunState,
    alert,
    runbook,
    safe,
)

__version__ = "0.1.0"
__all__ = ["AlertTrigger", "Command", "CommandResult", "Context", "Level", "Mode", "Risk",
           "RunState", "Runbook", "SecretStr", "alert", "runbook", "safe"]
