"""The run state of a plan: one SQLite file, what `plan run` resumes from and
`plan status` reads (docs/plan.md, "State and resume").

It holds the plan it was made for (path, sha256 of its bytes, when first run),
one row per plan row keyed by (wave, vm, source), each with its state, its
attempts (started, ended, outcome, the step reached) and its log file, and the
runner that holds it. Rows move only along LEGAL, each move one
transaction (BEGIN IMMEDIATE ... COMMIT) with synchronous=FULL: a crash leaves
the state before or after a move, never between. A row found ``running`` when a
runner starts was being moved when the last one died; only ``reconcile`` takes
it out of ``running``, once reality has been checked.

Where a row executes is not known here (vmshift.plan.executor): the runner
asks this module what to run and tells it what happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vmshift import locks
from vmshift.errors import BadInput, OperationFailed, Refused
from vmshift.plan.schema import PlanRow
from vmshift.plan.validate import Plan

SCHEMA_VERSION = 1
STATES = ("pending", "running", "succeeded", "failed", "skipped")
# (from, to, operation): every move a row can make. A row leaves running through
# finish (the runner saw it end) or reconcile (it was running when a runner died,
# and reality has been checked since).
LEGAL = frozenset({("pending", "running", "start"), ("running", "succeeded", "finish"),
                   ("running", "failed", "finish"), ("pending", "skipped", "skip"),
                   ("failed", "pending", "retry"), ("skipped", "pending", "retry"),
                   ("running", "pending", "reconcile"),
                   ("running", "succeeded", "reconcile"), ("running", "failed", "reconcile")})

_SCHEMA = """
CREATE TABLE plan (id INTEGER PRIMARY KEY CHECK (id = 1), path TEXT NOT NULL,
  sha256 TEXT NOT NULL, first_run TEXT NOT NULL);
CREATE TABLE rows (id INTEGER PRIMARY KEY, wave TEXT NOT NULL, vm TEXT NOT NULL,
  source TEXT NOT NULL, line INTEGER NOT NULL, position INTEGER NOT NULL,
  fingerprint TEXT NOT NULL, log TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
    ('pending', 'running', 'succeeded', 'failed', 'skipped')),
  attempts INTEGER NOT NULL DEFAULT 0, error TEXT, metrics TEXT,
  UNIQUE (wave, vm, source));
CREATE TABLE attempts (row_id INTEGER NOT NULL REFERENCES rows (id), attempt INTEGER NOT NULL,
  started TEXT NOT NULL, ended TEXT, outcome TEXT, step TEXT, error TEXT, metrics TEXT,
  handle TEXT, PRIMARY KEY (row_id, attempt));
CREATE TABLE runner (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL,
  host TEXT NOT NULL, started TEXT NOT NULL);
