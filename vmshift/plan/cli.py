"""CLI for `vmshift plan`: CSV migration plans (docs/plan.md).

Commands: template, validate, show, import-rvtools, status and report here;
run in vmshift.plan.run_cli.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vmshift.cliutil import bandwidth_option, json_option
from vmshift.convert.maps import MapParam, NetworkMap, parse_network_map
from vmshift.errors import BadInput
from vmshift.output import emit_json, notice

if TYPE_CHECKING:
    from vmshift.plan.estimate import Size
    from vmshift.plan.schema import PlanRow
    from vmshift.plan.validate import Plan

T = TypeVar("T")


@click.group()
def plan() -> None:
    """Migration waves from CSV plans: template, validate, show, import-rvtools, run,
    status, report.

    One row per VM (docs/plan.md).
    """


def plan_input(offline_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """PLAN.csv, --offline and --allow-extra-columns: what every command reading
    a plan takes."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for deco in reversed([
            click.argument("plan_file", metavar="PLAN.csv", type=click.Path(path_type=Path)),
            click.option("--offline", is_flag=True, help=offline_help),
            click.option("--allow-extra-columns", is_flag=True,
                         help="Accept columns the format does not define (kept, not checked)."),
        ]):
            f = deco(f)
        return f
    return decorate


@plan.command()
@json_option
def template(json_mode: bool) -> None:
    """Print an example plan CSV (it validates with --offline)."""
    from vmshift.plan.schema import COLUMNS
    from vmshift.plan.template import template_csv

    if json_mode:
        emit_json("plan_template", {"columns": list(COLUMNS), "csv": template_csv()})
    else:
        click.echo(template_csv(), nl=False)


@plan.command()
@plan_input("Skip the live checks (hosts reachable, domains and pools present).")
@json_option
def validate(plan_file: Path, offline: bool, allow_extra_columns: bool, json_mode: bool
             ) -> None:
    """Check a plan and report every problem at once, one line each, as
    PLAN.csv:LINE: column: message. Exit 2 if there is any."""
    loaded, _ = valid_plan(plan_file, offline, allow_extra_columns)
    if json_mode:
        emit_json("plan_validate", {**loaded.summary(), "outcome": "ok"})
        return
    skipped = " (offline: hosts, domains and pools not checked)" if offline else ""
    click.echo(f"{plan_file}: {len(loaded.rows)} VMs in {len(loaded.waves)} waves, "
               f"no problems{skipped}")


def valid_plan(plan_file: Path, offline: bool, allow_extra_columns: bool,
               settled: Callable[[PlanRow], bool] = lambda row: False
               ) -> tuple[Plan, dict[str, Size]]:
    """The plan, checked as `plan validate` checks it (BadInput with every problem),
    and the sizes of its libvirt domains, by (source URI, domain), from the same
    live connections (none with OFFLINE). Rows SETTLED says a run already moved
    (or is moving) are not checked live: their domain has left its source."""
    from vmshift.plan.validate import load_plan

    loaded = load_plan(plan_file, allow_extra_columns=allow_extra_columns)
    loaded.live_checked = not offline
    sizes = {}
    if not offline:
        from vmshift.plan.live import gather, live_problems

        facts = gather(loaded, sizes=True)
        lines = {r.line for r in loaded.rows if settled(r)}
        live = [p for p in live_problems(loaded, facts) if p.line not in lines]
        loaded.problems = sorted(loaded.problems + live, key=lambda p: p.line)
        sizes = {(uri, vm): size for uri, host in facts.items()
                 for vm, size in host.sizes.items()}
    if loaded.problems:
        raise loaded.problems_error()
    return loaded, sizes


