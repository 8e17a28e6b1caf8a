"""`vmshift plan run` without the test bed: what each row runs (--dry-run), vSphere
profiles, and the runner's rules (retries with backoff, dependencies, windows,
--wave, Ctrl-C) on real runs whose rows really fail.

The hosts are libvirt's test driver loaded from a node file written here
(test:///PATH: real libvirt, real connections, a fresh state on each). A
storage move of one of its domains fails in the real `migrate storage` (its
disk is in no pool), which gives the runner real failures to handle; the
bed tests (test_plan_run.py) run rows that succeed.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import vmshift

COLUMNS = "wave,vm,source,type,target,target_pool,network_map,format,bandwidth," \
          "max_downtime,policy,window_start,window_end,priority,depends_on"
NODE = """<node>
{domains}
  <pool type='dir'><name>fast</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
    <target><path>/fast</path></target></pool>
</node>"""
DOMAIN = """  <domain type='test'><name>{name}</name><memory>131072</memory>
    <os><type>hvm</type></os><devices><disk type='file' device='disk'>
      <source file='/guest/{name}.img'/>
      <target dev='vda' bus='virtio'/></disk></devices></domain>"""


@pytest.fixture
def host(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(NODE.format(domains="\n".join(DOMAIN.format(name=f"d{i}")
                                                  for i in range(1, 7))))
    return f"test://{node}"


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([COLUMNS, *rows]) + "\n")
    return path


def iso(delta_s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat(timespec="seconds")


def attempts(state: Path) -> dict[str, list[tuple[str, str | None, str | None]]]:
    c = sqlite3.connect(state)
    try:
        out: dict[str, list[tuple[str, str | None, str | None]]] = {}
        for vm, started, ended, outcome in c.execute(
                "SELECT r.vm, a.started, a.ended, a.outcome FROM attempts a JOIN rows r "
                "ON r.id = a.row_id ORDER BY r.vm, a.attempt"):
            out.setdefault(vm, []).append((started, ended, outcome))
        return out
    finally:
        c.close()


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- what each row runs ------------------------------------------------------------

def test_dry_run_prints_the_command_of_every_row_and_writes_nothing(tmp_path: Path) -> None:
    vmx = tmp_path / "web.vmx"
    vmx.write_text('displayName = "web"\n')
    (tmp_path / "nets.map").write_text("VM Network=default\n")
    pw = tmp_path / "vc.pass"
    pw.write_text("s3cret-not-in-argv\n")
    profiles = tmp_path / "vsphere.ini"
    profiles.write_text(f"[vc.example.com]\nuser = mig@vsphere.local\npassword_file = {pw}\n")
    a, b = "qemu+ssh://kvm-a/system", "qemu+ssh://kvm-b/system"
    plan = write(tmp_path / "plan.csv", [
        f"1,web,web.vmx,v2v,{b},default,nets.map,raw,,,,,,,",
        "1,app,vsphere://vc.example.com/app%2F1,v2v," + b + ",default,,,,,,,,,",
        f"2,db,{a},live,{b},,DMZ=bridge:br0,,1G,300,nova,,,,1",
        f"2,batch,{a},offline,{b},slow,,,,,,,,,1",
        f"2,cache,{a},suspended,{b},,,,512K,,,,,,1",
        f"3,files,{b},storage,,fast,,qcow2,100,,,,,,2",
    ])
    r = vmshift("plan", "run", str(plan), "--dry-run", "--offline", "--vsphere-profiles",
                str(profiles), "--json")
    assert r.rc == 0, r.err
    cmds = {row["vm"]: row["command"] for row in r.doc()["rows"]}
    assert cmds["web"] == ["vmshift", "convert", "vm", "--vmx", str(vmx.resolve()), "--output",
                           "libvirt", "--connect", b, "--pool", "default", "--name", "web",
                           "--format", "raw", "--network-map",
                           str(tmp_path / "nets.map"), "--json"]
    assert cmds["app"][:10] == ["vmshift", "convert", "vm", "--vsphere", "--url",
                                "https://vc.example.com", "--user", "mig@vsphere.local",
                                "--password-file", str(pw.resolve())]
    assert cmds["app"][10:12] == ["--vm", "app/1"]
    assert cmds["db"] == ["vmshift", "migrate", "live", "db", "--source", a, "--dest", b,
                          "--bandwidth", "1024M", "--max-downtime", "300", "--policy",
                          "nova", "--network-map", "DMZ=bridge:br0", "--json"]
    assert cmds["batch"] == ["vmshift", "migrate", "offline", "batch", "--source", a,
                             "--dest", b, "--dest-pool", "slow", "--json"]
    assert cmds["cache"][-3:] == ["--bandwidth", "512K", "--json"]
    # no --disk: every disk not in the pool yet
    assert cmds["files"] == ["vmshift", "migrate", "storage", "files", "--source", b,
                             "--dest-pool", "fast", "--format", "qcow2", "--bandwidth",
                             "100M", "--json"]
    assert "s3cret" not in r.out + r.err
    assert not list(tmp_path.glob("*.state.db*"))


@pytest.mark.parametrize("ini, message", [
    (None, "cannot read the vSphere profiles"),
    ("[other.example.com]\nuser = u\npassword_file = {pw}\n", "no [vc.example.com] section"),
    ("[vc.example.com]\nuser = u\npassword = x\n", "unknown key 'password'"),
    ("[vc.example.com]\nuser = u\n", "password_file: missing, and $VMSHIFT_VSPHERE_PASSWORD"),
    ("[vc.example.com]\npassword_file = {pw}\n", "user: missing"),
    ("[vc.example.com]\nuser = u\npassword_file = nope.pass\n", "no such file 'nope.pass'"),
    ("not an ini", "not an INI file"),
])
def test_vsphere_profile_problems_are_one_line_naming_the_file(
        tmp_path: Path, ini: str | None, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMSHIFT_VSPHERE_PASSWORD", raising=False)
    pw = tmp_path / "vc.pass"
    pw.write_text("x\n")
    profiles = tmp_path / "vsphere.ini"
    if ini is not None:
        profiles.write_text(ini.format(pw=pw))
    plan = write(tmp_path / "plan.csv", [
        "1,app,vsphere://vc.example.com/app,v2v,qemu:///system,default,,,,,,,,,"])
    r = vmshift("plan", "run", str(plan), "--dry-run", "--offline", "--vsphere-profiles",
                str(profiles))
    assert r.rc == 2 and r.out == ""
    assert r.err.count("\n") == 1 and str(profiles) in r.err and message in r.err, r.err


@pytest.mark.parametrize("args, message", [
    (["--offline"], "--offline: only with --dry-run"),
    (["--wave", "9"], "--wave: no wave '9'"),
])
def test_bad_options_are_refused(tmp_path: Path, host: str, args: list[str],
                                 message: str) -> None:
    plan = write(tmp_path / "plan.csv", [f"1,d1,{host},storage,,fast,,,,,,,,,"])
    r = vmshift("plan", "run", str(plan), *args)
    assert r.rc == 2 and message in r.err, r.err
    assert not Path(f"{plan}.state.db").exists()


# --- the runner's rules, on rows that really fail ---------------------------------

def test_a_failing_row_is_retried_with_backoff_then_its_dependants_are_skipped(
        tmp_path: Path, host: str) -> None:
    plan = write(tmp_path / "plan.csv", [
        f"1,d1,{host},storage,,fast,,,,,,,,,",
        f"2,d2,{host},storage,,fast,,,,,,,,,1",
    ])
    r = vmshift("plan", "run", str(plan), "--retries", "2", "--retry-delay", "0.5", "--json",
                timeout=120)
    assert r.rc == 1, r.err
    doc = r.doc()["error"]["detail"]
    rows = {row["vm"]: row for w in doc["waves"] for row in w["rows"]}
    assert rows["d1"]["state"] == "failed" and rows["d1"]["attempts"] == 3
    assert "is in no storage pool" in rows["d1"]["error"]
    assert rows["d2"]["state"] == "skipped" and "wave 1" in rows["d2"]["error"]
    tries = attempts(Path(f"{plan}.state.db"))["d1"]
    gaps = [stamp(b[0]) - stamp(a[1]) for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps  # 0.5 s, then 0.5 x 2
    events = [json.loads(x) for x in r.err.splitlines() if x.startswith("{")]
    ended = [e for e in events if e["event"] == "row_ended"]
    assert [e["retry"] for e in ended if e["vm"] == "d1"] == [True, True, False]
    done = [e["done"] for e in events if e["event"] == "progress"]
    assert done and max(done) == 2  # the bar counts rows, not attempts
    log = Path(rows["d1"]["log"]).read_text()
    assert log.count("--- attempt ") == 3 and "migrate storage d1" in log
    assert "vmshift: error: " in log


def test_wave_refuses_to_run_before_the_waves_it_depends_on_succeeded(
        tmp_path: Path, host: str) -> None:
    plan = write(tmp_path / "plan.csv", [
        f"1,d1,{host},storage,,fast,,,,,,,,,",
        f"2,d2,{host},storage,,fast,,,,,,,,,1",
    ])
    r = vmshift("plan", "run", str(plan), "--wave", "2")
    assert r.rc == 3 and "depends on wave 1" in r.err, r.err
    state = Path(f"{plan}.state.db")
    assert attempts(state) == {}


def test_windows_are_never_left_closed_rows_skipped_and_waiting_rows_wait(
        tmp_path: Path, host: str) -> None:
    plan = write(tmp_path / "plan.csv", [
        f"1,d1,{host},storage,,fast,,,,,,{iso(-7200)},{iso(-3600)},,",
        f"1,d2,{host},storage,,fast,,,,,,{iso(3600)},{iso(7200)},,",
        f"1,d3,{host},storage,,fast,,,,,,{iso(3)},{iso(3600)},,",
    ])
    r = vmshift("plan", "run", str(plan), "--outside-window", "skip", "--json")
    rows = {row["vm"]: row for w in r.doc()["error"]["detail"]["waves"] for row in w["rows"]}
    assert rows["d1"]["state"] == "skipped" and "window closed" in rows["d1"]["error"]
    assert rows["d2"]["state"] == "skipped" and "--outside-window skip" in rows["d2"]["error"]
    assert rows["d3"]["state"] == "skipped"  # not open yet either
    # wait: d3's window opens in a few seconds; it is started then, not before
    plan2 = write(tmp_path / "wait.csv", [
        f"1,d3,{host},storage,,fast,,,,,,{iso(4)},{iso(3600)},,"])
    t0 = time.time()
    r2 = vmshift("plan", "run", str(plan2), "--json", timeout=120)
    assert r2.rc == 1  # the row ran (and failed for real)
    started = stamp(attempts(Path(f"{plan2}.state.db"))["d3"][0][0])
    assert started >= t0 + 3


def test_ctrl_c_while_waiting_for_a_window_starts_nothing(tmp_path: Path, host: str) -> None:
    plan = write(tmp_path / "plan.csv", [
        f"1,d1,{host},storage,,fast,,,,,,{iso(3600)},{iso(7200)},,"])
    from tests.cli_support import VMSHIFT  # the installed entry point

    p = subprocess.Popen([VMSHIFT, "plan", "run", str(plan), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = Path(f"{plan}.state.db")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not state.exists():
        time.sleep(0.1)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1, err
    doc: dict[str, Any] = json.loads(out)["error"]["detail"]
    assert doc["interrupted"] is True and doc["started"] == []
    assert doc["counts"]["pending"] == 1 and doc["runner"] is not None
    assert attempts(state) == {}
    # the runner released the state: another runner may take it
    again = vmshift("plan", "status", str(plan), "--json")
    assert again.rc == 0 and again.doc()["runner"] is None


# --- reconcile: rows a dead runner left running ----------------------------------

def leave_running(plan: Path, vm: str, handle: str | None) -> None:
    """What a runner killed right after starting VM leaves: the row running,
    with (or, killed a moment earlier, without) its handle."""
    from vmshift.plan import state as runstate
    from vmshift.plan.validate import load_plan

    loaded = load_plan(plan)
    with runstate.RunState.create_or_resume(runstate.default_state_path(plan), loaded) as run:
        key = next(runstate.key_of(r) for r in loaded.rows if r.vm == vm)
        run.start(key)
        if handle is not None:
            run.set_handle(key, handle)


def test_a_row_whose_command_finished_after_its_runner_died_is_judged_by_its_result(
        tmp_path: Path, host: str) -> None:
    plan = write(tmp_path / "plan.csv", [f"1,d1,{host},storage,,fast,,,,,,,,,"])
    result = tmp_path / "d1.attempt-1.json"
    result.write_text(json.dumps({"schema_version": 1, "kind": "migrate", "ok": True,
                                  "total_time_s": 4.5, "outcome": "ok"}))
    leave_running(plan, "d1", f"local:999999999:1:{result}")  # that process is gone
    r = vmshift("plan", "run", str(plan), "--json")
    assert r.rc == 0, r.err
    doc = r.doc()
    assert doc["started"] == [] and [x["vm"] for x in doc["reconciled"]] == ["d1"]
    row = doc["waves"][0]["rows"][0]
    assert row["state"] == "succeeded" and row["attempts"] == 1
    assert row["metrics"]["seconds"] == 4.5 and row["metrics"]["type"] == "storage"
    history = attempts(Path(f"{plan}.state.db"))["d1"]
    assert history[0][2] == "reconciled: succeeded"


@pytest.mark.parametrize("handle", [None, "local:999999999:1:{tmp}/none.json"])
def test_a_row_that_left_no_result_is_checked_against_reality_then_run_again(
        tmp_path: Path, host: str, handle: str | None) -> None:
    """No handle (the runner died before recording it) or no result (its
    command was killed too): libvirt says the disk is not in the pool yet, so
    the row goes back to pending and this run starts it (attempt 2)."""
    plan = write(tmp_path / "plan.csv", [f"1,d1,{host},storage,,fast,,,,,,,,,"])
    leave_running(plan, "d1", handle.format(tmp=tmp_path) if handle else None)
    r = vmshift("plan", "run", str(plan), "--json")
    doc = r.doc()["error"]["detail"]
    assert [x["vm"] for x in doc["reconciled"]] == ["d1"]
    assert doc["reconciled"][0]["found"].endswith("pending: vda not in pool fast yet")
    assert doc["started"] == ["1/d1"]
    history = attempts(Path(f"{plan}.state.db"))["d1"]
    assert [h[2] for h in history] == ["reconciled: pending", "failed"]
