"""vmshift.plan.state: the run state of a plan in SQLite, the runner lock, and
`vmshift plan status`.

Every legal and illegal move of the state machine; a transaction killed by
SIGKILL leaves the state as before; a row left running is reconciled; a second
runner (a real second process) is refused naming the first; a plan that
changed is refused unless only rows were added (or rows not yet started were
changed); `plan status` as text and JSON. No test bed: nothing here runs a row.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.cli_support import ROOT, vmshift
from vmshift.errors import BadInput, Refused
from vmshift.plan import state as runstate
from vmshift.plan.state import IllegalTransition, Key, RunState
from vmshift.plan.validate import load_plan

A, B = "qemu+ssh://kvm-a/system", "qemu+ssh://kvm-b/system"
HEADER = "wave,vm,source,type,target,bandwidth,notes\n"
ROWS = {"web01": "1,web01,{A},live,{B},,\n", "web02": "1,web02,{A},live,{B},,\n",
        "db01": "2,db01,{A},offline,{B},,\n"}


def write_plan(directory: Path, rows: list[str]) -> Path:
    plan = directory / "plan.csv"
    plan.write_text(HEADER + "".join(r.format(A=A, B=B) for r in rows))
    return plan


def run_state(plan: Path) -> RunState:
    loaded = load_plan(plan)
    assert not loaded.problems, loaded.problems
    return RunState.create_or_resume(runstate.default_state_path(plan), loaded)


def key(vm: str, wave: str = "1") -> Key:
    return Key(wave, vm, A)


def states(run: RunState) -> dict[str, str]:
    return {r["vm"]: r["state"] for r in run.rows()}


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    return write_plan(tmp_path, list(ROWS.values()))


# --- the state machine, table-driven ----------------------------------------------

# How to bring a row into each state with legal moves.
REACH = {"pending": [], "running": [("start", None)],
         "succeeded": [("start", None), ("finish", "succeeded")],
         "failed": [("start", None), ("finish", "failed")], "skipped": [("skip", None)]}
# Every (operation, destination) asked of every state; the legal ones, written out.
OPERATIONS = [("start", "running"), ("skip", "skipped"), ("retry", "pending"),
              *[("finish", s) for s in runstate.STATES],
              *[("reconcile", s) for s in runstate.STATES]]
LEGAL = {("pending", "start", "running"), ("pending", "skip", "skipped"),
         ("running", "finish", "succeeded"), ("running", "finish", "failed"),
         ("running", "reconcile", "pending"), ("running", "reconcile", "succeeded"),
         ("running", "reconcile", "failed"), ("failed", "retry", "pending"),
         ("skipped", "retry", "pending")}


def apply(run: RunState, k: Key, op: str, to: str | None) -> None:
    if op in ("finish", "reconcile"):
        getattr(run, op)(k, to, error="e" if to == "failed" else None)
    elif op == "skip":
        run.skip(k, "window closed")
    else:
        getattr(run, op)(k)


@pytest.mark.parametrize("start", runstate.STATES)
def test_every_move_is_legal_or_refused_naming_the_row_and_both_states(plan: Path,
                                                                        start: str) -> None:
    for op, to in OPERATIONS:
        plan.with_name("plan.csv.state.db").unlink(missing_ok=True)
        with run_state(plan) as run:
            for step in REACH[start]:
                apply(run, key("web01"), *step)
            before = run.rows(), run.attempts(key("web01"))
            if (start, op, to) in LEGAL:
                apply(run, key("web01"), op, to)
                assert states(run)["web01"] == to, (start, op, to)
                continue
            with pytest.raises(IllegalTransition) as exc:
                apply(run, key("web01"), op, to)
            assert f"wave 1 vm 'web01' from {A}: {op}: {start} -> {to} is not a legal " \
                   "transition" in exc.value.message
            assert exc.value.exit_code == 1
            assert (run.rows(), run.attempts(key("web01"))) == before  # nothing moved


def test_each_attempt_is_recorded_with_its_step_outcome_and_metrics(plan: Path) -> None:
    with run_state(plan) as run:
        k = key("web01")
        assert run.start(k) == 1
        run.step(k, "copy")
        run.finish(k, "failed", error="connection reset")
        run.retry(k)
        assert run.start(k) == 2
        run.finish(k, "succeeded", metrics={"seconds": 12.5, "bytes": 4096, "downtime_ms": 80})
        tries = run.attempts(k)
        row = next(r for r in run.rows() if r["vm"] == "web01")
    assert [(a["attempt"], a["outcome"], a["step"], a["error"]) for a in tries] == [
        (1, "failed", "copy", "connection reset"), (2, "succeeded", None, None)]
    assert all(a["started"] <= a["ended"] for a in tries)
    assert tries[0]["ended"] <= tries[1]["started"]
    assert (row["attempts"], row["error"], row["started"]) == (2, None, tries[1]["started"])
    assert row["metrics"] == {"seconds": 12.5, "bytes": 4096, "downtime_ms": 80}
    assert row["log"] == str(plan.parent / "plan.csv.state.db.logs" / "00001-web01.log")
    assert (plan.parent / "plan.csv.state.db.logs").is_dir()


def test_every_move_is_one_transaction_and_a_refused_one_is_rolled_back(plan: Path) -> None:
    with run_state(plan) as run:
        traced: list[str] = []
        run.db.set_trace_callback(traced.append)
        steps = [("start", None), ("finish", "failed"), ("retry", None), ("start", None),
                 ("reconcile", "succeeded")]
        for op, to in steps:
            traced.clear()
            apply(run, key("web01"), op, to)
            bounds = [s for s in traced if s in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")]
            assert bounds == ["BEGIN IMMEDIATE", "COMMIT"], (op, traced)
            assert traced[0] == "BEGIN IMMEDIATE" and traced[-1] == "COMMIT"
            assert sum(s.startswith(("UPDATE", "INSERT")) for s in traced) >= 1
        traced.clear()
        with pytest.raises(IllegalTransition):
            run.start(key("web01"))
        assert traced[0] == "BEGIN IMMEDIATE" and traced[-1] == "ROLLBACK"


def test_step_and_moves_of_a_row_not_in_the_state_are_refused(plan: Path) -> None:
    with run_state(plan) as run:
        with pytest.raises(IllegalTransition, match="step: the row is pending, not running"):
            run.step(key("web01"), "copy")
        with pytest.raises(IllegalTransition, match="'nope' .*: start: no such row"):
            run.start(key("nope"))


def test_the_file_is_wal_synchronous_full_with_foreign_keys(plan: Path) -> None:
    with run_state(plan) as run:
        pragmas = [run.db.execute(f"PRAGMA {p}").fetchone()[0]
                   for p in ("journal_mode", "synchronous", "foreign_keys", "user_version")]
        assert pragmas == ["wal", 2, 1, runstate.SCHEMA_VERSION]
        with pytest.raises(sqlite3.IntegrityError):  # an attempt of no row
            run.db.execute("INSERT INTO attempts (row_id, attempt, started) VALUES (99, 1, 'x')")


# --- crashes: a killed transaction, a row left running -----------------------------

CHILD = """
import sys, time
from pathlib import Path
from vmshift.plan.state import RunState, Key, default_state_path
from vmshift.plan.validate import load_plan
plan = load_plan(Path(sys.argv[1]))
run = RunState.create_or_resume(default_state_path(plan.path), plan)
def stop_at(sql):
    if sql == sys.argv[2]:
        print("ready", flush=True)
        time.sleep(600)
