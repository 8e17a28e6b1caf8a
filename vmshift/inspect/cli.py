"""CLI for `vmshift inspect`: what is inside the VM, and what would break."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vmshift.cliutil import allow_emulated_option, json_option, virtio_win_option
from vmshift.confine import Policy, allow_device_option
from vmshift.errors import BadInput, Refused
from vmshift.inspect import report
from vmshift.inspect.rules import Finding, Outcome, RuleOptions, blockers, evaluate, load_rules
from vmshift.inspect.vsphere_source import vsphere_options
from vmshift.output import Progress, emit_json, notice


@click.command(name="inspect")
@click.argument("sources", metavar="[IMAGE...]", nargs=-1)
@click.option("--rules-only", is_flag=True, help="Print only the pre-flight findings.")
@click.option("--list-rules", is_flag=True, help="List the pre-flight rules and exit.")
@virtio_win_option
@allow_emulated_option
@allow_device_option
@vsphere_options
@json_option
def inspect_cmd(sources: tuple[str, ...], rules_only: bool, list_rules: bool,
                virtio_win: Path | None, allow_emulated: bool,
                allow_devices: tuple[str, ...], json_mode: bool,
                **vsphere_args: Any) -> None:
    """Look inside the disks of one VM (read-only) and run the pre-flight rules.

    IMAGE... are the disks of one VM, in any format qemu-img reads, or a single
    VM definition a reader knows (a .vmx file): its model then feeds the rules
    and its local disks are inspected. Disks are opened read-only in a single
    libguestfs appliance and never modified.

    --vsphere --url URL --user USER --vm NAME reads the VM from vCenter/ESXi
    instead (no IMAGE); with --disk-dir DIR its disks are downloaded
    there and inspected, else only the rules that need no disk contents run.

    Exit codes: 0 no blocker, 2 bad input, 3 a blocker rule fired.
    """
    if list_rules:
        _list_rules(json_mode)
        return
    from vmshift.inspect.api import inspect_disks
    from vmshift.inspect.sources import resolve
    from vmshift.inspect.vsphere_source import vsphere_source

    policy = Policy.of(devices=allow_devices)  # every disk a definition names is confined
    try:
        source = vsphere_source(sources, vsphere_args, json_mode)
    except Refused as exc:  # a running VM: exit 3, and --json says so in this command's document
        exc.document = _document(None, None, _refusal(exc), rules_only)
        raise
    if source is None:
        if not sources:
            raise BadInput("IMAGE: give at least one disk image, or --vsphere "
                           "(see `vmshift inspect --help`)")
        source = resolve(list(sources), policy)
    inspection = None
    if source.disks:
        with Progress("inspect", None, json_mode=json_mode, unit="step") as bar:
            steps = {"n": 0}

            def step(what: str) -> None:
                steps["n"] += 1
                bar.update_to(steps["n"], step=what)

            inspection = inspect_disks(source.disks, vm=source.vm, progress=step,
                                       policy=policy)
    elif not vsphere_args.get("vsphere"):  # --vsphere said why already
        notice("no local disk to inspect: rules run on the VM definition only", json_mode)
    findings = evaluate(source.vm, inspection, options=RuleOptions(
        driver_source=str(virtio_win) if virtio_win else None, allow_emulated=allow_emulated))
    kind, payload = _document(source.vm, inspection, findings, rules_only)
    if not json_mode:
        _print(inspection, findings, rules_only)
    stop = blockers(findings)
    if stop:  # exit 3; with --json main() prints this document, "outcome": "blocked"
        raise Refused(f"{len(stop)} blocker(s): {', '.join(f.rule_id for f in stop)}",
                      document=(kind, payload))
    if json_mode:
        emit_json(kind, {**payload, "outcome": "ok"})


def _refusal(exc: Refused) -> list[Finding]:
    """A refusal from the vSphere source (e.g. a running VM) as blocker findings."""
    remedy = exc.message.partition("; ")[2]
    details = exc.detail if isinstance(exc.detail, list) else []
    return [Finding(d["id"], "blocker", Outcome.FIRED, d["message"], remedy) for d in details]


def _list_rules(json_mode: bool) -> None:
    rules = load_rules()
    if json_mode:
        emit_json("rules", {"rules": list(rules)})
    else:
        report.echo(report.render_rules(rules))


def _document(vm: object, inspection: object, findings: list[Finding],
              rules_only: bool) -> tuple[str, dict[str, object]]:
    payload: dict[str, object] = {"findings": findings,
                                  "blockers": [f.rule_id for f in blockers(findings)]}
    if not rules_only:
        payload = {"vm": vm, "inspection": inspection, **payload}
    return ("findings" if rules_only else "inspection"), payload


def _print(inspection: object, findings: list[Finding], rules_only: bool) -> None:
    if not rules_only and inspection is not None:
        report.echo(report.render_inspection(inspection))  # type: ignore[arg-type]
        click.echo("")
    report.echo(report.render_findings(findings, verbose=not rules_only))
    if rules_only and not any(f.outcome == Outcome.FIRED for f in findings):
        click.echo("No rule fired.")
