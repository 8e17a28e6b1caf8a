"""Run the preflight checks and turn blockers into a refusal (exit 3)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vmshift.errors import BadInput, Refused
from vmshift.migrate.checks import BLOCKER, BY_ID, CHECKS, INFO, WARNING, Check
from vmshift.migrate.facts import Facts

ORDER = {BLOCKER: 0, WARNING: 1, INFO: 2}


@dataclass
class Finding:
    id: str
    category: str
    severity: str
    subject: str
    message: str
    forced: bool = False


def evaluate(facts: Facts, checks: Iterable[Check] = CHECKS,
             force: Iterable[str] = ()) -> list[Finding]:
    forced = set(force)
    out: list[Finding] = []
    for check in checks:
        for hit in check.evaluate(facts):
            subject, fields = hit[0], hit[1]
            sev = hit[2] if len(hit) > 2 else check.severity
            f = Finding(check.id, check.category, sev, str(subject),
                        check.message.format(**fields))
            if sev == BLOCKER and check.id in forced:
                f.severity, f.forced = WARNING, True
                f.message += f" (overridden with --skip-check {check.id})"
            out.append(f)
    out.sort(key=lambda f: (ORDER[f.severity], f.category, f.id, f.subject))
    return out


def validate_force(force: Iterable[str]) -> list[str]:
    ids = list(force)
    for i in ids:
        if i not in BY_ID:
            raise BadInput(f"--skip-check {i}: no such check (known: {', '.join(sorted(BY_ID))})")
    return ids


def blockers(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == BLOCKER]


def refuse_if_blocked(findings: list[Finding], document: tuple[str, dict[str, Any]]) -> None:
    """Exit 3 on a blocker; --json then prints DOCUMENT (kind, payload: the command's
    own result, carrying the findings) with "outcome": "blocked"."""
    bad = blockers(findings)
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise Refused(f"preflight blocker {first.id}: {first.message}{more}",
                      detail={"findings": [f.__dict__ for f in findings]}, document=document)


def render(findings: list[Finding]) -> str:
    if not findings:
        return "preflight: no findings"
    lines = []
    for f in findings:
        lines.append(f"{f.severity.upper():8} {f.id:22} {f.message}")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ORDER}
    lines.append(f"preflight: {counts[BLOCKER]} blocker(s), {counts[WARNING]} warning(s), "
                 f"{counts[INFO]} info")
    return "\n".join(lines)