if sys.argv[2] == "COMMIT":  # killed with the move written but not committed
    run.db.set_trace_callback(stop_at)
run.start(Key("1", "web01", sys.argv[3]))
stop_at(sys.argv[2])  # "after": killed once the move is committed
"""


def killed_child(plan: Path, at: str) -> None:
    """A runner SIGKILLed at AT: inside start()'s transaction just before COMMIT,
    or just after start() returned."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(plan), at, A], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        if at == "COMMIT":  # a reader sees the state before the move meanwhile
            with RunState.open_existing(runstate.default_state_path(plan)) as reader:
                assert states(reader)["web01"] == "pending"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def test_a_transaction_killed_before_commit_leaves_the_state_as_before(plan: Path) -> None:
    killed_child(plan, "COMMIT")
    with run_state(plan) as run:  # the lock went with the process
        assert states(run) == dict.fromkeys(ROWS, "pending")
        assert run.attempts(key("web01")) == [] and run.running() == []
        assert run.rows()[0]["attempts"] == 0


def test_a_row_left_running_by_a_killed_runner_is_reconciled(plan: Path) -> None:
    killed_child(plan, "after")
    with run_state(plan) as run:
        assert run.running() == [key("web01")]
        (attempt,) = run.attempts(key("web01"))
        assert attempt["ended"] is None
        run.reconcile(key("web01"), "pending", error="not on the target; source intact")
        assert run.running() == [] and states(run)["web01"] == "pending"
        assert run.start(key("web01")) == 2
        first, second = run.attempts(key("web01"))
        assert first["outcome"] == "reconciled: pending" and first["ended"] is not None
        assert second["ended"] is None
        run.reconcile(key("web01"), "succeeded")  # found running on the target
        assert states(run)["web01"] == "succeeded"
        assert run.attempts(key("web01"))[1]["outcome"] == "reconciled: succeeded"