"""


# network_map is compared as written (network_map_text)
_NOT_ASKED = {"line", "wave", "vm", "source", "notes", "network_map"}


class IllegalTransition(OperationFailed):
    """A move the state machine does not allow (a defect of the runner: exit 1)."""


@dataclass(frozen=True)
class Key:
    wave: str
    vm: str
    source: str

    def __str__(self) -> str:
        return f"wave {self.wave} vm {self.vm!r} from {self.source}"


def key_of(row: PlanRow) -> Key:
    assert row.wave is not None and row.vm is not None and row.source is not None
    return Key(row.wave, row.vm, row.source.text)


def default_state_path(plan_file: Path) -> Path:
    """PLAN.csv -> PLAN.csv.state.db, beside the plan."""
    return plan_file.with_name(plan_file.name + ".state.db")


def logs_dir(state_path: Path) -> Path:
    """The per-VM logs: STATE.logs/ beside the state file."""
    return state_path.with_name(state_path.name + ".logs")


def plan_sha256(plan_file: Path) -> str:
    try:
        return hashlib.sha256(plan_file.read_bytes()).hexdigest()
    except OSError as exc:
        raise BadInput(f"{plan_file}: cannot read the plan CSV file: {exc.strerror}") from None


def fingerprint(row: PlanRow) -> str:
    """What a row asks for: every cell but its key, its line and notes (free text,
    never acted on). A started row may not change it (docs/plan.md)."""
    cells = {f.name: getattr(row, f.name) for f in fields(row) if f.name not in _NOT_ASKED}
    return hashlib.sha256(json.dumps(cells, sort_keys=True, default=str).encode()).hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunState:
    """An open state file. ``create_or_resume`` (a runner, holding the lock) or
    ``open_existing`` (a reader: `plan status`)."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path, self.db = path, db
        self._lock: contextlib.ExitStack | None = None

    # --- opening ----------------------------------------------------------------

    @classmethod
    def open_existing(cls, path: Path) -> RunState:
        """A state file that must exist (BadInput naming it otherwise)."""
        if not path.is_file():
            raise BadInput(f"{path}: no such plan state file (`plan run` writes it)")
        return cls(path, _connect(path, create=False))

    @classmethod
    def create_or_resume(cls, path: Path, plan: Plan) -> RunState:
        """Take the runner lock (Refused, exit 3, naming the holder), then open
        or create the state for PLAN (a valid plan) and record this runner."""
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(locks.exclusive(path.with_name(path.name + ".lock"),
                                                wait=False))
        except locks.Held:
            raise Refused(_held_message(path)) from None
        except OSError as exc:
            raise OperationFailed(f"{path}: cannot lock the plan state: {exc.strerror}") \
                from None
        try:
            state = cls(path, _connect(path, create=True))
            stack.callback(state.db.close)  # before the lock is dropped
            state._lock = stack
            state._adopt(plan)
            with state._tx() as db:
                db.execute("INSERT OR REPLACE INTO runner VALUES (1, ?, ?, ?)",
                           (os.getpid(), socket.gethostname(), now()))
        except BaseException:
            stack.close()
            raise
        logs_dir(path).mkdir(exist_ok=True)
        return state

    def close(self) -> None:
        """Close; a runner also removes its runner record and drops the lock."""
        if self._lock is None:
            self.db.close()
            return
        with self._tx() as db:
            db.execute("DELETE FROM runner")
        self._lock.close()
        self._lock = None

    def __enter__(self) -> RunState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction, all or nothing; BEGIN IMMEDIATE takes the write lock
        first, so what is read inside cannot change before the write."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _adopt(self, plan: Plan) -> None:
        """Record PLAN in a new state, or check it against the recorded one: rows
        may be added (pending), moved and, while never started, changed; a row
        started may not change, and no row may go (docs/plan.md)."""
        sha = plan_sha256(plan.path)
        with self._tx() as db:
            known = db.execute("SELECT path, sha256 FROM plan").fetchone()
            if known is not None and tuple(known) == (str(plan.path), sha):
                return
            if known is None:
                db.execute("INSERT INTO plan VALUES (1, ?, ?, ?)",
                           (str(plan.path), sha, now()))
            stored = {Key(w, v, s): (i, state, attempts, fp) for i, w, v, s, state, attempts, fp
                      in db.execute("SELECT id, wave, vm, source, state, attempts, "
                                    "fingerprint FROM rows")}
            wanted = {key_of(r): r for r in plan.rows}
            why = _refusals(stored, wanted)
            if why:
                raise BadInput(f"{self.path}: made for {known[0]} (sha256 {known[1][:12]}), "
                               f"which {plan.path} (sha256 {sha[:12]}) does not continue: "
                               f"{'; '.join(why[:5])}{' ...' if len(why) > 5 else ''} "
                               "(only rows not yet started may change; start a new state "
                               "with --state)")
            self._write_rows(db, stored, plan.rows)
            db.execute("UPDATE plan SET path = ?, sha256 = ?", (str(plan.path), sha))

    def _write_rows(self, db: sqlite3.Connection, stored: dict[Key, tuple[Any, ...]],
                    rows: list[PlanRow]) -> None:
        for position, row in enumerate(rows):
            key, fp = key_of(row), fingerprint(row)
            if key in stored:
                db.execute("UPDATE rows SET line = ?, position = ?, fingerprint = ? "
                           "WHERE id = ?", (row.line, position, fp, stored[key][0]))
                continue
            cur = db.execute("INSERT INTO rows (wave, vm, source, line, position, "
                             "fingerprint, log) VALUES (?, ?, ?, ?, ?, ?, '')",
                             (key.wave, key.vm, key.source, row.line, position, fp))
            db.execute("UPDATE rows SET log = ? WHERE id = ?",
                       (_log_name(self.path, cur.lastrowid or 0, key), cur.lastrowid))

    # --- the state machine ------------------------------------------------------

    def start(self, key: Key) -> int:
        """pending -> running: a new attempt begins; its number."""
        with self._tx() as db:
            row_id, attempts = self._move(db, key, "running", "start")
            db.execute("UPDATE rows SET attempts = ? WHERE id = ?", (attempts + 1, row_id))
            db.execute("INSERT INTO attempts (row_id, attempt, started) VALUES (?, ?, ?)",
                       (row_id, attempts + 1, now()))
        return attempts + 1

    def step(self, key: Key, name: str) -> None:
        """Record the step a running row has reached (what reconcile looks at)."""
        with self._tx() as db:
            row_id, attempts = self._row(db, key, ("running",), "step")[:2]
            db.execute("UPDATE attempts SET step = ? WHERE row_id = ? AND attempt = ?",
                       (name, row_id, attempts))

    def set_handle(self, key: Key, handle: str) -> None:
        """Record where the running attempt executes (the executor's handle), so
        that a runner started after a crash can find the execution again."""
        with self._tx() as db:
            row_id, attempts = self._row(db, key, ("running",), "set_handle")[:2]
            db.execute("UPDATE attempts SET handle = ? WHERE row_id = ? AND attempt = ?",
                       (handle, row_id, attempts))

    def handle(self, key: Key) -> str | None:
        """The handle of a row's latest attempt (None if it has none)."""
        found = self.db.execute(
            "SELECT a.handle FROM attempts a JOIN rows r ON r.id = a.row_id AND "
            "a.attempt = r.attempts WHERE r.wave = ? AND r.vm = ? AND r.source = ?",
            (key.wave, key.vm, key.source)).fetchone()
        return None if found is None else found[0]

    def finish(self, key: Key, outcome: str, *, error: str | None = None,
               metrics: dict[str, Any] | None = None) -> None:
        """running -> succeeded | failed, with the attempt's error and metrics."""
        self._end(key, outcome, "finish", error, metrics)

    def reconcile(self, key: Key, outcome: str, *, error: str | None = None,
                  metrics: dict[str, Any] | None = None) -> None:
        """A row found running after a crash, once checked against reality:
        succeeded, failed, or pending (to be run again)."""
        self._end(key, outcome, "reconcile", error, metrics)

    def skip(self, key: Key, reason: str) -> None:
        """pending -> skipped (its window closed, a wave it depends on failed, its
        target is in maintenance)."""
        with self._tx() as db:
            row_id, _ = self._move(db, key, "skipped", "skip")
            db.execute("UPDATE rows SET error = ? WHERE id = ?", (reason, row_id))

    def retry(self, key: Key) -> None:
        """failed or skipped -> pending: it will be started again (a new attempt;
        a skipped row gets its first)."""
        with self._tx() as db:
            self._move(db, key, "pending", "retry")

    def _end(self, key: Key, outcome: str, op: str, error: str | None,
             metrics: dict[str, Any] | None) -> None:
        data = json.dumps(metrics, sort_keys=True) if metrics is not None else None
        with self._tx() as db:
            row_id, attempts = self._move(db, key, outcome, op)
            db.execute("UPDATE attempts SET ended = ?, outcome = ?, error = ?, metrics = ? "
                       "WHERE row_id = ? AND attempt = ?",
                       (now(), outcome if op == "finish" else f"reconciled: {outcome}",
                        error, data, row_id, attempts))
            db.execute("UPDATE rows SET error = ?, metrics = ? WHERE id = ?",
                       (error, data, row_id))

    def _move(self, db: sqlite3.Connection, key: Key, to: str, op: str) -> tuple[int, int]:
        row_id, attempts, state = self._row(db, key, None, op)
        if (state, to, op) not in LEGAL:
            raise IllegalTransition(f"{self.path}: {key}: {op}: {state} -> {to} is not a "
                                    "legal transition")
        db.execute("UPDATE rows SET state = ? WHERE id = ?", (to, row_id))
        return row_id, attempts

    def _row(self, db: sqlite3.Connection, key: Key, states: tuple[str, ...] | None,
             op: str) -> tuple[int, int, str]:
        found = db.execute("SELECT id, attempts, state FROM rows WHERE wave = ? AND vm = ? "
                           "AND source = ?", (key.wave, key.vm, key.source)).fetchone()
        if found is None:
            raise IllegalTransition(f"{self.path}: {key}: {op}: no such row in the state")
        if states is not None and found[2] not in states:
            raise IllegalTransition(f"{self.path}: {key}: {op}: the row is {found[2]}, "
                                    f"not {' or '.join(states)}")
        return found

    # --- reading ----------------------------------------------------------------

    def running(self) -> list[Key]:
        """Rows left running by a runner that died: reconcile each first."""
        return [Key(*r) for r in self.db.execute(
            "SELECT wave, vm, source FROM rows WHERE state = 'running' ORDER BY position")]

    def plan_info(self) -> dict[str, Any]:
        found = self.db.execute("SELECT path, sha256, first_run FROM plan").fetchone()
        if found is None:  # its first runner stopped between creating and filling it
            raise BadInput(f"{self.path}: no plan recorded yet (`plan run` records it)")
        return dict(found)

    def runner(self) -> dict[str, Any] | None:
        found = self.db.execute("SELECT pid, host, started AS since FROM runner").fetchone()
        return None if found is None else dict(found)

    def rows(self) -> list[dict[str, Any]]:
        """Every row in plan order, with its last attempt's start, end and step."""
        out = [dict(r) for r in self.db.execute(
            "SELECT r.wave, r.vm, r.source, r.line, r.state, r.attempts, a.started, a.ended, "
            "a.step, r.error, r.log, r.metrics FROM rows r LEFT JOIN attempts a ON "
            "a.row_id = r.id AND a.attempt = r.attempts ORDER BY r.position")]
        for row in out:
            row["log"] = str(self.path.parent / row["log"])
            row["metrics"] = json.loads(row["metrics"]) if row["metrics"] else None
        return out

    def attempts(self, key: Key) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(
            "SELECT a.attempt, a.started, a.ended, a.outcome, a.step, a.error FROM attempts a "
            "JOIN rows r ON r.id = a.row_id WHERE r.wave = ? AND r.vm = ? AND r.source = ? "
            "ORDER BY a.attempt", (key.wave, key.vm, key.source))]

    def all_attempts(self) -> list[dict[str, Any]]:
        """Every attempt of every row (its wave, vm and source with it), in plan
        order then attempt order, metrics parsed: what `plan report` draws."""
        out = [dict(r) for r in self.db.execute(
            "SELECT r.wave, r.vm, r.source, a.attempt, a.started, a.ended, a.outcome, a.step, "
            "a.error, a.metrics FROM attempts a JOIN rows r ON r.id = a.row_id "
            "ORDER BY r.position, a.attempt")]
        for attempt in out:
            attempt["metrics"] = json.loads(attempt["metrics"]) if attempt["metrics"] else None
        return out


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """The state database, checked to be one (BadInput naming it otherwise);
    CREATE: made with the current schema if empty."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        empty = not db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version == 0 and create and empty:  # never another program's database
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} "
                             f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            return db
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"{path}: not a plan state file ({exc})") from None
    if version != SCHEMA_VERSION:
        db.close()
        what = "not a plan state file" if version == 0 else \
            f"plan state schema {version}; this vmshift reads {SCHEMA_VERSION}"
        raise BadInput(f"{path}: {what}")
    return db


def _refusals(stored: dict[Key, tuple[Any, ...]], wanted: dict[Key, PlanRow]) -> list[str]:
    """Why the plan WANTED does not continue the state STORED (empty: it does)."""
    out = []
    for key, (_, state, attempts, fp) in stored.items():
        row = wanted.get(key)
        if row is None:
            out.append(f"{key} ({state}) is no longer in the plan")
        elif (state != "pending" or attempts) and fingerprint(row) != fp:
            out.append(f"line {row.line}: {key} changed after it was started ({state})")
    return out


def _held_message(path: Path) -> str:
    """'PLAN.db is being run by pid N on host H since T', from the runner record
    the holder wrote (it may not have written it yet)."""
    try:
        with contextlib.closing(_connect(path, create=False)) as db:
            found = db.execute("SELECT pid, host, started FROM runner").fetchone()
    except (BadInput, sqlite3.Error):
        found = None
    if found is None:
        return f"{path} is being run by another process (it has not recorded itself yet)"
    return f"{path} is being run by pid {found[0]} on host {found[1]} since {found[2]}"


def _log_name(state_path: Path, row_id: int, key: Key) -> str:
    """The row's log, relative to the state file's directory: STATE.logs/ID-VM.log
    (the id keeps two rows of one VM name apart; the name is for people)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key.vm).lstrip(".") or "vm"
    return f"{logs_dir(state_path).name}/{row_id:05d}-{safe[:60]}.log"
