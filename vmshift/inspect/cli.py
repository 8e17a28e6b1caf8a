"""CLI for `vmshift inspect`: what is inside the VM, and what would break."""

from __future__ import annotations

from typing import Any

import click

from vmshift.cliutil import json_option
from vmshift.errors import BadInput
from vmshift.inspect import report
from vmshift.inspect.rules import Finding, Outcome, RuleOptions, blockers, evaluate, load_rules
from vmshift.inspect.vsphere_source import vsphere_options
from vmshift.output import Progress, emit_json, notice


@click.command(name="inspect")
@click.argument("sources", metavar="[IMAGE...]", nargs=-1)
@click.option("--rules-only", is_flag=True, help="Print only the pre-flight findings.")
@click.option("--list-rules", is_flag=True, help="List the pre-flight rules and exit.")
@click.option("--driver-source", metavar="PATH", type=click.Path(exists=True),
              help="A virtio-win ISO or directory the conversion will install drivers from "
                   "(Windows without virtio drivers is then no blocker).")
@vsphere_options
@json_option
def inspect_cmd(sources: tuple[str, ...], rules_only: bool, list_rules: bool,
                driver_source: str | None, json_mode: bool, **vsphere_args: Any) -> None:
    """Look inside the disks of one VM (read-only) and run the pre-flight rules.

    IMAGE... are the disks of one VM, in any format qemu-img reads, or a single
    VM definition a reader knows (a .vmx file): its model then feeds the rules
    and its local disks are inspected. Disks are opened read-only in a single
    libguestfs appliance and never modified.

    --vsphere --url URL --user USER --vm NAME reads the VM from vCenter/ESXi
    instead (no IMAGE); with --download-dir DIR its disks are downloaded
    there and inspected, else only the rules that need no disk contents run.

    Exit codes: 0 no blocker, 2 bad input, 3 a blocker rule fired.
    """
    if list_rules:
        _list_rules(json_mode)
        return
    from vmshift.inspect.api import inspect_disks
    from vmshift.inspect.sources import resolve
    from vmshift.inspect.vsphere_source import vsphere_source

    source = vsphere_source(sources, vsphere_args, json_mode)
    if source is None:
        if not sources:
            raise BadInput("IMAGE: give at least one disk image, or --vsphere "
                           "(see `vmshift inspect --help`)")
        source = resolve(list(sources))
    inspection = None
    if source.disks:
        with Progress("inspect", None, json_mode=json_mode, unit="step") as bar:
            steps = {"n": 0}

            def step(what: str) -> None:
                steps["n"] += 1
                bar.update_to(steps["n"], step=what)

            inspection = inspect_disks(source.disks, vm=source.vm, progress=step)
    elif not vsphere_args.get("vsphere"):  # --vsphere said why already
        notice("no local disk to inspect: rules run on the VM definition only", json_mode)
    findings = evaluate(source.vm, inspection, options=RuleOptions(driver_source=driver_source))
    _print(source.vm, inspection, findings, rules_only, json_mode)
    stop = blockers(findings)
    if stop:
        if not json_mode:
            notice(f"vmshift: {len(stop)} blocker(s): "
                   f"{', '.join(f.rule_id for f in stop)}", json_mode)
        # Exit 3 without a second document: the report above is the result.
        raise click.exceptions.Exit(3)


def _list_rules(json_mode: bool) -> None:
    rules = load_rules()
    if json_mode:
        emit_json("rules", {"rules": list(rules)})
    else:
        report.echo(report.render_rules(rules))


def _print(vm: object, inspection: object, findings: list[Finding], rules_only: bool,
           json_mode: bool) -> None:
    if json_mode:
        payload: dict[str, object] = {"findings": findings,
                                      "blockers": [f.rule_id for f in blockers(findings)]}
        if not rules_only:
            payload = {"vm": vm, "inspection": inspection, **payload}
        emit_json("findings" if rules_only else "inspection", payload)
        return
    if not rules_only and inspection is not None:
        report.echo(report.render_inspection(inspection))  # type: ignore[arg-type]
        click.echo("")
    report.echo(report.render_findings(findings, verbose=not rules_only))
    if rules_only and not any(f.outcome == Outcome.FIRED for f in findings):
        click.echo("No rule fired.")
