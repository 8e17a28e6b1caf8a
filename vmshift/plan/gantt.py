"""The HTML page of `vmshift plan report --html`: one self-contained file (inline
CSS and SVG, no script, nothing fetched) with a summary, a timeline (Gantt) of
every VM's run coloured by outcome, the downtime of each live migration, the
bytes moved, and per wave a table of its rows (docs/plan.md).

The page is built as an lxml tree and serialised by lxml, so every name and
error from the state file is escaped. In the timeline each row with at least
one attempt is ONE ``<g class="bar" data-vm=... data-state=...>`` holding a
``<rect>`` per attempt, from its start to its end (to the report's time while
it runs); rows never started are in the tables only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lxml import etree
from lxml.html import builder as E

from vmshift.plan.report import CSV_COLUMNS, epoch, span_text
from vmshift.plan.status import counts_text
from vmshift.units import human

COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "running": "#1565c0",
           "skipped": "#9e9e9e", "pending": "#f9a825"}
LABEL_W, PLOT_W, RIGHT, ROW_H, TOP = 260, 900, 30, 22, 64
# Tick steps in seconds; the smallest giving at most MAX_TICKS ticks is used.
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
         43200, 86400, 172800, 604800, 2592000)
MAX_TICKS = 8
# A wave's table: the CSV's columns, the plan line in place of the wave.
WAVE_COLUMNS = ("line", *CSV_COLUMNS[1:])
# What XML cannot hold (control characters from a tool's error output, lone
# surrogates): shown as U+FFFD instead of failing the report.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
CSS = """
body { font: 14px/1.4 sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; }
td.error { max-width: 30em; white-space: pre-wrap; }
td.started, td.ended { white-space: nowrap; }
.state { font-weight: bold; }
""" + "".join(f".state.{name} {{ color: {colour}; }}\n" for name, colour in COLOURS.items())


def html_page(doc: dict[str, Any]) -> str:
    """The whole page as text (UTF-8 declared; written by the caller)."""
    page = E.HTML(
        E.HEAD(E.META(charset="utf-8"), E.TITLE(_t(f"vmshift plan report: {doc['plan']['path']}")),
               E.STYLE(CSS)),
        E.BODY(E.H1(_t(f"Plan report: {doc['plan']['path']}")), _summary(doc),
               E.H2("Timeline (UTC)"), timeline(doc), *_live(doc),
               *[part for wave in doc["waves"] for part in _wave(wave)]),
        lang="en")
    return etree.tostring(page, method="html", encoding="unicode", doctype="<!DOCTYPE html>")


def _t(value: object) -> str:
    return _NOT_XML.sub("\ufffd", "" if value is None else str(value))


def _summary(doc: dict[str, Any]) -> etree._Element:
    plan, summary, runner = doc["plan"], doc["summary"], doc["runner"]
    pairs = [("state file", doc["state"]), ("plan", plan["path"]),
             ("plan sha256", plan["sha256"]), ("first run", plan["first_run"]),
             ("report made", doc["generated"]),
             ("runner", "none" if runner is None else
              f"pid {runner['pid']} on host {runner['host']} since {runner['since']}"),
             ("rows", f"{counts_text(summary['counts'])} in {summary['waves']} waves"),
             ("time", span_text(summary)), ("bytes moved", f"{human(summary['bytes'])} "
                                             f"({summary['bytes']} bytes)")]
    return E.TABLE(*[E.TR(E.TH(name), E.TD(_t(value))) for name, value in pairs],
                   E.CLASS("summary"))


def _live(doc: dict[str, Any]) -> list[etree._Element]:
    live = doc["summary"]["live"]
    if not live:
        return [E.H2("Live migrations"), E.P("No live migration has recorded its metrics.")]
    return [E.H2("Live migrations: downtime achieved"), E.TABLE(
        E.TR(E.TH("wave"), E.TH("vm"), E.TH("state"), E.TH("downtime (ms)")),
        *[E.TR(E.TD(_t(r["wave"])), E.TD(_t(r["vm"])), _state_cell(r["state"]),
               E.TD(_t(r["downtime_ms"] if r["downtime_ms"] is not None else "?"),
                    E.CLASS("num"))) for r in live], E.CLASS("live"))]


def _wave(wave: dict[str, Any]) -> list[etree._Element]:
    header = E.TR(*[E.TH(c) for c in WAVE_COLUMNS])
    rows = [E.TR(*[_cell(c, r) for c in WAVE_COLUMNS]) for r in wave["rows"]]
    about = f"{counts_text(wave['counts'])}; {span_text(wave)}; {human(wave['bytes'])} moved"
    return [E.H2(_t(f"Wave {wave['wave']}")), E.P(_t(about)),
            E.TABLE(header, *rows, E.CLASS("wave"), **{"data-wave": _t(wave["wave"])})]


def _cell(column: str, row: dict[str, Any]) -> etree._Element:
    value = row[column]
    if column == "state":
        return _state_cell(value)
    if column == "bytes" and value is not None:
        return E.TD(_t(f"{human(value)} ({value})"), E.CLASS("num"))
    if column in ("line", "attempts", "seconds", "downtime_ms"):
        return E.TD(_t("-" if value is None else value), E.CLASS("num"))
    return E.TD(_t("-" if value is None else value), E.CLASS(column))


def _state_cell(state: str) -> etree._Element:
    return E.TD(_t(state), E.CLASS(f"state {state}"))


# --- the timeline ------------------------------------------------------------------

def _svg(tag: str, *children: Any, **attrs: object) -> etree._Element:
    # class_ is class; font_family is font-family, data_vm is data-vm
    element = etree.Element(tag, {k.rstrip("_").replace("_", "-"): _t(v)
                                  for k, v in attrs.items()})
    for child in children:
        if isinstance(child, str):
            element.text = _t(child)
        else:
            element.append(child)
    return element


def timeline(doc: dict[str, Any]) -> etree._Element:
    """The SVG: a legend, a UTC time axis, and one bar per row with attempts."""
    started = [r for w in doc["waves"] for r in w["rows"] if r["history"]]
    height = TOP + ROW_H * max(len(started), 1) + 10
    width = LABEL_W + PLOT_W + RIGHT
    svg = _svg("svg", width=width, height=height, viewBox=f"0 0 {width} {height}",
               role="img", font_family="sans-serif", font_size=12)
    svg.append(_svg("title", "Each VM's attempts over time, coloured by outcome"))
    svg.append(_legend())
    if not started:
        svg.append(_svg("text", "No VM has been started yet.", x=LABEL_W, y=TOP + 14))
        return svg
    summary = doc["summary"]
    t0, t1 = epoch(summary["first"]), epoch(summary["last"])
    t1 = max(t1, t0 + 1)  # a zero span still gets an axis
    scale = PLOT_W / (t1 - t0)
    svg.append(_axis(t0, t1, scale, height))
    now = epoch(doc["generated"])
    for i, row in enumerate(started):
        y = TOP + i * ROW_H
        svg.append(_svg("text", _short(f"{row['wave']}  {row['vm']}"), x=LABEL_W - 8,
                        y=y + ROW_H - 7, text_anchor="end", class_="label"))
        svg.append(_bar(row, y, lambda t: LABEL_W + (t - t0) * scale, now))
    return svg


def _legend() -> etree._Element:
    group = _svg("g", class_="legend")
    for i, (state, colour) in enumerate(COLOURS.items()):
        x = LABEL_W + i * 120
        group.append(_svg("rect", x=x, y=6, width=14, height=14, fill=colour))
        group.append(_svg("text", state, x=x + 20, y=18))
    return group


def _axis(t0: float, t1: float, scale: float, height: int) -> etree._Element:
    step = next((s for s in STEPS if (t1 - t0) / s <= MAX_TICKS), STEPS[-1])
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 else "%Y-%m-%d"
    group = _svg("g", class_="axis")
    group.append(_svg("text", "UTC", x=LABEL_W - 8, y=TOP - 10, text_anchor="end"))
    tick = math.ceil(t0 / step) * step  # whole steps of UTC time
    while tick <= t1:
        x = round(LABEL_W + (tick - t0) * scale, 1)
        at = datetime.fromtimestamp(tick, UTC)
        group.append(_svg("line", x1=x, x2=x, y1=TOP - 6, y2=height - 10, stroke="#ddd"))
        group.append(_svg("text", at.strftime(fmt), x=x, y=TOP - 10, text_anchor="middle",
                          class_="tick", data_time=f"{at:%Y-%m-%dT%H:%M:%SZ}"))
        tick += step
    return group


def _bar(row: dict[str, Any], y: int, x_of: Callable[[float], float], now: float
         ) -> etree._Element:
    tries = row["history"]
    what = f"{row['vm']} (wave {row['wave']}): {row['state']}, {len(tries)} " \
           f"attempt{'s' if len(tries) != 1 else ''}"
    if row["type"] == "live" and row["downtime_ms"] is not None:
        what += f", downtime {row['downtime_ms']} ms"
    if row["bytes"] is not None:
        what += f", {human(row['bytes'])} moved"
    bar = _svg("g", _svg("title", what), class_="bar", data_vm=row["vm"],
               data_state=row["state"], data_wave=row["wave"])
    for attempt in tries:
        begin = epoch(attempt["started"])
        end = epoch(attempt["ended"]) if attempt["ended"] else now
        x0 = x_of(begin)
        outcome = _outcome(attempt)
        about = f"attempt {attempt['attempt']}: {outcome}, {attempt['started']} .. " \
                f"{attempt['ended'] or 'running'}" + \
                (f": {attempt['error']}" if attempt["error"] else "")
        bar.append(_svg("rect", _svg("title", about), x=round(x0, 1), y=y + 3,
                        height=ROW_H - 6, width=round(max(x_of(end) - x0, 2.0), 1),
                        fill=COLOURS[outcome], class_="attempt",
                        data_attempt=attempt["attempt"], data_outcome=outcome))
    return bar


def _outcome(attempt: dict[str, Any]) -> str:
    """The colour's name: how the attempt ended ('reconciled: X' is X), running
    while it has no end."""
    if attempt["ended"] is None or not attempt["outcome"]:
        return "running"
    name = str(attempt["outcome"]).removeprefix("reconciled: ")
    return name if name in COLOURS else "failed"


def _short(text: str, most: int = 36) -> str:
    return text if len(text) <= most else text[:most - 1] + "\u2026"
