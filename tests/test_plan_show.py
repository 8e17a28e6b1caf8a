"""`vmshift plan show`: the schedule respects wave order and dependencies, windows,
--max-parallel, --max-per-source and priorities; estimates come from the sizes
libvirt reports (test driver) or stated defaults; an invalid plan is refused
with exactly validate's lines."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import libvirt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.cli_support import UNREACHABLE, libvirt_test_host, vmshift
from tests.test_plan_validate import EXPECTED, HEADER, MISTAKES
from vmshift.plan.csvio import format_csv
from vmshift.plan.estimate import DEFAULT_DISK, DEFAULT_MEMORY, ROW_OVERHEAD_S, V2V_CONVERSION_S
from vmshift.plan.schedule import Job, Limits, plan_schedule, schedule
from vmshift.plan.schema import COLUMNS
from vmshift.plan.validate import load_plan
from vmshift.units import MiB

START = "2025-03-01T20:00:00+01:00"
A, B = "qemu+ssh://kvm-a/system", "qemu+ssh://kvm-b/system"


def job(index: int, wave: str = "1", source: str = "a", duration: float = 10, **kw) -> Job:
    return Job(index, wave, source, duration, **kw)


def starts(jobs: list[Job], depends: dict[str, set[str]] | None = None,
           limits: Limits = Limits()) -> dict[int, float | None]:
    return {s.job.index: s.start for w in schedule(jobs, depends or {}, limits)
            for s in w.slots}


# --- the schedule, pure ----------------------------------------------------------

def test_waves_run_in_order_and_after_the_waves_they_depend_on() -> None:
    # wave 2 is written first but depends on wave 1; wave 3 follows in plan order
    jobs = [job(0, "2", duration=5), job(1, "1", duration=30), job(2, "3", "b", 7)]
    waves = schedule(jobs, {"2": {"1"}}, Limits())
    assert [(w.name, w.start, w.end) for w in waves] == [("1", 0, 30), ("2", 30, 35),
                                                         ("3", 35, 42)]
    assert waves[1].depends_on == ["1"]


def test_a_row_waits_for_its_window_and_others_go_first() -> None:
    jobs = [job(0, "1", "a", 10, opens=100), job(1, "1", "b", 10)]
    assert starts(jobs) == {0: 100, 1: 0}


def test_a_row_that_cannot_finish_inside_its_window_does_not_fit() -> None:
    (wave,) = schedule([job(0, duration=50, closes=30), job(1, "1", "b", 5, closes=30)],
                       {}, Limits())
    late, fine = wave.slots
    assert (late.start, late.end, late.fits) == (0, 50, False)
    assert (fine.start, fine.fits) == (0, True)


def test_a_row_whose_window_closes_before_a_slot_is_free_is_not_started() -> None:
    jobs = [job(0, duration=60, priority=9), job(1, duration=5, closes=40),
            job(2, duration=5)]
    (wave,) = schedule(jobs, {}, Limits())
    assert [(s.start, s.fits) for s in wave.slots] == [(0, True), (None, False), (60, True)]
    assert wave.slots[1].ready == 60


def test_at_most_max_per_source_rows_per_source_host() -> None:
    jobs = [job(i, source="esx1", duration=10) for i in range(3)] + [job(3, source="esx2")]
    assert starts(jobs, limits=Limits(max_parallel=4, max_per_source=1)) == \
        {0: 0, 1: 10, 2: 20, 3: 0}
    assert starts(jobs, limits=Limits(max_parallel=4, max_per_source=2)) == \
        {0: 0, 1: 0, 2: 10, 3: 0}


def test_at_most_max_parallel_rows_at_once() -> None:
    jobs = [job(0, source="a", duration=10), job(1, source="b", duration=20),
            job(2, source="c", duration=5)]
    assert starts(jobs, limits=Limits(max_parallel=2, max_per_source=1)) == \
        {0: 0, 1: 0, 2: 10}
    assert starts(jobs, limits=Limits(max_parallel=1)) == {0: 0, 1: 10, 2: 30}


def test_higher_priority_first_then_plan_order() -> None:
    jobs = [job(0, priority=0), job(1, priority=5), job(2, priority=5), job(3, priority=-1)]
    assert starts(jobs, limits=Limits(max_parallel=1)) == {1: 0, 2: 10, 0: 20, 3: 30}


@st.composite
def jobs_and_limits(draw: st.DrawFn) -> tuple[list[Job], dict[str, set[str]], Limits]:
    waves = [str(w) for w in range(draw(st.integers(1, 4)))]
    depends = {w: set(draw(st.lists(st.sampled_from(waves[:i]), max_size=2))) if i else set()
               for i, w in enumerate(waves)}
    jobs = []
    for index in range(draw(st.integers(1, 14))):
        opens = draw(st.none() | st.integers(0, 300))
        closes = draw(st.none() | st.integers(1, 400))
        assume(opens is None or closes is None or closes > opens)  # validation refuses it
        jobs.append(Job(index, draw(st.sampled_from(waves)), draw(st.sampled_from("abc")),
                        draw(st.integers(1, 120)), draw(st.integers(-2, 2)), opens, closes))
    limits = Limits(draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return draw(st.permutations(jobs)), depends, limits


@settings(max_examples=300, deadline=None)
@given(jobs_and_limits())
def test_the_schedule_never_breaks_a_limit_a_window_or_a_dependency(
        case: tuple[list[Job], dict[str, set[str]], Limits]) -> None:
    jobs, depends, limits = case
    waves = schedule(jobs, depends, limits)
    assert sorted(s.job.index for w in waves for s in w.slots) == sorted(j.index for j in jobs)
    ends = {w.name: w.end for w in waves}
    started = [s for w in waves for s in w.slots if s.start is not None]
    for wave in waves:
        for slot in wave.slots:
            job = slot.job
            if slot.start is None:  # only a row whose window closed first is left out
                assert job.closes is not None and slot.ready >= job.closes
                continue
            assert slot.start >= wave.start and slot.end <= wave.end
            assert job.opens is None or slot.start >= job.opens
            assert job.closes is None or slot.start < job.closes
            assert all(slot.start >= ends[d] for d in depends.get(job.wave, ()) if d in ends)
            running = [s for s in started if s.start <= slot.start < s.end]  # type: ignore
            assert len(running) <= limits.max_parallel
            assert sum(s.job.source == job.source for s in running) <= limits.max_per_source


# --- from a plan file ------------------------------------------------------------

def write_plan(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text(format_csv(list(COLUMNS), [[r.get(c, "") for c in COLUMNS]
                                               for r in rows]))
    return path


PLAN = [
    {"wave": "1", "vm": "web01", "source": "vsphere://vc1/web01", "type": "v2v", "target": A,
     "target_pool": "default", "bandwidth": "1G", "priority": "1"},
    {"wave": "1", "vm": "web02", "source": "vsphere://vc1/web02", "type": "v2v", "target": A,
     "target_pool": "default", "bandwidth": "1G", "priority": "5"},
    {"wave": "2", "vm": "db01", "source": A, "type": "live", "target": B, "bandwidth": "64M",
     "depends_on": "1", "window_start": "2025-03-01T22:00:00+01:00",
     "window_end": "2025-03-01T22:01:00+01:00"},
    {"wave": "2", "vm": "db02", "source": A, "type": "offline", "target": B,
     "depends_on": "1", "window_end": "2025-03-01T20:03:00+01:00"},
]


def test_plan_schedule_estimates_from_stated_defaults(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path / "plan.csv", PLAN))
    assert plan.problems == []
    start = datetime.fromisoformat(START)
    sched = plan_schedule(plan.rows, start, Limits(), bandwidth=200 * MiB)
    est = sched.estimates
    v2v = math.ceil(DEFAULT_DISK / (1024 * MiB) + ROW_OVERHEAD_S + V2V_CONVERSION_S)
    assert [e.seconds for e in est] == [v2v, v2v, math.ceil(1.3 * DEFAULT_MEMORY / (64 * MiB) + 5),
                                        math.ceil(DEFAULT_DISK / (200 * MiB) + 5)]
    assert [e.bandwidth_from for e in est] == ["row", "row", "row", "option"]
    assert all(e.assumed for e in est)
    wave1, wave2 = sched.waves
    # one per source host: web02 (priority 5) first, then web01
    assert [(s.job.index, s.start) for s in wave1.slots] == [(0, v2v), (1, 0)]
    db01, db02 = wave2.slots
    # waits for its window at 22:00; 89 s do not fit before 22:01
    assert (db01.start, db01.fits) == (2 * 3600, False)
    assert db02.start is None and not db02.fits  # its window closed at 20:03
    assert sched.why(db02) == ("its window closes at 2025-03-01T20:03:00+01:00, before a "
                               "slot is free for it (2025-03-01T20:04:50+01:00)")
    assert sched.at(sched.end) == start + timedelta(seconds=2 * 3600 + est[2].seconds)


def test_show_prints_a_table_per_wave_and_a_total(tmp_path: Path) -> None:
    path = write_plan(tmp_path / "plan.csv", [*PLAN[:3], {
        **PLAN[3], "window_start": "2025-03-01T22:00:00+01:00",
        "window_end": "2025-03-01T22:01:35+01:00", "bandwidth": "10G"}])
    res = vmshift("plan", "show", "--offline", "--start", START, "--max-parallel", "1",
                  str(path))
    assert res.rc == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == ("wave 1: +0:00:00 .. +0:04:50 (2025-03-01T20:00:00+01:00 .. "
                        "2025-03-01T20:04:50+01:00)")
    assert lines[3].split() == ["3", "web02", "v2v", "vc1", "+0:00:00",
                                "2025-03-01T20:00:00+01:00", "0:02:25*", "+0:02:25", "fits"]
    assert lines[6].startswith("wave 2, after 1: +0:04:50 .. +2:01:38 ")
    assert lines[9].split() == ["4", "db01", "live", "kvm-a", "+2:00:00",
                                "2025-03-01T22:00:00+01:00", "0:01:29*", "+2:01:29", "NO:",
                                "needs", "0:01:29;", "it", "would", "end", "0:00:29", "after",
                                "its", "window", "closes", "at", "2025-03-01T22:01:00+01:00"]
    assert lines[10].split()[4:] == ["+2:01:29", "2025-03-01T22:01:29+01:00", "0:00:09*",
                                     "+2:01:38", "NO:", "needs", "0:00:09;", "it", "would",
                                     "end", "0:00:03", "after", "its", "window", "closes",
                                     "at", "2025-03-01T22:01:35+01:00"]
    assert lines[-2:] == [
        "total: 4 VMs in 2 waves, 2:01:38, ends 2025-03-01T22:01:38+01:00; "
        "2 not fitting their window",
        "* 4 estimates from assumed sizes (--offline, or a source that is not a libvirt "
        "host): memory 4.0 GiB, disks 40.0 GiB"]


def test_show_json_is_one_plan_schedule_document(tmp_path: Path) -> None:
    path = write_plan(tmp_path / "plan.csv", PLAN)
    res = vmshift("plan", "show", "--offline", "--json", "--start", START,
                  "--max-per-source", "2", "--bandwidth", "512M", str(path))
    assert res.rc == 0, res.err
    doc = res.doc()
    assert doc["kind"] == "plan_schedule" and doc["outcome"] == "ok"
    assert doc["limits"] == {"max_parallel": 2, "max_per_source": 2}
    assert doc["live_checked"] is False and doc["start"] == START
    wave1 = doc["waves"][0]
    assert [r["start"]["offset_s"] for r in wave1["rows"]] == [0, 0]  # two per source now
    db02, db01 = doc["waves"][1]["rows"]  # by start: db02 at once, db01 at 22:00
    assert (db02["vm"], db02["start"], db02["duration_s"], db02["fits"]) == (
        "db02", {"offset_s": 145, "at": "2025-03-01T20:02:25+01:00"}, 85, False)
    assert db02["why"] == ("needs 0:01:25; it would end 0:00:50 after its window closes at "
                           "2025-03-01T20:03:00+01:00")
    assert db02["estimate"]["bandwidth_from"] == "option"
    assert db02["estimate"]["basis"] == "assumed disks 40.0 GiB at 512.0 MiB/s + 5 s"
    assert (db01["vm"], db01["start"]["offset_s"], db01["fits"]) == ("db01", 7200, False)
    assert doc["total"] == {"rows": 4, "waves": 2, "duration_s": 7200 + 89,
                            "end": "2025-03-01T22:01:29+01:00", "not_fitting": 2,
                            "assumed": 4}


def test_an_invalid_plan_is_refused_with_validates_lines(tmp_path: Path) -> None:
    (tmp_path / "nets.map").write_text("VM Network = default\n")
    path = tmp_path / "plan.csv"
    path.write_text(format_csv(HEADER, MISTAKES))
    check = vmshift("plan", "validate", "--offline", str(path))
    show = vmshift("plan", "show", "--offline", str(path))
    assert show.rc == check.rc == 2 and show.out == ""
    assert show.err == check.err and len(show.err.splitlines()) == len(EXPECTED.splitlines())
    # live checks too, unless --offline
    write_plan(path, [{"wave": "1", "vm": "vm1", "source": UNREACHABLE, "type": "storage",
                       "target_pool": "b"}])
    check, show = (vmshift("plan", cmd, str(path)) for cmd in ("validate", "show"))
    assert show.rc == 2 and show.err == check.err and "Connection refused" in show.err
    assert vmshift("plan", "show", "--offline", str(path)).rc == 0
    res = vmshift("plan", "show", "--offline", "--start", "2025-03-01T20:00", str(path))
    assert (res.rc, res.err) == (2, "vmshift: error: --start: '2025-03-01T20:00' has no UTC "
                                    "offset (add one: +01:00, Z)\n")


def test_live_sizes_come_from_libvirt(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    host_a, host_b = libvirt_test_host(tmp_path / "a"), libvirt_test_host(tmp_path / "b")
    conn = libvirt.openReadOnly(host_b)
    dom = conn.lookupByName("vm1")
    disk = sum(dom.blockInfo(dev)[1] for dev in ("vda", "vdb"))  # allocation
    conn.close()
    path = write_plan(tmp_path / "plan.csv", [
        {"wave": "1", "vm": "vm1", "source": host_a, "type": "live", "target": host_b,
         "bandwidth": "16M"},
        {"wave": "1", "vm": "vm1", "source": host_b, "type": "offline", "target": host_a,
         "bandwidth": "1G"},
        {"wave": "1", "vm": "vm9", "source": "vsphere://vc1/vm9", "type": "v2v",
         "target": host_a, "target_pool": "b"}])
    doc = vmshift("plan", "show", "--json", "--start", START, str(path)).doc()
    rows = {r["line"]: r for r in doc["waves"][0]["rows"]}
    live, offline, v2v = rows[2]["estimate"], rows[3]["estimate"], rows[4]["estimate"]
    assert (live["bytes"], live["assumed"], live["seconds"]) == (64 * MiB, False, 6 + 5)
    assert live["basis"] == "memory 64.0 MiB x 1.3 at 16.0 MiB/s + 5 s"
    assert (offline["bytes"], offline["assumed"]) == (disk, False)
    assert offline["seconds"] == math.ceil(disk / (1024 * MiB) + 5)
    assert (v2v["bytes"], v2v["assumed"]) == (DEFAULT_DISK, True)
    # both test-driver hosts have no host name: one source host, "local"
    assert {r["source_host"] for r in rows.values()} == {"local", "vc1"}
    assert rows[3]["start"]["offset_s"] == live["seconds"]
    assert doc["live_checked"] is True and doc["total"]["assumed"] == 1


@pytest.mark.parametrize("source,host", [
    ("vsphere://vc.example.com/web01", "vc.example.com"),
    ("qemu+ssh://root@kvm-a.example.com:2222/system", "kvm-a.example.com"),
    ("qemu:///system", "local"),
])
def test_source_hosts(tmp_path: Path, source: str, host: str) -> None:
    kind = "v2v" if source.startswith("vsphere") else "offline"
    plan = load_plan(write_plan(tmp_path / "plan.csv", [
        {"wave": "1", "vm": "web01", "source": source, "type": kind, "target": B,
         "target_pool": "p"}]))
    assert plan.problems == []
    sched = plan_schedule(plan.rows, datetime.fromisoformat(START), Limits())
    assert sched.waves[0].slots[0].job.source == host