# --- the runner lock -------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from vmshift.plan.state import RunState, default_state_path
from vmshift.plan.validate import load_plan
plan = load_plan(Path(sys.argv[1]))
run = RunState.create_or_resume(default_state_path(plan.path), plan)
print("ready", flush=True)
time.sleep(600)
"""


def test_a_second_runner_is_refused_naming_the_first_ones_pid_and_host(plan: Path) -> None:
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(plan)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    state = runstate.default_state_path(plan)
    try:
        assert first.stdout is not None and first.stdout.readline() == "ready\n"
        with pytest.raises(Refused) as exc:
            run_state(plan)
        assert exc.value.exit_code == 3
        prefix = f"{state} is being run by pid {first.pid} on host {socket.gethostname()} since "
        assert exc.value.message.startswith(prefix), exc.value.message
        res = vmshift("plan", "status", str(plan), "--json")
        assert res.rc == 0, res.err
        runner = res.doc()["runner"]
        assert (runner["pid"], runner["alive"]) == (first.pid, True)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    with run_state(plan) as run:  # the kernel dropped the dead runner's lock
        assert run.runner()["pid"] == os.getpid()
    with RunState.open_existing(state) as reader:
        assert reader.runner() is None  # a runner that closes removes its record


# --- a plan that changed -----------------------------------------------------------

def test_added_rows_become_pending_and_the_others_keep_their_state(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, [ROWS["web01"], ROWS["db01"]])
    with run_state(plan) as run:
        run.start(key("web01"))
        run.finish(key("web01"), "succeeded")
    write_plan(tmp_path, [ROWS["web02"], ROWS["web01"], ROWS["db01"]])  # one added, above
    with run_state(plan) as run:
        rows = {r["vm"]: (r["line"], r["state"], r["attempts"]) for r in run.rows()}
        assert [r["vm"] for r in run.rows()] == ["web02", "web01", "db01"]  # plan order
    assert rows == {"web02": (2, "pending", 0), "web01": (3, "succeeded", 1),
                    "db01": (4, "pending", 0)}


@pytest.mark.parametrize("edit,accepted", [
    ((ROWS["web01"].replace(",,\n", ",,moved first\n"), ROWS["web02"], ROWS["db01"]), True),
    ((ROWS["web01"], ROWS["web02"].replace(",,\n", ",200,\n"), ROWS["db01"]), True),
    ((ROWS["web01"].replace(",,\n", ",200,\n"), ROWS["web02"], ROWS["db01"]), False),
    ((ROWS["web01"], ROWS["db01"]), False),
])
def test_a_plan_whose_started_rows_changed_or_went_is_refused(
        tmp_path: Path, edit: tuple[str, ...], accepted: bool) -> None:
    plan = write_plan(tmp_path, list(ROWS.values()))
    with run_state(plan) as run:
        run.start(key("web01"))
        run.finish(key("web01"), "failed", error="x")
    recorded = runstate.plan_sha256(plan)
    write_plan(tmp_path, list(edit))  # notes, or a row never started: free to change
    state = runstate.default_state_path(plan)
    if accepted:
        with run_state(plan) as run:
            assert states(run)["web01"] == "failed"
            assert run.plan_info()["sha256"] == runstate.plan_sha256(plan)
        return
    with pytest.raises(BadInput) as exc:
        run_state(plan)
    message = exc.value.message
    assert message.startswith(f"{state}: made for {plan} (sha256 {recorded[:12]}), which "
                              f"{plan} (sha256 {runstate.plan_sha256(plan)[:12]}) does not "
                              "continue: "), message
    assert ("line 2: wave 1 vm 'web01'" in message and "changed after it was started (failed)"
            in message) or "vm 'web02' from qemu+ssh://kvm-a/system (pending) is no longer " \
        "in the plan" in message
    with RunState.open_existing(state) as reader:  # untouched, and no runner left
        assert reader.plan_info()["sha256"] == recorded and reader.runner() is None


@pytest.mark.parametrize("content,message", [
    (b"not sqlite at all, but long enough to be read as a header" * 4,
     "not a plan state file (file is not a database)"),
    ("PRAGMA user_version = 7", "plan state schema 7; this vmshift reads 1"),
    ("CREATE TABLE notes (x)", "not a plan state file"),  # another program's database
])
def test_a_file_that_is_no_state_of_this_version_is_refused(
        plan: Path, content: bytes | str, message: str) -> None:
    state = runstate.default_state_path(plan)
    if isinstance(content, str):
        with sqlite3.connect(state) as db:
            db.execute(content)
    else:
        state.write_bytes(content)
    with pytest.raises(BadInput, match=f"^{state}: {message}$".replace("(", r"\(")
                       .replace(")", r"\)")):
        run_state(plan)
    res = vmshift("plan", "status", str(plan))
    assert (res.rc, res.out, res.err) == (2, "", f"vmshift: error: {state}: {message}\n")


# --- a property: any sequence of moves -------------------------------------------

MOVES = st.lists(st.tuples(st.sampled_from(["web01", "web02", "db01"]),
                           st.sampled_from(OPERATIONS)), min_size=1, max_size=15)


@settings(max_examples=40, deadline=None)
@given(MOVES)
def test_random_moves_never_reach_an_illegal_state(moves: list[tuple[str, tuple[str, str]]]
                                                   ) -> None:
    assume(any(op == "start" for _, (op, _) in moves))  # else little can happen
    with tempfile.TemporaryDirectory() as tmp:
        plan = write_plan(Path(tmp), list(ROWS.values()))
        model = dict.fromkeys(ROWS, "pending")
        with run_state(plan) as run:
            for vm, (op, to) in moves:
                k = key(vm, "2" if vm == "db01" else "1")
                legal = (model[vm], op, to) in LEGAL
                try:
                    apply(run, k, op, to)
                except IllegalTransition:
                    assert not legal
                else:
                    assert legal
                    model[vm] = to
                check_invariants(run, model)


def check_invariants(run: RunState, model: dict[str, str]) -> None:
    rows = run.rows()
    assert states(run) == model
    counts = {s: sum(r["state"] == s for r in rows) for s in runstate.STATES}
    assert sum(counts.values()) == len(ROWS)
    for row in rows:
        tries = run.attempts(Key(row["wave"], row["vm"], row["source"]))
        assert len(tries) == row["attempts"]
        assert [a["ended"] is None for a in tries].count(True) == (row["state"] == "running")
        if row["state"] in ("succeeded", "failed"):  # ended by its last attempt
            assert tries[-1]["outcome"].endswith(row["state"]) and tries[-1]["ended"]


# --- plan status ----------------------------------------------------------------------

def test_status_shows_each_wave_counted_and_each_row(plan: Path) -> None:
    with run_state(plan) as run:
        run.start(key("web01"))
        run.finish(key("web01"), "failed", error="no route to host\nsecond line")
        run.start(key("db01", "2"))
        run.skip(key("web02"), "its window closed at 2025-03-02T04:00:00+01:00")
        (started,) = [a["started"] for a in run.attempts(key("web01"))]
    res = vmshift("plan", "status", str(plan))
    assert res.rc == 0 and res.err == "", res.err
    lines = res.out.splitlines()
    state = runstate.default_state_path(plan)
    assert lines[0].startswith(f"{state}: plan {plan} (sha256 "
                               f"{runstate.plan_sha256(plan)[:12]}), first run ")
    assert lines[1] == "runner: none"
    assert "wave 1: 2 rows: 1 failed, 1 skipped" in lines
    assert "wave 2: 1 row: 1 running" in lines
    assert lines[-1] == "total: 3 rows: 1 running, 1 failed, 1 skipped"
    web01 = next(ln for ln in lines if " web01 " in ln).split()
    assert web01[:5] == ["2", "web01", "failed", "1", started]
    assert web01[6:] == ["no", "route", "to", "host", f"{state}.logs/00001-web01.log"]
    assert "its window closed" in next(ln for ln in lines if " web02 " in ln)


def test_status_json_is_one_plan_status_document(plan: Path) -> None:
    with run_state(plan) as run:
        run.start(key("web01"))
        run.finish(key("web01"), "succeeded", metrics={"seconds": 3})
    plan.write_text(plan.read_text() + f"3,new,{A},live,{B},,\n")
    res = vmshift("plan", "status", "--state", str(runstate.default_state_path(plan)),
                  str(plan), "--json")
    assert res.rc == 0, res.err
    doc = res.doc()
    assert (doc["kind"], doc["outcome"], doc["rows"]) == ("plan_status", "ok", 3)
    assert doc["plan"]["matches"] is False  # the plan gained a row since
    assert doc["counts"] == {"pending": 2, "running": 0, "succeeded": 1, "failed": 0,
                             "skipped": 0}
    assert [w["wave"] for w in doc["waves"]] == ["1", "2"]
    web01 = doc["waves"][0]["rows"][0]
    assert {k: web01[k] for k in ("line", "vm", "state", "attempts", "metrics")} == {
        "line": 2, "vm": "web01", "state": "succeeded", "attempts": 1,
        "metrics": {"seconds": 3}}
    assert web01["started"] <= web01["ended"]


def test_status_without_a_state_file_names_it(plan: Path) -> None:
    res = vmshift("plan", "status", str(plan))
    state = runstate.default_state_path(plan)
    assert (res.rc, res.out) == (2, "")
    assert res.err == f"vmshift: error: {state}: no such plan state file (`plan run` writes it)\n"
    assert not state.exists()  # reading creates nothing
    res = vmshift("plan", "status", "--json")
    assert res.rc == 2 and json.loads(res.out)["error"]["message"] == \
        "give PLAN.csv or --state STATE.db"
