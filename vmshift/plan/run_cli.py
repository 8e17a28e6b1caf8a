"""CLI for `vmshift plan run` (docs/plan.md, "plan run")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vmshift.cliutil import dry_run_option, json_option, on_interrupt_option
from vmshift.errors import OperationFailed, Refused
from vmshift.output import Progress, emit_json, table

# the states a run ends well in: done, or skipped because the user asked
FINE = ("succeeded",)


@click.command("run")
@click.argument("plan_file", metavar="PLAN.csv", type=click.Path(path_type=Path))
@click.option("--state", "state_file", metavar="STATE.db", type=click.Path(path_type=Path),
              help="The run's state file (default: PLAN.csv.state.db beside the plan); an "
                   "existing one is resumed.")
@click.option("--wave", help="Run only this wave (the waves it depends on must have "
                             "succeeded).")
@click.option("--max-parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="At most N rows in flight at once.")
@click.option("--max-per-source", type=click.IntRange(min=1), default=1, show_default=True,
              help="At most N rows in flight per source host (vCenter/ESXi, libvirt host).")
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run a failed row again up to N times.")
@click.option("--retry-delay", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Before retry n: SECONDS x 2^(n-1).")
@click.option("--outside-window", type=click.Choice(["wait", "skip"]), default="wait",
              show_default=True, help="A row whose window is not open yet: wait for it, or "
                                      "skip the row.")
@on_interrupt_option("rows")
@click.option("--vsphere-profiles", type=click.Path(path_type=Path), metavar="FILE",
              help="Credentials of vsphere:// sources (default: $VMSHIFT_VSPHERE_PROFILES, "
                   "else ~/.config/vmshift/vsphere.ini).")
@click.option("--allow-extra-columns", is_flag=True,
              help="Accept columns the format does not define (kept, not checked).")
@click.option("--offline", is_flag=True,
              help="With --dry-run: skip the live checks (a real run always makes them).")
@json_option
@dry_run_option
def run(plan_file: Path, state_file: Path | None, wave: str | None, json_mode: bool,
        dry_run: bool, **kw: Any) -> None:
    """Run a plan's waves (validated first, live): each row through the convert or
    migrate command an admin would type, every step recorded in the state file.
    Run again on the same state to resume: succeeded rows are never redone, rows a
    dead runner left running are reconciled first (docs/plan.md)."""
    from vmshift.plan import cli as plan_cli
    from vmshift.plan import commands, profiles
    from vmshift.plan import state as runstate

    if kw["offline"] and not dry_run:
        raise click.BadParameter("only with --dry-run (a real run checks the hosts)",
                                 param_hint="--offline")
    path = state_file or runstate.default_state_path(plan_file)
    loaded, _ = plan_cli.valid_plan(plan_file, kw["offline"], kw["allow_extra_columns"],
                                    settled=_settled(path))
    if wave is not None and wave not in loaded.waves:
        raise click.BadParameter(f"no wave {wave!r} in {plan_file} (waves: "
                                 f"{', '.join(loaded.waves)})", param_hint="--wave")
    hosts = {r.source.host or "" for r in loaded.rows
             if r.source is not None and r.source.kind == "vsphere"}
    found = profiles.load(kw["vsphere_profiles"], hosts)
    base = plan_file.resolve().parent
    argv = {id(r): commands.argv(r, base, found) for r in loaded.rows}
    if dry_run:
        _dry_run(loaded, wave, argv, json_mode)
        return
    with runstate.RunState.create_or_resume(path, loaded) as state:
        if wave is not None:
            _refuse_unmet(state, loaded, wave)
        summary = _execute(loaded, state, wave, argv, json_mode, kw)
        doc = _document(state, loaded, wave, summary)
    _finish(doc, json_mode)


def _settled(path: Path) -> Any:
    """Which rows an existing state has moved or is moving (succeeded, running):
    the live checks skip them, since their domain has left its source."""
    from vmshift.plan import state as runstate

    if not path.is_file():
        return lambda row: False
    with runstate.RunState.open_existing(path) as old:
        done = {runstate.Key(r["wave"], r["vm"], r["source"]) for r in old.rows()
                if r["state"] in ("succeeded", "running")}
    return lambda row: runstate.key_of(row) in done


def _execute(loaded: Any, state: Any, wave: str | None, argv: dict[int, list[str]],
             json_mode: bool, kw: dict[str, Any]) -> Any:
    from vmshift.plan.local import LocalExecutor
    from vmshift.plan.runner import Options, Runner

    opts = Options(kw["max_parallel"], kw["max_per_source"], kw["retries"], kw["retry_delay"],
                   kw["outside_window"], kw["on_interrupt"], wave)
    scope = [r for r in loaded.rows if wave in (None, r.wave)]
    with Progress("plan run", len(scope), json_mode=json_mode, unit="VM") as bar:
        ended = {"n": 0}

        def progress(event: dict[str, Any]) -> None:
            name = event.pop("event")
            if name != "row_started" and not event.get("retry"):  # the row is done with
                ended["n"] += 1
                bar.update_to(ended["n"])
            bar.say(name, _line(name, event), **event)

        runner = Runner(loaded, state, LocalExecutor(), opts, lambda r: argv[id(r)],
                        maintenance=Maintenance(), progress=progress)
        return runner.run()


def _line(name: str, e: dict[str, Any]) -> str:
    what = f"wave {e['wave']} {e['vm']}"
    if name == "row_started":
        return f"{what}: started ({e['type']}, attempt {e['attempt']})"
    if name == "row_skipped":
        return f"{what}: skipped: {e['why']}"
    again = " (will be retried)" if e.get("retry") else ""
    return f"{what}: {e['state']}{again}" + (f": {e['error']}" if e.get("error") else "")


class Maintenance:
    """Is a target in maintenance now? Its host UUID is asked once per URI; the
    maintenance state is read at each start (an evacuation may mark it meanwhile)."""

    def __init__(self) -> None:
        self._uuids: dict[str, str | None] = {}

    def __call__(self, uri: str) -> str | None:
        from vmshift.libvirtconn import connect
        from vmshift.migrate.evacuate import maintenance
        from vmshift.plan.live import maintenance_note

        if uri not in self._uuids:
            try:
                conn = connect(uri, readonly=True)
                try:
                    self._uuids[uri] = maintenance.host_uuid(conn)
                finally:
                    conn.close()
            except OperationFailed:
                self._uuids[uri] = None  # no host UUID (test driver), or unreachable now
        uuid = self._uuids[uri]
        return maintenance_note(uuid) if uuid else None


def _refuse_unmet(state: Any, loaded: Any, wave: str) -> None:
    """--wave W: every wave W depends on must have succeeded (exit 3 otherwise)."""
    needs = {d for r in loaded.rows if r.wave == wave for d in r.depends_on}
    states = {(r["wave"], r["vm"]): r["state"] for r in state.rows()}
    unmet = sorted({w for (w, _), s in states.items() if w in needs and s != "succeeded"})
    if unmet:
        raise Refused(f"--wave {wave}: it depends on wave {', '.join(unmet)}, which has not "
                      "fully succeeded; run that first")


def _document(state: Any, loaded: Any, wave: str | None, summary: Any) -> dict[str, Any]:
    from vmshift.plan import status

    doc = status.document(state, None)
    scope = [r for w in doc["waves"] if wave in (None, w["wave"]) for r in w["rows"]]
    bad = [r for r in scope if r["state"] not in FINE and not _asked_skip(r)]
    return {**doc, "wave": wave, "started": summary.started, "reconciled": summary.reconciled,
            "peak_parallel": summary.peak_parallel, "interrupted": summary.interrupted,
            "not_done": [{"wave": w, "vm": r["vm"], "state": r["state"], "error": r["error"]}
                         for w in doc["waves"] for r in w["rows"] if r in bad],
            "outcome": "failed" if bad or summary.interrupted else "ok"}


def _asked_skip(row: dict[str, Any]) -> bool:
    return row["state"] == "skipped" and "--outside-window skip" in (row["error"] or "")


def _finish(doc: dict[str, Any], json_mode: bool) -> None:
    from vmshift.plan import status

    if json_mode and doc["outcome"] == "ok":
        emit_json("plan_run", doc)
    elif not json_mode:
        click.echo("\n".join(status.text(doc)))
    if doc["outcome"] != "ok":
        why = "interrupted" if doc["interrupted"] else \
            f"{len(doc['not_done'])} row(s) not done"
        raise OperationFailed(f"plan run: {why}: " + "; ".join(
            f"wave {n['wave']} {n['vm']} {n['state']}" for n in doc["not_done"][:5]),
            detail=doc)


def _dry_run(loaded: Any, wave: str | None, argv: dict[int, list[str]], json_mode: bool
             ) -> None:
    rows = [r for r in loaded.rows if wave in (None, r.wave)]
    if json_mode:
        emit_json("plan_run", {"dry_run": True, "plan": str(loaded.path), "wave": wave,
                               "rows": [{"line": r.line, "wave": r.wave, "vm": r.vm,
                                         "type": r.type, "command": ["vmshift", *argv[id(r)]]}
                                        for r in rows], "outcome": "ok"})
        return
    click.echo("\n".join(table([[str(r.line), r.wave or "", r.vm or "", r.type or "",
                                 " ".join(["vmshift", *argv[id(r)]])] for r in rows],
                               ["line", "wave", "vm", "type", "command"])))
    click.echo("dry run: nothing started, no state written")
