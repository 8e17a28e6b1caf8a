"""`vmshift evacuate` on the three-host bed: tiny guests of different sizes
leave hosta for hostb and hostc, through the real CLI and real daemons.

One module fixture runs the dry run, then the evacuation itself (with
--mark-maintenance), and several tests assert on that one result. The fault
test kills hostc's libvirtd mid-evacuation and repairs it after.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import libvirt
import pytest

from tests.migrate_support import (
    Run,
    daemon_logs,
    finish,
    libvirtd_pid,
    peak_overlap,
    restart_libvirtd,
    start,
    vmshift,
    wait_job_active,
)
from vmshift.testbed.hosts import TestBed, TestHost
from vmshift.testbed.tinyguest import TinyGuest
from vmshift.testbed.tinyguest import tiny_guest as make_tiny_guest

pytestmark = pytest.mark.slow
MiB = 1 << 20


def evacuate_args(bed: TestBed, source: TestHost, targets: list[TestHost],
                  *extra: str) -> list[str]:
    unsafe = ["--unsafe"] if bed.migration_needs_unsafe else []
    return ["evacuate", "--source", source.uri, "--targets", ",".join(t.uri for t in targets),
            "--json", *unsafe, *extra]


def only(names: Any) -> list[str]:
    """--only NAME for each of NAMES (the other VMs on the bed are not ours)."""
    return [x for n in sorted(names) for x in ("--only", n)]


def guests_on(host: TestHost, names: set[str]) -> set[str]:
    """Which of NAMES run on HOST now."""
    conn = host.connect()
    try:
        return {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                if d.name() in names}
    finally:
        conn.close()


def alive(g: TinyGuest, host: TestHost) -> bool:
    return g.running_on() == host and "PONG" in g.console("ping", 60, host=host)


def make_guests(bed: TestBed, host: TestHost, sizes: list[int], fill: int = 32,
                prefix: str = "evac") -> list[TinyGuest]:
    made = []
    try:
        for i, mib in enumerate(sizes):
            made.append(make_tiny_guest(host, name=f"{prefix}-{i}-{os.getpid()}",
                                        memory_mib=mib, fill_mib=fill))
        for g in made:
            g.wait_ready()
    except BaseException:
        destroy(made)
        raise
    return made


def destroy(guests: list[TinyGuest]) -> None:
    for g in guests:
        g.destroy()


@dataclass
class Evacuated:
    bed: TestBed
    guests: list[TinyGuest]
    dry: Run
    after_dry: dict[str, set[str]]  # host -> our guests running there after the dry run
    real: Run
    env: dict[str, str]


@pytest.fixture(scope="module")
def state_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"VMSHIFT_STATE_DIR": str(tmp_path_factory.mktemp("state"))}


@pytest.fixture(scope="module")
def evacuated(three_hosts: TestBed, state_env: dict[str, str]) -> Iterator[Evacuated]:
    bed = three_hosts
    a, b, c = bed.hosta, bed.hostb, bed.hostc
    guests = make_guests(bed, a, [128, 160, 192, 224])
    names = {g.name for g in guests}
    try:
        args = evacuate_args(bed, a, [b, c], "--max-parallel", "2", "--bandwidth", "64M",
                             *only(names))
        dry = vmshift(*args, "--dry-run", env=state_env)
        after_dry = {h.name: guests_on(h, names) for h in bed.hosts}
        real = vmshift(*args, "--mark-maintenance", "--reason", "test", timeout=600,
                       env=state_env)
        assert real.rc == 0, real.err[-3000:] + daemon_logs(a, b, c)
        yield Evacuated(bed, guests, dry, after_dry, real, state_env)
    finally:
        destroy(guests)


def test_evacuation_empties_the_source_and_every_guest_answers_on_its_target(
        evacuated: Evacuated) -> None:
    bed, doc = evacuated.bed, evacuated.real.doc
    assert doc is not None and doc["kind"] == "evacuate" and doc["outcome"] == "ok"
    names = {g.name for g in evacuated.guests}
    assert guests_on(bed.hosta, names) == set()
    assert doc["left_running"] == []
    where = {r["vm"]: r["target"] for r in doc["results"]}
    assert {r["outcome"] for r in doc["results"]} == {"moved"}
    for g in evacuated.guests:
        target = bed.host(where[g.name])
        assert alive(g, target), f"{g.name} does not answer on {target.name}"
    # spread: both targets took guests
    assert set(where.values()) == {"hostb", "hostc"}
    for r in doc["results"]:
        assert r["time_s"] > 0 and r["bytes"] > 0 and r["downtime_ms"] is not None


def test_progress_shows_each_vm_and_the_host_total(evacuated: Evacuated) -> None:
    """--json: progress is JSON lines on stderr, one task per VM plus the total."""
    events = [json.loads(x) for x in evacuated.real.err.splitlines() if x.startswith("{")]
    tasks = {e["task"] for e in events if e.get("event") == "progress"}
    assert {f"migrate {g.name}" for g in evacuated.guests} <= tasks
    totals = [e for e in events if e.get("task") == "evacuate 4 VM(s)"]
    assert totals and totals[-1]["done"] == totals[-1]["total"] == 4


def test_parallelism_never_exceeds_the_limit_and_was_used(evacuated: Evacuated) -> None:
    doc = evacuated.real.doc
    assert doc is not None
    assert doc["peak_parallel"] == 2
    # from the jobs' own start and end times
    assert peak_overlap((r["started_s"], r["ended_s"]) for r in doc["results"]) == 2


def test_bandwidth_budget_is_split_between_running_migrations(evacuated: Evacuated) -> None:
    doc = evacuated.real.doc
    assert doc is not None
    shares = [r["bandwidth_mib"] for r in doc["results"]]
    assert all(s and set(s) <= {32, 64} for s in shares), shares
    assert shares[0][0] == 32  # the first two start together: half each


def test_no_target_exceeds_its_memory(evacuated: Evacuated) -> None:
    doc = evacuated.real.doc
    assert doc is not None
    sizes = {g.name: g.memory_mib * 1024 for g in evacuated.guests}
    for t in doc["plan"]["targets"]:
        placed = sum(sizes[r["vm"]] for r in doc["results"] if r["target"] == t["name"])
        assert placed == t["memory_placed_kib"] <= t["memory_capacity_kib"]


def test_dry_run_plan_is_exactly_what_happened_and_moved_nothing(evacuated: Evacuated) -> None:
    dry, real = evacuated.dry.doc, evacuated.real.doc
    assert evacuated.dry.rc == 0 and dry is not None and real is not None
    assert dry["dry_run"] is True and "results" not in dry
    names = {g.name for g in evacuated.guests}
    assert evacuated.after_dry == {"hosta": names, "hostb": set(), "hostc": set()}
    planned = [(p["vm"], p["target"]) for p in dry["plan"]["placements"]]
    happened = [(r["vm"], r["target"]) for r in real["results"]]
    assert planned == happened
    assert dry["plan"]["unplaced"] == [] and len(planned) == 4


def test_host_in_maintenance_takes_nothing_until_cleared(evacuated: Evacuated) -> None:
    bed, env = evacuated.bed, evacuated.env
    a, b, c = bed.hosta, bed.hostb, bed.hostc
    assert evacuated.real.doc is not None and "maintenance" in evacuated.real.doc
    listed = vmshift("maintenance", "list", "--json", env=env)
    assert [h["uri"] for h in listed.doc["hosts"]] == [a.uri]
    guests = make_guests(bed, b, [128, 128], prefix="maint")
    try:
        r = vmshift(*evacuate_args(bed, b, [a, c], *only(g.name for g in guests)),
                    timeout=300, env=env)
        assert r.rc == 0, r.err[-3000:]
        assert [t["in_maintenance"] for t in r.doc["plan"]["targets"]] == [True, False]
        assert {x["target"] for x in r.doc["results"]} == {"hostc"}
        assert guests_on(a, {g.name for g in guests}) == set()
    finally:
        destroy(guests)
    cleared = vmshift("maintenance", "clear", a.uri, "--json", env=env)
    assert cleared.rc == 0 and cleared.doc["was_in_maintenance"] is True
    assert vmshift("maintenance", "list", "--json", env=env).doc["hosts"] == []


def available_kib(host: TestHost) -> int:
    conn = host.connect()
    try:
        s = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        return int(s["free"]) + int(s["buffers"]) + int(s["cached"])
    finally:
        conn.close()


def test_unplaceable_vm_is_reported_up_front_and_the_others_still_move(
        three_hosts: TestBed, state_env: dict[str, str]) -> None:
    bed = three_hosts
    a, b, c = bed.hosta, bed.hostb, bed.hostc
    small = make_guests(bed, a, [128, 128], prefix="fits")
    big = make_guests(bed, a, [4096], prefix="big")
    try:
        # Each target may give guests ~1.5 GiB: the 4 GiB guest fits nowhere.
        reserve = min(available_kib(b), available_kib(c)) - 1536 * 1024
        names = [g.name for g in small + big]
        args = evacuate_args(bed, a, [b, c], "--reserve", f"{reserve}K", *only(names))
        stop = vmshift(*args, "--on-failure", "stop", env=state_env)
        assert stop.rc == 3 and stop.doc["outcome"] == "blocked", stop.err
        assert stop.doc["findings"][0]["id"] == "evacuate.unplaceable"
        assert guests_on(a, set(names)) == set(names)  # refused: nothing moved
        r = vmshift(*args, timeout=300, env=state_env)
        assert r.rc == 1, r.err[-3000:]
        doc = r.doc
        assert doc["kind"] == "evacuate" and doc["outcome"] == "failed"
        (unplaced,) = doc["plan"]["unplaced"]
        assert unplaced["vm"] == big[0].name
        assert set(unplaced["reasons"]) == {"hostb", "hostc"}
        assert all(why.startswith("memory: needs 4.0 GiB") for why in unplaced["reasons"].values())
        assert {x["vm"] for x in doc["results"]} == {g.name for g in small}
        assert {x["outcome"] for x in doc["results"]} == {"moved"}
        assert doc["left_running"] == [big[0].name]
        left = {x["vm"]: x for x in doc["left_behind"]}
        assert left[big[0].name]["reason"].startswith("no target can take it")
        assert alive(big[0], a)
        assert r.err.splitlines()[-1] == (
            f"vmshift: error: evacuation of {a.uri} incomplete: running VM(s) left on the "
            f"source: {big[0].name}; failed moves: none")
    finally:
        destroy(small + big)


def test_target_daemon_killed_mid_evacuation(three_hosts: TestBed,
                                             state_env: dict[str, str]) -> None:
    """hostc's libvirtd dies while a guest is on its way there: that guest
    and the one still queued for hostc stay running on hosta, the others
    reach hostb, the report says which is which, exit 1."""
    bed = three_hosts
    a, b, c = bed.hosta, bed.hostb, bed.hostc
    guests = make_guests(bed, a, [256, 256, 256, 256], fill=128, prefix="fault")
    try:
        names = [g.name for g in guests]
        args = evacuate_args(bed, a, [b, c], "--bandwidth", "16M", *only(names))
        plan = vmshift(*args, "--dry-run", env=state_env).doc
        assert plan is not None
        to_c = [p["vm"] for p in plan["plan"]["placements"] if p["target"] == "hostc"]
        to_b = [p["vm"] for p in plan["plan"]["placements"] if p["target"] == "hostb"]
        assert len(to_c) == 2 and len(to_b) == 2
        p = start(*args)
        try:
            wait_job_active(a, to_c[0], timeout=60, min_bytes=8 * MiB)
            os.kill(libvirtd_pid(bed.name, "hostc"), signal.SIGKILL)
            r = finish(p, timeout=400)
        finally:
            if p.poll() is None:
                p.kill()
            restart_libvirtd(bed.name, "hostc")
            for g in guests:
                g.forget_connections()
        assert r.rc == 1, r.err[-3000:]
        assert "Traceback" not in r.err
        doc = r.doc
        assert doc["kind"] == "evacuate" and doc["outcome"] == "failed"
        results = {x["vm"]: x for x in doc["results"]}
        for name in to_c:
            assert results[name]["outcome"] == "failed", results[name]
            assert results[name]["error"]
        for name in to_b:
            assert results[name]["outcome"] == "moved", results[name]
        assert sorted(doc["left_running"]) == sorted(to_c)
        by_name = {g.name: g for g in guests}
        time.sleep(1)
        for name in to_c:
            assert alive(by_name[name], a), f"{name} must still run on hosta"
        for name in to_b:
            assert alive(by_name[name], b), f"{name} must run on hostb"
    finally:
        destroy(guests)


def test_bad_selection_is_one_line_exit_2(three_hosts: TestBed,
                                         state_env: dict[str, str]) -> None:
    a, b = three_hosts.hosta, three_hosts.hostb
    r = vmshift(*evacuate_args(three_hosts, a, [b], "--only", "no-such-vm"), env=state_env)
    assert r.rc == 2
    assert r.err == f"vmshift: error: --only: no domain 'no-such-vm' on {a.uri}\n"
    r = vmshift(*evacuate_args(three_hosts, a, [a]), env=state_env)
    assert r.rc == 2 and "is the same libvirt host as the source" in r.err


@pytest.mark.parametrize("on_interrupt, signals", [("finish", 1), ("abort", 1),
                                                   ("finish", 2)])
def test_ctrl_c_starts_no_new_migration_and_finishes_or_aborts_the_running_one(
        three_hosts: TestBed, state_env: dict[str, str], on_interrupt: str,
        signals: int) -> None:
    """One Ctrl-C: the running migration finishes or is aborted, as asked; a
    second one aborts it where "finish" was asked."""
    bed = three_hosts
    a, b, c = bed.hosta, bed.hostb, bed.hostc
    guests = make_guests(bed, a, [256, 256], fill=128,
                         prefix=f"int{on_interrupt[0]}{signals}")
    try:
        names = [g.name for g in guests]
        args = evacuate_args(bed, a, [b, c], "--max-parallel", "1", "--bandwidth", "16M",
                             "--on-interrupt", on_interrupt, *only(names))
        p = start(*args)
        try:
            first = names[0]  # smallest-first, then by name
            wait_job_active(a, first, timeout=60, min_bytes=8 * MiB)
            for _ in range(signals):
                p.send_signal(signal.SIGINT)
                time.sleep(1.0)
            r = finish(p, timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
        assert r.rc == 1, r.err[-2000:]
        doc = r.doc
        assert doc["stopped_by"] == "signal 2"
        results = {x["vm"]: x for x in doc["results"]}
        assert results[names[1]]["outcome"] == "not started"
        expected = "moved" if on_interrupt == "finish" and signals == 1 else "failed"
        assert results[first]["outcome"] == expected, results[first]
        assert guests_on(a, set(names)) == ({names[1]} if expected == "moved" else set(names))
        assert alive(guests[1], a)
    finally:
        destroy(guests)


def test_priority_order_from_metadata_and_priority_file(
        three_hosts: TestBed, state_env: dict[str, str]) -> None:
    """Stopped guests (no CPU spent): the dry run's order is the file's
    priority, then the metadata's, then the VMs without one."""
    bed = three_hosts
    a, b = bed.hosta, bed.hostb
    guests = [make_tiny_guest(a, name=f"prio-{i}-{os.getpid()}", memory_mib=128, fill_mib=32,
                              start=False) for i in range(3)]
    try:
        x, y, z = (g.name for g in guests)
        conn = a.connect()
        try:
            conn.lookupByName(x).setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, '<evacuate priority="5"/>', "vmshift",
                "https://vmshift.dev/xmlns/evacuate/1", libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        finally:
            conn.close()
        r = vmshift(*evacuate_args(bed, a, [b], "--order", "priority", "--priority-file",
                                   f"{y}=10", *only([x, y, z]), "--dry-run"), env=state_env)
        assert r.rc == 0, r.err
        placed = [(p["vm"], p["priority"], p["running"]) for p in r.doc["plan"]["placements"]]
        assert placed == [(y, 10, False), (x, 5, False), (z, None, False)]
    finally:
        destroy(guests)
