"""Reading and validating a plan: every problem at once, each naming the line.

``load_plan`` reads the CSV, parses each cell with its column's parser
(vmshift.plan.schema) and runs the checks across rows: duplicate VMs, waves
named in depends_on that no row has, dependency cycles. Live checks (hosts and
pools, vmshift.plan.live) are a separate step, skipped by ``--offline``.
A problem's line is the physical line its row starts on in the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vmshift.errors import BadInput
from vmshift.plan import csvio
from vmshift.plan.schema import (
    COLUMNS,
    PARSERS,
    REQUIRED_COLUMNS,
    CellContext,
    PlanRow,
    row_problems,
)


@dataclass(frozen=True)
class Problem:
    line: int
    column: str | None
    message: str

    def render(self, plan: str) -> str:
        where = f"{plan}:{self.line}: " + (f"{self.column}: " if self.column else "")
        return where + self.message


@dataclass
class Plan:
    path: Path
    columns: list[str]
    rows: list[PlanRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    live_checked: bool = False

    @property
    def waves(self) -> list[str]:
        """Wave names in the order they first appear."""
        return list(dict.fromkeys(r.wave for r in self.rows if r.wave is not None))

    def problems_error(self) -> BadInput:
        """All problems as one error: a line each on stderr; --json's plan_validate
        document lists them."""
        lines = [p.render(str(self.path)) for p in self.problems]
        count = len(lines)
        message = f"{self.path}: {count} problem{'s' if count != 1 else ''}"
        return BadInput(message, lines=lines, document=("plan_validate", self.summary()))

    def summary(self) -> dict[str, object]:
        return {"plan": str(self.path), "rows": len(self.rows), "waves": self.waves,
                "live_checked": self.live_checked,
                "problems": [{"line": p.line, "column": p.column, "message": p.message}
                             for p in self.problems]}


def load_plan(path: Path, *, allow_extra_columns: bool = False) -> Plan:
    """The plan at PATH with its problems (offline checks). BadInput only when the
    file cannot be read as text at all."""
    text = csvio.read_text(path)
    found = csvio.records(text)
    header = next(found, None)
    if header is None:
        return Plan(path, [], problems=[Problem(1, None, "empty file: no header line")])
    plan = Plan(path, [c.strip() for c in header.cells])
    plan.problems += _header_problems(plan.columns, allow_extra_columns)
    context = CellContext(base=path.parent)
    for record in found:
        if any(cell.strip() for cell in record.cells):  # spreadsheets export ";;;;" rows
            plan.rows.append(_row(plan, record, context))
    if not plan.rows:
        plan.problems.append(Problem(header.line, None, "no VM rows"))
    plan.problems += duplicate_vms(plan.rows)
    plan.problems += wave_problems(plan.rows)
    plan.problems.sort(key=lambda p: p.line)  # stable: a row's own order is kept
    return plan


def _header_problems(columns: list[str], allow_extra: bool) -> list[Problem]:
    out = []
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            out.append(Problem(1, column, "missing column"))
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            out.append(Problem(1, column, "column named twice"))
        seen.add(column)
        if column not in COLUMNS and not allow_extra:
            out.append(Problem(1, column or "(empty)", "unknown column (the columns are "
                               f"{', '.join(COLUMNS)}; --allow-extra-columns keeps others)"))
    return out


def _row(plan: Plan, record: csvio.Record, context: CellContext) -> PlanRow:
    row = PlanRow(record.line)
    columns = plan.columns
    if len(record.cells) != len(columns):
        plan.problems.append(Problem(record.line, None, f"{len(record.cells)} cells, the "
                                     f"header has {len(columns)}"))
    given: set[str] = set()
    for index, column in enumerate(columns):
        text = record.cells[index].strip() if index < len(record.cells) else ""
        if column not in PARSERS:
            row.extra[column] = text
            continue
        if column == "network_map":
            row.network_map_text = text
        if not text:
            if column in REQUIRED_COLUMNS:
                plan.problems.append(Problem(record.line, column, "empty"))
            continue
        given.add(column)
        try:
            setattr(row, column, PARSERS[column](text, context))
        except ValueError as exc:
            plan.problems.append(Problem(record.line, column, str(exc)))
    plan.problems += [Problem(record.line, c, m) for c, m in row_problems(row, given)]
    return row


def duplicate_vms(rows: Iterable[PlanRow]) -> list[Problem]:
    """The same VM from the same source twice: it would be moved twice."""
    first: dict[tuple[str, str], int] = {}
    out = []
    for row in rows:
        if row.vm is None or row.source is None:
            continue
        key = (row.vm, row.source.text)
        if key in first:
            out.append(Problem(row.line, "vm", f"{row.vm!r} from {row.source.text} is "
                               f"already planned on line {first[key]}"))
        else:
            first[key] = row.line
    return out


def wave_problems(rows: list[PlanRow]) -> list[Problem]:
    """depends_on naming no wave of the plan, and dependency cycles between waves."""
    waves = {r.wave for r in rows if r.wave is not None}
    out = []
    edges: dict[str, dict[str, int]] = {}  # wave -> {wave it waits for: line saying so}
    for row in rows:
        for name in row.depends_on:
            if name not in waves:
                out.append(Problem(row.line, "depends_on", f"no wave {name!r} in the plan"))
            elif row.wave is not None:
                edges.setdefault(row.wave, {}).setdefault(name, row.line)
    for cycle in find_cycles(edges):
        line = edges[cycle[0]][cycle[1]]
        out.append(Problem(line, "depends_on", "dependency cycle: wave "
                           + " -> ".join(cycle)))
    return out


def find_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The cycles (each as [a, b, ..., a]) that a depth-first search closes, one
    per edge leading back into the current path; iterative, as a plan may have
    thousands of waves."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []
    for start in sorted(edges):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(edges.get(start, {})))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, {}))))
    return cycles
