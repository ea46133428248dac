"""An Ansible callback plugin: why each task was skipped, for selfdrive's plans.

ansible-runner's events leave out a skipped task's result, so a task that check mode
skipped (``command``, ``shell``, a module without check mode) looks like one whose
``when`` was false. This plugin appends one JSON line per skipped task and host to
the file named by ``SELFDRIVE_ANSIBLE_SKIPS``: the task's action and whether the skip
was a false condition or mentions check mode. Never a module argument or a message
(they may hold secrets). Loaded from its folder (ANSIBLE_CALLBACK_PLUGINS); does
nothing without that variable.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

CONDITIONAL = "Conditional result was False"


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "selfdrive_skips"
    CALLBACK_NEEDS_ENABLED = False

    def v2_runner_on_skipped(self, result: Any) -> None:
        path = os.environ.get("SELFDRIVE_ANSIBLE_SKIPS")
        if not path:
            return
        res = result._result if isinstance(result._result, dict) else {}
        items = [r for r in res.get("results") or [] if isinstance(r, dict)] or [res]
        line = {
            "host": result._host.get_name(),
            "task_uuid": str(result._task._uuid),
            "action": str(result._task.action),
            "conditional": all("false_condition" in r or r.get("skip_reason") == CONDITIONAL
                               for r in items),
            "check_mode": any("check mode" in str(r.get("msg", "")).lower() for r in items),
        }
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
