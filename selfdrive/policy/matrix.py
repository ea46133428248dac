"""The default policy matrix (the README's "Policy" table), one rule per level × risk cell."""

from __future__ import annotations

from selfdrive.config.model import Rule
from selfdrive.sdk.vocabulary import Level, Risk

_D, _A, _AUTO = Rule.DRY_RUN, Rule.APPROVAL, Rule.AUTO

DEFAULT_MATRIX: dict[Level, dict[Risk, Rule]] = {
    Level.L0: dict.fromkeys(Risk, _D),
    Level.L1: {Risk.READ_ONLY: _AUTO, Risk.LOW: Rule.AUTO_OWN_TRIGGER, Risk.MEDIUM: _A,
               Risk.HIGH: _A, Risk.CRITICAL: _D},
    Level.L2: {Risk.READ_ONLY: _AUTO, Risk.LOW: Rule.AUTO_OWN_TRIGGER, Risk.MEDIUM: _A,
               Risk.HIGH: _A, Risk.CRITICAL: _D},
    Level.L3: {Risk.READ_ONLY: _AUTO, Risk.LOW: _AUTO, Risk.MEDIUM: Rule.AUTO_IN_DOMAIN,
               Risk.HIGH: _A, Risk.CRITICAL: _A},
    Level.L4: {Risk.READ_ONLY: _AUTO, Risk.LOW: _AUTO, Risk.MEDIUM: _AUTO, Risk.HIGH: _A,
               Risk.CRITICAL: _A},
    Level.L5: {Risk.READ_ONLY: _AUTO, Risk.LOW: _AUTO, Risk.MEDIUM: _AUTO,
               Risk.HIGH: Rule.AUTO_WITH_RECORD, Risk.CRITICAL: _A},
}

RULE_WORDS: dict[Rule, str] = {
    Rule.DRY_RUN: "plan only (dry-run)",
    Rule.APPROVAL: "a human approves",
    Rule.AUTO: "autonomous",
    Rule.AUTO_OWN_TRIGGER: "autonomous when fired by its own trigger, else a human approves",
    Rule.AUTO_IN_DOMAIN: "autonomous inside the alert's domain, else a human approves",
    Rule.AUTO_WITH_RECORD: "autonomous with a qualifying track record, else a human approves",
}
