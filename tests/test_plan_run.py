"""`vmshift plan run` on the three-host bed, through the real CLI: a wave of
mixed rows (live and offline migrations, a storage move, a v2v of the
reference guest), a rerun that redoes nothing, a runner SIGKILLed mid-wave
and resumed, and a target in maintenance refused.

One module fixture runs the mixed plan once; several tests assert on it.
The libvirt lifecycle events of both hosts are recorded for the whole module,
so "moved once" is checked against libvirt's own history, not vmshift's.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import lxml.html
import pytest

from tests.cli_support import chromium
from tests.migrate_support import (
    Run,
    daemon_logs,
    finish,
    peak_overlap,
    remove_converted,
    start,
    state_on,
    vmshift,
    wait_job_active,
)
from vmshift.libvirtconn import connect
from vmshift.migrate import xmlmap
from vmshift.testbed.hosts import TestBed, TestHost
from vmshift.testbed.tinyguest import TinyGuest
from vmshift.testbed.tinyguest import tiny_guest as make_tiny_guest

pytestmark = pytest.mark.slow
MiB = 1 << 20
COLUMNS = "wave,vm,source,type,target,target_pool,network_map,bandwidth,depends_on"
NET_MAP = "VM Network=vmshift-net"


@dataclass
class Events:
    """Lifecycle events (domain, event, detail) per host, recorded from the start."""

    seen: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    conns: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, host: TestHost) -> None:
        conn = connect(host.uri, readonly=True)
        self.conns.append(conn)
        self.seen[host.name] = []

        def on_event(_c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
            with self.lock:
                self.seen[host.name].append((dom.name(), event, detail))

        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)

    def migrated_in(self, host: str, name: str) -> int:
        """How many times NAME was started on HOST by an incoming migration."""
        with self.lock:
            return sum(1 for n, ev, det in self.seen[host] if n == name
                       and ev == libvirt.VIR_DOMAIN_EVENT_STARTED
                       and det == libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


def write_plan(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([COLUMNS, *rows]) + "\n")
    return path


def state_rows(db: Path) -> dict[str, dict[str, Any]]:
    """The rows of a state file ({} while the runner is still creating it)."""
    c = sqlite3.connect(db)
    try:
        c.row_factory = sqlite3.Row
        return {r["vm"]: dict(r) for r in c.execute("SELECT * FROM rows")}
    except sqlite3.OperationalError:
        return {}
    finally:
        c.close()


@dataclass
class WaveRun:
    bed: TestBed
    guests: dict[str, TinyGuest]
    v2v: str
    plan: Path
    state: Path
    run: Run
    rerun: Run
    events: Events


@pytest.fixture(scope="module")
def events(three_hosts: TestBed) -> Iterator[Events]:
    ev = Events()
    for h in three_hosts.hosts:
        ev.watch(h)
    yield ev
    ev.close()


@pytest.fixture(scope="module")
def wave_run(three_hosts: TestBed, vmware_guest: Any, events: Events,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaveRun]:
    bed = three_hosts
    if bed.migration_needs_unsafe:
        pytest.fail("the bed's shared storage is not glusterfs: live rows would need --unsafe")
    a, b = bed.hosta, bed.hostb
    tag = os.getpid()
    guests: dict[str, TinyGuest] = {}
    v2v = f"plan-v2v-{tag}"
    try:
        for key, host, kw in (("live1", a, {}), ("live2", a, {"memory_mib": 160}),
                              ("off1", a, {"disk_pool": "private", "start": False}),
                              ("st1", b, {"disk_pool": "private"})):
            guests[key] = make_tiny_guest(host, name=f"plan-{key}-{tag}",
                                          fill_mib=32, **{"memory_mib": 128, **kw})
        for g in guests.values():
            if g.name != guests["off1"].name:
                g.wait_ready()
        d = tmp_path_factory.mktemp("plan")
        plan = write_plan(d / "plan.csv", [
            f"1,{guests['live1'].name},{a.uri},live,{b.uri},,,64M,",
            f"1,{guests['live2'].name},{a.uri},live,{b.uri},,,64M,",
            f"1,{guests['off1'].name},{a.uri},offline,{b.uri},{b.private_pool},,,",
            f"1,{guests['st1'].name},{b.uri},storage,,{bed.shared_pool},,,",
            f"2,{v2v},{vmware_guest.vmx},v2v,{b.uri},{b.private_pool},{NET_MAP},,1",
        ])
        args = ["plan", "run", str(plan), "--max-parallel", "3", "--max-per-source", "2",
                "--json"]
        run = vmshift(*args, timeout=900)
        assert run.rc == 0, run.err[-4000:] + daemon_logs(a, b)
        rerun = vmshift(*args, timeout=300)
        yield WaveRun(bed, guests, v2v, plan, Path(f"{plan}.state.db"), run, rerun, events)
    finally:
        for g in guests.values():
            g.destroy()
        _remove_moved_volume(bed, guests.get("st1"))
        remove_converted(b, v2v)


def _remove_moved_volume(bed: TestBed, g: TinyGuest | None) -> None:
    if g is None:
        return
    conn = bed.hostb.connect()
    try:
        pool = conn.storagePoolLookupByName(bed.shared_pool)
        pool.refresh(0)
        pool.storageVolLookupByName(Path(g.disk_path).name).delete(0)
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


def test_every_row_ends_where_the_plan_says(wave_run: WaveRun) -> None:
    bed, g = wave_run.bed, wave_run.guests
    a, b = bed.hosta, bed.hostb
    doc = wave_run.run.doc
    assert doc is not None and doc["kind"] == "plan_run" and doc["outcome"] == "ok"
    assert doc["counts"]["succeeded"] == 5 and doc["not_done"] == []
    for key in ("live1", "live2"):
        assert state_on(a, g[key].name) is None and state_on(b, g[key].name) == (True, True)
        assert "PONG" in g[key].console("ping", 60, host=b)
    assert state_on(a, g["off1"].name) is None and state_on(b, g["off1"].name) == (False, True)
    conn = b.connect()
    try:
        dom = conn.lookupByName(g["st1"].name)
        path = xmlmap.disk_paths(dom.XMLDesc(0))["vda"]
        pool = conn.storageVolLookupByPath(path).storagePoolLookupByVolume().name()
    finally:
        conn.close()
    assert pool == bed.shared_pool and dom.isActive()
    assert state_on(b, wave_run.v2v) == (False, True)


def test_waves_ran_in_order_within_the_limits(wave_run: WaveRun) -> None:
    rows = state_rows(wave_run.state)
    with sqlite3.connect(wave_run.state) as c:
        times = {vm: (s, e) for vm, s, e in c.execute(
            "SELECT r.vm, a.started, a.ended FROM attempts a JOIN rows r ON r.id = a.row_id")}
    wave1 = [t for vm, t in times.items() if rows[vm]["wave"] == "1"]
    assert times[wave_run.v2v][0] >= max(e for _, e in wave1)  # wave 2 after wave 1
    doc = wave_run.run.doc
    assert doc is not None and 2 <= doc["peak_parallel"] <= 3
    # --max-per-source 2: hosta's three rows never ran three at once
    hosta = [times[vm] for vm, r in rows.items() if r["source"] == wave_run.bed.hosta.uri]
    assert len(hosta) == 3 and peak_overlap(hosta) == 2


def test_each_row_ran_once_and_its_metrics_are_recorded(wave_run: WaveRun) -> None:
    rows = state_rows(wave_run.state)
    assert {r["state"] for r in rows.values()} == {"succeeded"}
    assert all(r["attempts"] == 1 for r in rows.values())
    live = rows[wave_run.guests["live1"].name]
    metrics = json.loads(live["metrics"])
    assert metrics["type"] == "live" and metrics["bytes"] > 0
    assert metrics["downtime_ms"] is not None and metrics["seconds"] > 0
    assert json.loads(rows[wave_run.v2v]["metrics"])["bytes"] > 0
    for key in ("live1", "live2"):
        assert wave_run.events.migrated_in("hostb", wave_run.guests[key].name) == 1


def test_a_rerun_of_a_finished_plan_redoes_nothing(wave_run: WaveRun) -> None:
    rerun = wave_run.rerun
    assert rerun.rc == 0, rerun.err[-2000:]
    assert rerun.doc is not None and rerun.doc["started"] == []
    assert all(r["attempts"] == 1 for r in state_rows(wave_run.state).values())


def test_the_report_of_the_run_draws_each_vm_and_shows_live_downtimes(
        wave_run: WaveRun, tmp_path: Path) -> None:
    html = tmp_path / "run.html"
    r = vmshift("plan", "report", str(wave_run.plan), "--html", str(html), "--json")
    assert r.rc == 0, r.err
    live = {x["vm"]: x["downtime_ms"] for x in r.doc["summary"]["live"]}
    assert set(live) == {wave_run.guests["live1"].name, wave_run.guests["live2"].name}
    assert all(isinstance(ms, int) for ms in live.values())
    assert r.doc["summary"]["bytes"] > 0
    dom = chromium("--dump-dom", html.as_uri(), profile=tmp_path / "profile").stdout
    bars = lxml.html.fromstring(dom).xpath("//*[local-name()='g'][@class='bar']")
    assert sorted(b.get("data-vm") for b in bars) == sorted(state_rows(wave_run.state))
    assert {b.get("data-state") for b in bars} == {"succeeded"}


@contextmanager
def live_rows(bed: TestBed, directory: Path, prefix: str, n: int, memory_mib: int,
              bandwidth: str) -> Iterator[tuple[list[TinyGuest], Path]]:
    """N running guests on hosta (half their memory filled) and a plan moving
    each live to hostb at BANDWIDTH, one row each in wave 1; destroyed after."""
    a, b = bed.hosta, bed.hostb
    guests = [make_tiny_guest(a, name=f"plan-{prefix}{i}-{os.getpid()}",
                              memory_mib=memory_mib, fill_mib=memory_mib // 2)
              for i in range(n)]
    try:
        for g in guests:
            g.wait_ready()
        yield guests, write_plan(directory / f"{prefix}.csv", [
            f"1,{g.name},{a.uri},live,{b.uri},,,{bandwidth}," for g in guests])
    finally:
        for g in guests:
            g.destroy()


def test_a_runner_killed_mid_wave_resumes_without_moving_anything_twice(
        three_hosts: TestBed, events: Events, tmp_path: Path) -> None:
    """SIGKILL the runner while its second row migrates. The migration goes on
    (rows run in processes of their own); the next runner waits for it, records
    it, and runs the third row. Each guest arrives on hostb exactly once."""
    a, b = three_hosts.hosta, three_hosts.hostb
    with live_rows(three_hosts, tmp_path, "kill", 3, 192, "24M") as (guests, plan):
        state = Path(f"{plan}.state.db")
        args = ["plan", "run", str(plan), "--max-parallel", "1", "--json"]
        first = start(*args)
        second_row = guests[1].name
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (
                state.exists() and state_rows(state).get(second_row, {}).get("state")
                == "running"):
            time.sleep(0.2)
        time.sleep(1.0)  # its migration job is under way
        first.send_signal(signal.SIGKILL)
        killed = finish(first)
        assert killed.rc == -signal.SIGKILL
        mid = state_rows(state)
        assert mid[guests[0].name]["state"] == "succeeded"
        assert mid[second_row]["state"] == "running"
        again = vmshift(*args, timeout=600)
        assert again.rc == 0, again.err[-3000:] + daemon_logs(a, b)
        assert again.doc is not None
        assert [r["vm"] for r in again.doc["reconciled"]] == [second_row]
        assert again.doc["started"] == [f"1/{guests[2].name}"]
        rows = state_rows(state)
        assert {r["state"] for r in rows.values()} == {"succeeded"}
        assert [rows[g.name]["attempts"] for g in guests] == [1, 1, 1]
        for g in guests:
            assert state_on(a, g.name) is None and state_on(b, g.name) == (True, True)
            assert events.migrated_in("hostb", g.name) == 1
        assert "PONG" in guests[1].console("ping", 60, host=b)


def test_a_target_in_maintenance_is_refused(three_hosts: TestBed, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """hostc marked in maintenance (as `evacuate --mark-maintenance` marks it):
    a plan that sends a VM there does not validate, so it does not run."""
    from vmshift.migrate.evacuate import maintenance

    a, c = three_hosts.hosta, three_hosts.hostc
    monkeypatch.setenv("VMSHIFT_STATE_DIR", str(tmp_path / "state"))
    conn = c.connect()
    try:
        maintenance.mark(maintenance.host_uuid(conn), c.uri, "hostc", "patching")
    finally:
        conn.close()
    plan = write_plan(tmp_path / "maint.csv", [f"1,x{os.getpid()},{a.uri},live,{c.uri},,,,"])
    for args in (["validate", str(plan)], ["run", str(plan)]):
        r = vmshift("plan", *args)
        assert r.rc == 2, r.err
        line = [x for x in r.err.splitlines() if ": target: " in x]
        assert line and "in maintenance since" in line[0] and "(patching)" in line[0]
        assert f"vmshift maintenance clear {c.uri}" in line[0]
    assert not Path(f"{plan}.state.db").exists()


def test_a_second_ctrl_c_aborts_the_running_rows(three_hosts: TestBed, tmp_path: Path) -> None:
    """One Ctrl-C (--on-interrupt finish): nothing new starts, the running live
    migration goes on. A second one aborts it: the guest stays on hosta,
    running; the row is failed, the next one never started; exit 1."""
    a, b = three_hosts.hosta, three_hosts.hostb
    with live_rows(three_hosts, tmp_path, "int", 2, 256, "8M") as (guests, plan):
        p = start("plan", "run", str(plan), "--max-parallel", "1", "--json")
        try:
            wait_job_active(a, guests[0].name, timeout=120, min_bytes=8 * MiB)
            p.send_signal(signal.SIGINT)
            time.sleep(3.0)
            assert state_on(a, guests[0].name) == (True, True)
            assert wait_job_active(a, guests[0].name, timeout=5, min_bytes=8 * MiB)
            p.send_signal(signal.SIGINT)
            r = finish(p, timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
        assert r.rc == 1, r.err[-2000:]
        doc = r.doc["error"]["detail"]
        assert doc["interrupted"] is True and doc["started"] == [f"1/{guests[0].name}"]
        rows = {x["vm"]: x for x in doc["waves"][0]["rows"]}
        assert rows[guests[0].name]["state"] == "failed"
        assert rows[guests[1].name]["state"] == "pending"
        for g in guests:
            assert state_on(a, g.name) == (True, True) and state_on(b, g.name) is None
        assert "PONG" in guests[0].console("ping", 60, host=a)
