"""Trigger specs declared on a runbook: what may start it without a person."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from selfdrive.sdk.errors import DefinitionError


@dataclass(frozen=True)
class AlertTrigger:
    """An alert that fires the runbook: name, label matchers and parameter templates.

    A matcher value is matched for equality, or as a full regular expression when it
    is a compiled pattern (``re.compile("web-.*")``). ``params`` maps runbook
    parameters to templates over ``labels`` and ``annotations``.
    """

    name: str
    matchers: Mapping[str, str | re.Pattern[str]] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


def alert(name: str, *, params: Mapping[str, str] | None = None,
          **matchers: str | re.Pattern[str]) -> AlertTrigger:
    """Declare that alert ``name`` (with labels matching ``matchers``) fires the runbook."""
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("alert(): the alert name must be a non-empty string")
    for label, value in matchers.items():
        if not isinstance(value, str | re.Pattern):
            raise DefinitionError(f"alert({name!r}): matcher {label}= must be a string or a "
                                  f"compiled pattern, not {type(value).__name__}")
    for param, template in (params or {}).items():
        if not isinstance(template, str):
            raise DefinitionError(f"alert({name!r}): params[{param!r}] must be a template string")
    return AlertTrigger(name=name, matchers=MappingProxyType(dict(matchers)),
                        params=MappingProxyType(dict(params or {})))
