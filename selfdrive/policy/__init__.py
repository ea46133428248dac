"""Levels, ``decide()`` and guardrails: who may run what without a human."""

from selfdrive.policy.decide import (
    GUARDRAILS,
    Decision,
    Firing,
    Guardrail,
    Halt,
    Request,
    Situation,
    TrackRecord,
    decide,
    reads_track_record,
    rule_for,
)
from selfdrive.policy.matrix import DEFAULT_MATRIX

__all__ = ["DEFAULT_MATRIX", "GUARDRAILS", "Decision", "Firing", "Guardrail", "Halt",
           "Request", "Situation", "TrackRecord", "decide", "reads_track_record", "rule_for"]