@plan.command()
@plan_input("Skip the live checks and ask no host for sizes (they are assumed).")
@click.option("--max-parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="At most N rows in flight at once.")
@click.option("--max-per-source", type=click.IntRange(min=1), default=1, show_default=True,
              help="At most N rows in flight per source host (vCenter/ESXi, libvirt host).")
@bandwidth_option("the estimate of each row without a bandwidth cell (default 100M)")
@click.option("--start", metavar="ISO8601",
              help="When the plan starts, with a UTC offset (default: now).")
@json_option
def show(plan_file: Path, offline: bool, allow_extra_columns: bool, max_parallel: int,
         max_per_source: int, bandwidth: int | None, start: str | None, json_mode: bool
         ) -> None:
    """Validate a plan, then print its waves and when each row would start and end:
    windows, dependencies, --max-parallel and --max-per-source respected, durations
    estimated from memory or disk sizes and bandwidth (docs/plan.md)."""
    from datetime import datetime

    from vmshift.plan import schedule
    from vmshift.plan.schema import parse_time

    begin = _checked(start, parse_time, "--start") if start else \
        datetime.now().astimezone().replace(microsecond=0)
    loaded, sizes = valid_plan(plan_file, offline, allow_extra_columns)
    result = schedule.plan_schedule(loaded.rows, begin,
                                    schedule.Limits(max_parallel, max_per_source),
                                    sizes, bandwidth)
    if json_mode:
        emit_json("plan_schedule", {"plan": str(plan_file), "live_checked": not offline,
                                    **schedule.document(result), "outcome": "ok"})
    else:
        click.echo("\n".join(schedule.text(result)))


def _checked(value: str, parse: Callable[[str], T], option: str) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise BadInput(f"{option}: {exc}") from None


@plan.command("import-rvtools")
@click.argument("workbook", metavar="RVTOOLS.xlsx", type=click.Path(path_type=Path))
@click.option("--target", required=True, metavar="URI",
              help="The libvirt host every VM goes to (qemu+ssh://HOST/system).")
@click.option("--pool", required=True, metavar="POOL", help="The storage pool for the disks.")
@click.option("--wave-size", type=click.IntRange(min=1), default=10, show_default=True,
              help="At most N VMs per wave.")
@click.option("--group-by", type=click.Choice(["cluster", "host", "folder"]),
              default="cluster", show_default=True,
              help="VMs of one cluster, host or folder share waves; waves never mix them.")
@click.option("--network-map", "network_map", metavar="MAP", type=MapParam(
    lambda v, o: (v, parse_network_map(v, o))), default=None,
              help="Written into every row; notes name the networks it leaves unmapped "
                   "(docs/maps.md).")
@click.option("--source-host", metavar="HOST",
              help="The vCenter/ESXi in vsphere://HOST/VM (default: vInfo's 'VI SDK Server').")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Write the plan to this file (default: stdout).")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@json_option
def import_rvtools(workbook: Path, target: str, pool: str, wave_size: int, group_by: str,
                   network_map: tuple[str, NetworkMap] | None, source_host: str | None,
                   output: Path | None, force: bool, json_mode: bool) -> None:
    """Write a plan from an RVTools export: one v2v row per VM, in waves; powered-off
    VMs, templates and what inspection rules would block are flagged in notes."""
    from vmshift.plan import csvio, rvtools, schema

    _checked(target, schema.parse_uri, "--target")
    _checked(pool, schema.parse_pool, "--pool")
    if json_mode and output is None:
        raise BadInput("--json: give --output (stdout carries the JSON document)")
    if output is not None and output.exists() and not force:
        raise BadInput(f"--output {output}: the file exists (--force replaces it)")
    text, netmap = network_map if network_map else (None, None)
    result = rvtools.build_plan(workbook, target=target, pool=pool, wave_size=wave_size,
                                group_by=group_by, network_map=text, netmap=netmap,
                                source_host=source_host)
    for line in result.skipped:
        notice(f"vmshift: {line}", json_mode)
    if output is None:
        click.echo(result.csv, nl=False)
        return
    csvio.write_atomically(output, result.csv, force=force)
    summary = {"output": str(output), "vms": result.vms, "waves": result.waves,
               "flagged": result.flagged, "skipped": result.skipped, "outcome": "ok"}
    if json_mode:
        emit_json("plan_import", summary)
    else:
        click.echo(f"{output}: {result.vms} VMs in {result.waves} waves, "
                   f"{result.flagged} flagged in notes")


def state_input(f: Callable[..., Any]) -> Callable[..., Any]:
    """[PLAN.csv] and --state STATE.db: what every command reading a run's state takes."""
    f = click.option("--state", "state_file", metavar="STATE.db",
                     type=click.Path(path_type=Path),
                     help="The run's state file (default: PLAN.csv.state.db beside the plan).")(f)
    return click.argument("plan_file", metavar="[PLAN.csv]", required=False,
                          type=click.Path(path_type=Path))(f)


def _state_file(plan_file: Path | None, state_file: Path | None) -> tuple[Path, str | None]:
    """The state file to read and the sha256 of PLAN.csv (None without it)."""
    from vmshift.plan import state as runstate

    if plan_file is None:
        if state_file is None:
            raise BadInput("give PLAN.csv or --state STATE.db")
        return state_file, None
    return (state_file or runstate.default_state_path(plan_file),
            runstate.plan_sha256(plan_file))


@plan.command()
@state_input
@json_option
def status(plan_file: Path | None, state_file: Path | None, json_mode: bool) -> None:
    """Where a plan's run stands: per wave the rows counted by state; per row its
    state, attempts, last start and end, last error and log (docs/plan.md)."""
    from vmshift.plan import state as runstate
    from vmshift.plan import status as view

    path, sha = _state_file(plan_file, state_file)
    with runstate.RunState.open_existing(path) as run:
        doc = view.document(run, sha)
    if json_mode:
        emit_json("plan_status", {**doc, "outcome": "ok"})
    else:
        click.echo("\n".join(view.text(doc)))


@plan.command()
@state_input
@click.option("--html", "html_file", metavar="OUT.html", type=click.Path(path_type=Path),
              help="Write one self-contained HTML page: summary, timeline, per-wave tables.")
@click.option("--csv", "csv_file", metavar="OUT.csv", type=click.Path(path_type=Path),
              help="Write one CSV line per row.")
@click.option("--force", is_flag=True, help="Replace --html / --csv files that exist.")
@json_option
def report(plan_file: Path | None, state_file: Path | None, html_file: Path | None,
           csv_file: Path | None, force: bool, json_mode: bool) -> None:
    """The report of a plan's run, from its state file (changed in nothing): rows per
    state and wave, time span, bytes moved, downtime of live rows (docs/plan.md)."""
    from vmshift.plan import csvio, gantt
    from vmshift.plan import report as rep
    from vmshift.plan import state as runstate

    path, sha = _state_file(plan_file, state_file)
    outputs = [(p, o) for p, o in ((html_file, "--html"), (csv_file, "--csv")) if p]
    if html_file and csv_file and html_file.resolve() == csv_file.resolve():
        raise BadInput(f"--html and --csv both name {html_file}")
    for out, option in outputs:  # every output checked before any is written
        csvio.refuse_existing(out, force=force, option=option)
    with runstate.RunState.open_existing(path) as run:
        doc = rep.document(run, sha, runstate.now())
    texts = {"--html": gantt.html_page, "--csv": rep.csv_text}
    for out, option in outputs:
        csvio.write_atomically(out, texts[option](doc), force=force, option=option)
    if json_mode:
        emit_json("plan_report", {**doc, "html": html_file, "csv": csv_file, "outcome": "ok"})
        return
    click.echo("\n".join(rep.text(doc)))
    for out, _ in outputs:
        click.echo(f"wrote {out}")


def _register_run() -> None:
    from vmshift.plan.run_cli import run

    plan.add_command(run)


_register_run()
