"""Which runbooks an alert fires, and with which parameters.

A runbook's ``triggers=[alert(name, **matchers, params={...})]`` is the only way an
alert reaches it: the alert's name must equal the trigger's, every matcher must
match its label (equality, or a full match when the matcher is a compiled pattern;
a missing label reads as "", as in Prometheus), and ``params`` templates render the
runbook's parameters from the alert's labels and annotations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfdrive.journal.store import Journal
from selfdrive.registry.load import Registry
from selfdrive.sdk.command import render_text
from selfdrive.sdk.errors import SelfdriveError
from selfdrive.sdk.runbook import Runbook
from selfdrive.sdk.triggers import AlertTrigger
from selfdrive.triggers.payloads import Alert


@dataclass(frozen=True)
class Match:
    """One runbook an alert fires. ``error`` says why it cannot run (its params)."""

    runbook: Runbook
    trigger: AlertTrigger
    params: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


def matcher_matches(expected: str | re.Pattern[str], actual: str | None) -> bool:
    value = actual if actual is not None else ""
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(value) is not None
    return value == expected


def trigger_matches(trigger: AlertTrigger, alert: Alert) -> bool:
    return trigger.name == alert.name and all(
        matcher_matches(expected, alert.labels.get(label))
        for label, expected in trigger.matchers.items())


def render_params(rb: Runbook, trigger: AlertTrigger, alert: Alert) -> dict[str, Any]:
    """The runbook's parameters from the trigger's templates; raises naming the template."""
    variables = {"labels": dict(alert.labels), "annotations": dict(alert.annotations),
                 "alert": alert.name}
    values: dict[str, Any] = {}
    for param, template in trigger.params.items():
        try:
            values[param] = render_text(template, variables)
        except SelfdriveError as exc:
            raise SelfdriveError(f"alert({trigger.name!r}) on runbook {rb.name!r}: "
                                 f"params[{param!r}] = {template!r}: {exc}") from None
    try:
        rb.validate_params(values)
    except SelfdriveError as exc:
        raise SelfdriveError(f"alert({trigger.name!r}) on runbook {rb.name!r}: {exc}") from None
    return values


def match_alert(alert: Alert, registry: Registry) -> list[Match]:
    """Every runbook whose declared trigger matches ``alert``, in declared registry order.

    A runbook with several matching triggers counts once, through its first one.
    """
    out: list[Match] = []
    for rb in registry.runbooks.values():
        for trigger in rb.triggers:
            if not trigger_matches(trigger, alert):
                continue
            try:
                out.append(Match(rb, trigger, render_params(rb, trigger, alert)))
            except SelfdriveError as exc:
                out.append(Match(rb, trigger, error=str(exc)))
            break
    return out


def order_matches(matches: Sequence[Match], journal: Journal) -> list[Match]:
    """The order in which an alert's matches are tried: the better record first.

    Ranked by the learning layer on each runbook's verified successes for this alert
    name (a Wilson lower bound, so two lucky runs do not beat forty good ones); with
    no record, or equal records, the declared order decides.
    """
    from selfdrive.learning.rank import rank_matches

    if len(matches) < 2:
        return list(matches)
    order = rank_matches([m.runbook.name for m in matches], matches[0].trigger.name, journal)
    by_name = {m.runbook.name: m for m in matches}
    return [by_name[name] for name in order]
