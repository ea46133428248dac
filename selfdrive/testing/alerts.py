"""Alert replay: which runbooks a real alert payload fires, and with which parameters.

Parsing and matching are the receiver's own (:mod:`selfdrive.triggers.payloads` and
:func:`selfdrive.triggers.match.match_alert`), so a replay answers what ``selfdrive
serve`` would decide for the same payload, before any policy or plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from selfdrive.registry.load import Registry, load_registry
from selfdrive.sdk.runbook import Runbook
from selfdrive.triggers.match import match_alert
from selfdrive.triggers.payloads import (
    FIRING,
    Alert,
    Limits,
    parse_alertmanager,
    parse_generic,
    parse_pagerduty,
)


@dataclass(frozen=True)
class Replayed:
    """One (alert, runbook) match. ``error`` says why its parameters did not render or
    validate; ``fires`` is whether the receiver would request a run (a firing alert
    whose parameters are good)."""

    alert: Alert
    runbook: str
    params: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def fires(self) -> bool:
        return self.alert.status == FIRING and self.error is None


def replay(payload: str | bytes | Path | Mapping[str, Any],
           runbooks: Registry | Iterable[Runbook] | Path | str, *,
           form: str = "auto") -> list[Replayed]:
    """Every match of every alert in ``payload`` against ``runbooks``, in payload order.

    ``payload`` is a JSON text, a file, or the parsed body; ``form`` is
    ``alertmanager``, ``generic``, ``pagerduty`` or ``auto`` (Alertmanager when the
    body has ``"version": "4"``, else generic). ``runbooks`` is a registry, runbook
    objects, or a folder of runbook files.
    """
    data = _load(payload)
    alerts = _parse(data, form)
    registry = _registry(runbooks)
    out: list[Replayed] = []
    for alert in alerts:
        for match in match_alert(alert, registry):
            out.append(Replayed(alert=alert, runbook=match.runbook.name,
                                params=MappingProxyType(dict(match.params)),
                                error=match.error))
    return out


def _load(payload: str | bytes | Path | Mapping[str, Any]) -> Any:
    if isinstance(payload, Path):
        return json.loads(payload.read_text(encoding="utf-8"))
    if isinstance(payload, str | bytes):
        return json.loads(payload)
    return dict(payload)


def _parse(data: Any, form: str) -> list[Alert]:
    limits = Limits()
    if form == "auto":
        form = "alertmanager" if isinstance(data, dict) and data.get("version") == "4" \
            else "generic"
    if form == "alertmanager":
        return parse_alertmanager(data, limits)
    if form == "generic":
        return parse_generic(data, limits)
    if form == "pagerduty":
        return parse_pagerduty(data, limits)
    raise ValueError(f"replay(form={form!r}): use alertmanager, generic, pagerduty or auto")


def _registry(runbooks: Registry | Iterable[Runbook] | Path | str) -> Registry:
    if isinstance(runbooks, Registry):
        return runbooks
    if isinstance(runbooks, str | Path):
        registry = load_registry([Path(runbooks)], entry_points=False)
        if registry.problems:
            raise ValueError("runbooks failed to load: "
                             + "; ".join(str(p) for p in registry.problems))
        return registry
    # Not Registry.of: that freezes the author's runbooks as a side effect.
    found: dict[str, Runbook] = {}
    for rb in runbooks:
        if rb.name in found and found[rb.name] is not rb:
            raise ValueError(f"two runbooks named {rb.name!r}")
        found[rb.name] = rb
    return Registry(MappingProxyType(found))
