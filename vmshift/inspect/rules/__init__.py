"""Pre-flight rules: metadata as data (rules.json), one small predicate per rule.

A predicate looks at the VM model and the inspection (either may lack the
facts it needs) and answers with a list of reasons: ``None`` when the facts
are unknown (``not_evaluable``), ``[]`` when it passes, a non-empty list
(what is wrong, one string each) when it fires.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

from vmshift.inspect.result import Inspection
from vmshift.model import VirtualMachine

CATEGORIES = ("blocker", "warning", "info")


class Outcome(StrEnum):
    FIRED = "fired"
    PASSED = "passed"
    NOT_EVALUABLE = "not_evaluable"


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    message: str
    remedy: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RuleOptions:
    """Facts from the command line rather than the source."""

    driver_source: str | None = None  # a virtio-win ISO or directory
    allow_emulated: bool = False  # SATA and e1000e for a Windows without virtio drivers


@dataclass
class Finding:
    rule_id: str
    category: str
    outcome: Outcome
    message: str
    remedy: str
    details: list[str] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return self.outcome == Outcome.FIRED and self.category == "blocker"


def _predicates() -> dict[str, Any]:
    # Imported late: the predicate modules import this package's result types.
    from vmshift.inspect.rules import guest_predicates  # noqa: F401  (registers its rules)
    from vmshift.inspect.rules.predicates import PREDICATES

    return PREDICATES


@cache
def load_rules() -> tuple[Rule, ...]:
    """The rules from rules.json, checked against the predicates."""
    PREDICATES = _predicates()
    text = resources.files(__package__).joinpath("rules.json").read_text()
    rules = tuple(Rule(r["id"], r["category"], r["message"], r["remedy"], r.get("params", {}))
                  for r in json.loads(text)["rules"])
    ids = [r.id for r in rules]
    for rule in rules:
        if rule.category not in CATEGORIES:
            raise ValueError(f"rules.json: rule {rule.id}: unknown category {rule.category!r}")
    missing = set(ids) ^ set(PREDICATES)
    if missing or len(set(ids)) != len(ids):
        raise ValueError(f"rules.json and predicates disagree: {sorted(missing)}")
    return rules


def evaluate(vm: VirtualMachine, inspection: Inspection | None, *,
             options: RuleOptions | None = None) -> list[Finding]:
    """Every rule's outcome for this VM (model) and its inspection (or None)."""
    predicates = _predicates()
    options = options or RuleOptions()
    findings = []
    for rule in load_rules():
        reasons = predicates[rule.id](vm, inspection, rule.params, options)
        outcome = (Outcome.NOT_EVALUABLE if reasons is None
                   else Outcome.FIRED if reasons else Outcome.PASSED)
        findings.append(Finding(rule.id, rule.category, outcome, rule.message, rule.remedy,
                                list(reasons or [])))
    return findings


def blockers(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.blocks]


__all__ = ["Finding", "Outcome", "Rule", "RuleOptions", "blockers", "evaluate", "load_rules"]
