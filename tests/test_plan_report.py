"""`vmshift plan report`: the report of a plan's run from its state file, as text,
JSON, CSV and one self-contained HTML page, opened in headless Chromium
(Debian's chromium-headless-shell): a screenshot is taken and its DOM has one
timeline bar per VM that was started, in the state the state file records.

The state is made through the real RunState API (no runner, no test bed: the
metrics are those a runner records); the report is made by the real CLI.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import struct
from pathlib import Path
from typing import Any

import lxml.html
import pytest

from tests.cli_support import chromium, vmshift
from vmshift.plan import state as runstate
from vmshift.plan.state import Key, RunState
from vmshift.plan.validate import load_plan

A, B = "qemu+ssh://kvm-a/system", "qemu+ssh://kvm-b/system"
ODD = 'x<i>&"q'  # a VM name that must be escaped everywhere
LIVE = {"type": "live", "target": B, "seconds": 1.5, "bytes": 1000, "downtime_ms": 80}
PLAN = f"""wave,vm,source,type,target
1,web01,{A},live,{B}
1,"x<i>&""q",{A},live,{B}
1,db01,{A},offline,{B}
2,batch01,{A},offline,{B}
2,cache01,{A},offline,{B}
2,later01,{A},offline,{B}
2,gone01,{A},offline,{B}
"""
CSV_HEADER = ["wave", "vm", "source", "type", "state", "attempts", "started", "ended",
              "seconds", "bytes", "downtime_ms", "target", "error"]


def key(vm: str, wave: str = "1") -> Key:
    return Key(wave, vm, A)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    """A plan whose state has every state: web01 failed once then succeeded (live),
    ODD succeeded (live), db01 succeeded (offline), batch01 failed, cache01
    running, later01 pending, gone01 skipped."""
    path = tmp_path / "plan.csv"
    path.write_text(PLAN)
    loaded = load_plan(path)
    assert not loaded.problems, loaded.problems
    with RunState.create_or_resume(runstate.default_state_path(path), loaded) as run:
        run.start(key("web01"))
        run.finish(key("web01"), "failed", error="connection reset")
        run.retry(key("web01"))
        run.start(key("web01"))
        run.finish(key("web01"), "succeeded", metrics=LIVE)
        run.start(key(ODD))
        run.finish(key(ODD), "succeeded", metrics={**LIVE, "bytes": 24, "downtime_ms": 120})
        run.start(key("db01"))
        run.finish(key("db01"), "succeeded", metrics={"type": "offline", "bytes": 4096,
                                                       "seconds": 2.5, "downtime_ms": None})
        run.start(key("batch01", "2"))
        run.finish(key("batch01", "2"), "failed", error="disk full\x1b[0m <b>",
                   metrics={"type": "offline", "bytes": "lots"})  # not a number: unknown
        run.start(key("cache01", "2"))
        run.skip(key("gone01", "2"), "wave 1 failed")
    return path


def report(plan: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return vmshift("plan", "report", str(plan), *args, env=env)


def test_text_counts_rows_per_state_and_wave_sums_bytes_and_shows_live_downtime(
        plan: Path) -> None:
    res = report(plan)
    assert (res.rc, res.err) == (0, "")
    lines = res.out.splitlines()
    assert lines[0].startswith(f"{runstate.default_state_path(plan)}: plan {plan} (sha256 "
                               f"{runstate.plan_sha256(plan)[:12]}), first run ")
    wave1 = next(ln for ln in lines if ln.startswith("wave 1: "))
    assert wave1.startswith("wave 1: 3 rows: 3 succeeded; ") and wave1.endswith(
        "; 5.0 KiB moved")  # 1000 + 24 + 4096 = 5120 bytes
    wave2 = next(ln for ln in lines if ln.startswith("wave 2: "))
    assert wave2.startswith("wave 2: 4 rows: 1 pending, 1 running, 1 failed, 1 skipped; ")
    assert "still running)" in wave2 and wave2.endswith("; 0 B moved")
    assert "total: 7 rows: 1 pending, 1 running, 3 succeeded, 1 failed, 1 skipped" in lines
    assert "bytes moved: 5.0 KiB (5120 bytes)" in lines
    assert f"downtime of live rows: web01 80 ms, {ODD} 120 ms" in lines
    assert next(ln for ln in lines if ln.startswith("time: ")).endswith(", still running)")


def test_json_is_one_plan_report_document_with_waves_rows_and_attempts(plan: Path) -> None:
    res = report(plan, "--json")
    assert res.rc == 0, res.err
    doc = res.doc()
    assert (doc["kind"], doc["outcome"], doc["html"], doc["csv"]) == \
        ("plan_report", "ok", None, None)
    summary = doc["summary"]
    assert (summary["rows"], summary["waves"], summary["bytes"], summary["running"]) == \
        (7, 2, 5120, True)
    assert summary["counts"] == {"pending": 1, "running": 1, "succeeded": 3, "failed": 1,
                                 "skipped": 1}
    assert summary["live"] == [
        {"wave": "1", "vm": "web01", "state": "succeeded", "downtime_ms": 80},
        {"wave": "1", "vm": ODD, "state": "succeeded", "downtime_ms": 120}]
    assert summary["first"] < summary["last"] == doc["generated"]  # running: until now
    rows = {r["vm"]: r for w in doc["waves"] for r in w["rows"]}
    web01 = rows["web01"]
    assert [(a["attempt"], a["outcome"], a["error"]) for a in web01["history"]] == [
        (1, "failed", "connection reset"), (2, "succeeded", None)]
    assert (web01["attempts"], web01["type"], web01["target"], web01["seconds"],
            web01["bytes"], web01["downtime_ms"]) == (2, "live", B, 1.5, 1000, 80)
    assert web01["started"] == web01["history"][0]["started"]  # the run's whole span
    assert web01["ended"] == web01["history"][1]["ended"]
    assert rows["batch01"]["bytes"] is None and rows["batch01"]["type"] == "offline"
    assert rows["cache01"]["ended"] is None and rows["cache01"]["history"][0]["ended"] is None
    assert rows["gone01"]["history"] == [] and rows["gone01"]["error"] == "wave 1 failed"
    assert [w["bytes"] for w in doc["waves"]] == [5120, 0]


def test_csv_has_one_line_per_row(plan: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    res = report(plan, "--csv", str(out))
    assert res.rc == 0 and f"wrote {out}" in res.out.splitlines(), res.err
    lines = list(csv.reader(io.StringIO(out.read_text(), newline="")))
    assert lines[0] == CSV_HEADER
    rows = {r[1]: dict(zip(CSV_HEADER, r, strict=True)) for r in lines[1:]}
    assert list(rows) == ["web01", ODD, "db01", "batch01", "cache01", "later01", "gone01"]
    assert {k: rows["web01"][k] for k in ("wave", "type", "state", "attempts", "seconds",
                                          "bytes", "downtime_ms", "target", "error")} == {
        "wave": "1", "type": "live", "state": "succeeded", "attempts": "2", "seconds": "1.5",
        "bytes": "1000", "downtime_ms": "80", "target": B, "error": ""}
    assert (rows[ODD]["bytes"], rows[ODD]["downtime_ms"]) == ("24", "120")
    assert (rows["db01"]["downtime_ms"], rows["db01"]["seconds"]) == ("", "2.5")
    assert rows["batch01"]["error"] == "disk full\x1b[0m <b>"
    assert (rows["cache01"]["state"], rows["cache01"]["ended"]) == ("running", "")
    assert rows["later01"]["started"] == rows["later01"]["type"] == ""


def test_the_report_changes_nothing_in_the_state(plan: Path, tmp_path: Path) -> None:
    state = runstate.default_state_path(plan)
    before = hashlib.sha256(state.read_bytes()).hexdigest()
    with RunState.open_existing(state) as run:
        recorded = run.rows(), run.all_attempts()
    assert report(plan, "--json", "--html", str(tmp_path / "r.html")).rc == 0
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before
    with RunState.open_existing(state) as run:
        assert (run.rows(), run.all_attempts()) == recorded


def test_an_existing_output_is_refused_unless_force(plan: Path, tmp_path: Path) -> None:
    html, out_csv = tmp_path / "r.html", tmp_path / "r.csv"
    out_csv.write_text("keep me\n")
    res = report(plan, "--html", str(html), "--csv", str(out_csv))
    assert (res.rc, res.out) == (2, "")
    assert res.err == f"vmshift: error: {out_csv}: --csv: the file exists (--force " \
                      "replaces it)\n"
    assert out_csv.read_text() == "keep me\n"
    assert not html.exists()  # every output is checked before any is written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    res = report(plan, "--html", str(html), "--csv", str(out_csv), "--force")
    assert res.rc == 0, res.err
    assert out_csv.read_text().splitlines()[0] == ",".join(CSV_HEADER)
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_a_missing_state_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing, html = tmp_path / "nope.db", tmp_path / "r.html"
    res = vmshift("plan", "report", "--state", str(missing), "--html", str(html))
    assert (res.rc, res.out) == (2, "")
    assert res.err == f"vmshift: error: {missing}: no such plan state file (`plan run` " \
                      "writes it)\n"
    assert not html.exists() and not missing.exists()  # nothing written, nothing created
    res = vmshift("plan", "report", "--state", str(missing), "--json")
    assert res.rc == 2 and str(missing) in res.doc()["error"]["message"]
    plan = tmp_path / "plan.csv"
    plan.write_text(PLAN)  # a plan never run: its default state file is named
    res = vmshift("plan", "report", str(plan))
    assert res.rc == 2
    assert res.err == f"vmshift: error: {runstate.default_state_path(plan)}: no such plan " \
                      "state file (`plan run` writes it)\n"
    res = vmshift("plan", "report")
    assert (res.rc, res.err) == (2, "vmshift: error: give PLAN.csv or --state STATE.db\n")


def test_html_is_self_contained_and_escapes_every_name(plan: Path, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    assert report(plan, "--html", str(html)).rc == 0
    text = html.read_text()
    assert ODD not in text and "\x1b" not in text  # escaped; no raw control character
    page = lxml.html.fromstring(text)
    assert page.xpath("//script|//link|//iframe|//img|//object") == []
    assert page.xpath("//@src|//@href") == [] and "url(" not in text
    assert page.xpath("//i") == [] and page.xpath("//b") == []  # no markup from the names
    bars = page.xpath("//*[local-name()='g'][@class='bar']")
    assert ODD in [b.get("data-vm") for b in bars]
    assert any(ODD == td.text for td in page.xpath("//table[@class='wave']//td"))
    assert "disk full\ufffd[0m <b>" in page.xpath("//td[@class='error']/text()")


def test_an_empty_run_has_tables_and_no_bars(tmp_path: Path) -> None:
    path = tmp_path / "plan.csv"
    path.write_text(PLAN)
    RunState.create_or_resume(runstate.default_state_path(path), load_plan(path)).close()
    html = tmp_path / "r.html"
    res = report(path, "--html", str(html))
    assert res.rc == 0 and "time: not started" in res.out.splitlines(), res.err
    page = lxml.html.fromstring(html.read_text())
    assert page.xpath("//*[local-name()='g'][@class='bar']") == []
    assert len(page.xpath("//table[@class='wave']//tr")) == 7 + 2  # rows + a header each


# --- headless Chromium ------------------------------------------------------------

def test_chromium_renders_the_report_with_one_bar_per_started_vm(plan: Path,
                                                                 tmp_path: Path) -> None:
    html, shot = tmp_path / "report.html", tmp_path / "shot.png"
    # The ticks must be UTC whatever the zone of the machine making the report.
    assert report(plan, "--html", str(html), env={"TZ": "Asia/Kolkata"}).rc == 0
    chromium("--window-size=1400,1000", f"--screenshot={shot}", html.as_uri(),
             profile=tmp_path / "profile1")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (1400, 1000)
    assert len(png) > 20_000  # a rendered page, not a blank one
    dom = chromium("--dump-dom", html.as_uri(), profile=tmp_path / "profile2").stdout
    page = lxml.html.fromstring(dom)
    bars = page.xpath("//*[local-name()='g'][@class='bar']")
    with RunState.open_existing(runstate.default_state_path(plan)) as run:
        recorded = {r["vm"]: (r["state"], r["attempts"]) for r in run.rows() if r["attempts"]}
    drawn = [b.get("data-vm") for b in bars]
    assert sorted(drawn) == sorted(recorded)  # exactly one bar per VM that was started
    assert {b.get("data-vm"): (b.get("data-state"),
                               len(b.xpath("./*[local-name()='rect']"))) for b in bars} \
        == recorded  # its state, and one segment per attempt
    assert set(recorded) == {"web01", ODD, "db01", "batch01", "cache01"}
    web01 = next(b for b in bars if b.get("data-vm") == "web01")
    assert [r.get("data-outcome") for r in web01.xpath("./*[local-name()='rect']")] == \
        ["failed", "succeeded"]
    ticks = page.xpath("//*[local-name()='text'][@class='tick']")
    assert ticks and all(t.text == t.get("data-time")[11:19] and
                         t.get("data-time").endswith("Z") for t in ticks)
    legend = page.xpath("//*[local-name()='g'][@class='legend']//*[local-name()='text']")
    assert [t.text for t in legend] == ["succeeded", "failed", "running", "skipped", "pending"]
    assert os.path.getsize(html) < 200_000
