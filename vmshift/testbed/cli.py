"""`vmshift testbed up|down|status`: local libvirt hosts to rehearse migrations on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vmshift.cliutil import dry_run_option, json_option
from vmshift.errors import OperationFailed
from vmshift.output import Progress, emit_json
from vmshift.testbed import guest_cli, lifecycle, procs, state, storage
from vmshift.testbed import hosts as hostmod

name_option = click.option("--name", "bed", default=hostmod.DEFAULT_BED, show_default=True,
                           help="Bed name: several beds with different names can coexist.")


@click.group(name="testbed")
def testbed() -> None:
    """Start, stop and show local libvirt test hosts.

    Each host is a libvirtd in its own network and mount namespaces, reachable
    at qemu+tcp://10.241.X.Y/system; all hosts share a storage pool
    (GlusterFS, or a plain directory) and a network of the same names.
    Needs root.
    """


def _stepper(progress: Progress) -> lifecycle.Step:
    count = {"n": 0}

    def step(message: str) -> None:
        count["n"] += 1
        progress.update_to(count["n"], step=message)

    return step


def status_doc(bed_name: str) -> dict[str, Any]:
    """The status of one bed as a plain dict (the --json document's payload)."""
    st = state.read_state(bed_name)
    doc: dict[str, Any] = {"name": bed_name, "up": hostmod.is_up(st),
                           "beds": [b for b in state.all_beds()]}
    if st is None:
        return doc
    bed = hostmod.bed_from_state(st)
    doc.update({
        "complete": bool(st.get("complete")),
        "subnet": bed.subnet, "bridge": st.get("bridge"),
        "storage_kind": bed.storage_kind, "storage_note": st.get("storage_note"),
        "migration_needs_unsafe": bed.migration_needs_unsafe,
        "shared_pool": bed.shared_pool, "shared_path": bed.shared_path,
        "shared_mounted_here": bed.storage_kind != "glusterfs"
        or storage.is_mounted(Path(bed.shared_path), "fuse.glusterfs"),
        "network": bed.network, "userfaultfd": bed.userfaultfd,
        "up_seconds": st.get("up_seconds"),
        "hosts": [],
    })
    for h, raw in zip(bed.hosts, st["hosts"], strict=True):
        daemon = raw.get("libvirtd")
        doc["hosts"].append({
            "name": h.name, "address": h.address, "uri": h.uri, "migrate_uri": h.migrate_uri,
            "netns": h.netns, "pools": [bed.shared_pool, h.private_pool],
            "private_pool": h.private_pool, "private_pool_path": h.private_pool_path,
            "private_pool_outside": h.private_pool_outside, "networks": [bed.network],
            "host_uuid": raw.get("host_uuid"),
            "libvirtd_pid": daemon["pid"] if daemon else None,
            "libvirtd_running": bool(daemon) and procs.alive(procs.Proc(**daemon)),
        })
    return doc


def _print_status(doc: dict[str, Any]) -> None:
    if not doc.get("hosts"):
        click.echo(f"bed {doc['name']}: not up")
        return
    click.echo(f"bed {doc['name']}: {'up' if doc['up'] else 'NOT fully up'}"
               f" (subnet {doc['subnet']})")
    unsafe = " (migrations need --unsafe)" if doc["migration_needs_unsafe"] else ""
    click.echo(f"  storage: {doc['storage_kind']}{unsafe} at {doc['shared_path']},"
               f" pool {doc['shared_pool']} on every host")
    if not doc["shared_mounted_here"]:
        click.echo("  WARNING: the shared volume is not mounted on this machine; "
                   f"`vmshift testbed up --name {doc['name']}` mounts it again")
    click.echo(f"  network: {doc['network']} on every host")
    click.echo(f"  post-copy: {doc['userfaultfd']}")
    for h in doc["hosts"]:
        state_word = "running" if h["libvirtd_running"] else "STOPPED"
        click.echo(f"  {h['name']}: {h['uri']}  migrate-uri {h['migrate_uri']}  "
                   f"pools {', '.join(h['pools'])}  libvirtd {state_word}")


@testbed.command()
@click.option("--hosts", "n_hosts", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Number of libvirt hosts (hosta, hostb, ...).")
@click.option("--storage", "storage_kind", type=click.Choice(lifecycle.STORAGE_KINDS),
              default="auto", show_default=True,
              help="Shared pool: GlusterFS (libvirt calls it shared), a plain directory "
                   "(migrations need --unsafe), or auto: GlusterFS when it can start.")
@name_option
@json_option
@dry_run_option
def up(n_hosts: int, storage_kind: str, bed: str, json_mode: bool, dry_run: bool) -> None:
    """Start the bed (idempotent: a bed already up is left as it is)."""
    state.check_bed_name(bed)
    if dry_run:
        plan = lifecycle.plan_up(bed, n_hosts)
        if json_mode:
            emit_json("testbed_plan", {"name": bed, "dry_run": True, "actions": plan})
        else:
            click.echo("\n".join(line if line.startswith("nothing") else f"would {line}"
                                  for line in plan))
        return
    with Progress(f"testbed {bed} up", 1 + 2 * n_hosts, json_mode=json_mode,
                  unit="step") as progress:
        lifecycle.up(bed, n_hosts, step=_stepper(progress), storage_kind=storage_kind)
    doc = status_doc(bed)
    if json_mode:
        emit_json("testbed_status", {**doc, "outcome": "ok"})
    else:
        _print_status(doc)


@testbed.command()
@name_option
@json_option
@dry_run_option
def down(bed: str, json_mode: bool, dry_run: bool) -> None:
    """Stop the bed and remove everything it created (idempotent)."""
    state.check_bed_name(bed)
    if dry_run:
        plan = lifecycle.plan_down(bed)
        if json_mode:
            emit_json("testbed_plan", {"name": bed, "dry_run": True, "actions": plan})
        else:
            click.echo("\n".join(plan))
        return
    with Progress(f"testbed {bed} down", None, json_mode=json_mode, unit="step") as progress:
        stopped = lifecycle.down(bed, step=_stepper(progress))
    if json_mode:
        emit_json("testbed_down", {"name": bed, "was_up": stopped})
    else:
        click.echo(f"bed {bed}: {'stopped' if stopped else 'was not up'}")


@testbed.command()
@name_option
@json_option
def status(bed: str, json_mode: bool) -> None:
    """Show URIs, pools, networks and storage kind of a bed."""
    state.check_bed_name(bed)
    doc = status_doc(bed)
    if not json_mode:
        _print_status(doc)
    if doc.get("hosts") and not doc["up"]:  # with --json, main() prints doc, outcome failed
        raise OperationFailed(f"bed {bed} is only partly up; run `vmshift testbed down "
                              f"--name {bed}` then `up` again",
                              document=("testbed_status", doc))
    if json_mode:
        emit_json("testbed_status", {**doc, "outcome": "ok"})


testbed.add_command(guest_cli.guest)  # `vmshift testbed guest build` (reference guest)
