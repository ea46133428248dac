"""The testing kit for runbook authors: fake targets, plans, simulated runs, alert replay.

Fakes stand in for *targets* only. Rendering, masking, read-only enforcement and
dry-run planning are the executor's own code, so a plan computed here has the hash
``selfdrive plan`` computes when the read-only commands answer the same.

Names load on first use: the pytest plugin (``selfdrive.testing.plugin``) imports this
package, and a pytest session must not pay for the executor until a test uses it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["FakeCall", "FakeContext", "Replayed", "SimStep", "Simulation", "UnscriptedCommand",
           "plan_of", "replay", "simulate"]

_WHERE = {
    "FakeCall": "selfdrive.testing.fake",
    "FakeContext": "selfdrive.testing.fake",
    "UnscriptedCommand": "selfdrive.testing.fake",
    "plan_of": "selfdrive.testing.runs",
    "simulate": "selfdrive.testing.runs",
    "Simulation": "selfdrive.testing.runs",
    "SimStep": "selfdrive.testing.runs",
    "replay": "selfdrive.testing.alerts",
    "Replayed": "selfdrive.testing.alerts",
}

if TYPE_CHECKING:
    from selfdrive.testing.alerts import Replayed, replay
    from selfdrive.testing.fake import FakeCall, FakeContext, UnscriptedCommand
    from selfdrive.testing.runs import SimStep, Simulation, plan_of, simulate


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'selfdrive.testing' has no attribute {name!r}")
