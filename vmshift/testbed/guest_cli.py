"""`vmshift testbed guest ...`: build and locate the reference VMware-style guest."""

from __future__ import annotations

import click

from vmshift.cliutil import dry_run_option, json_option
from vmshift.output import Progress, emit_json
from vmshift.testbed import guest as refguest

BUILD_STEPS = 8  # the number of step() calls in guestimage/build.py for both variants


@click.group(name="guest")
def guest() -> None:
    """The reference VMware-style Debian 12 guest (VMX + VMDKs), cached by recipe hash."""


def _describe(g: refguest.ReferenceGuest) -> str:
    return "\n".join([
        f"{g.variant}: {g.name} (hostname {g.hostname}, MAC {g.mac}, kernel {g.kernel})",
        f"  vmx          {g.vmx}",
        f"  vmx (stream) {g.vmx_stream}",
        f"  vmdk sparse  {g.vmdk_sparse}",
        f"  vmdk stream  {g.vmdk_stream}",
        f"  raw          {g.raw}",
    ])


def _build(names: list[str], json_mode: bool) -> list[refguest.ReferenceGuest]:
    with Progress("reference guest", BUILD_STEPS, json_mode=json_mode, unit="step") as bar:
        done = {"n": 0}

        def step(what: str) -> None:
            bar.update_to(done["n"], step=what)
            done["n"] += 1

        guests = [refguest.reference_guest(v, step=step) for v in names]
        bar.update_to(BUILD_STEPS)
    return guests


@guest.command(name="build")
@click.option("--variant", type=click.Choice(["base", "novirtio", "all"]), default="all",
              show_default=True, help="Which variant's paths to print (both are built).")
@dry_run_option
@json_option
def build_cmd(variant: str, dry_run: bool, json_mode: bool) -> None:
    """Build the reference guest if it is not cached, and print its paths.

    Both variants are built together (one debootstrap): `base` has virtio in its
    initramfs, `novirtio` has only VMware's storage drivers there. The cache
    lives in $VMSHIFT_CACHE/guests/<recipe-hash>/.
    """
    names = list(refguest.VARIANTS) if variant == "all" else [variant]
    digest = refguest.recipe_hash()
    if dry_run:
        cached = all(refguest.cached_guest(v) is not None for v in names)
        where = refguest.guests_dir() / digest
        if json_mode:
            emit_json("testbed_guest_plan", {"recipe_hash": digest, "directory": where,
                                             "cached": cached, "would_build": not cached})
        else:
            click.echo(f"{where}: " + ("cached, nothing to do" if cached
                                       else "not cached: would debootstrap and build"))
        return
    guests = [refguest.cached_guest(v) for v in names]
    if None in guests:
        guests = _build(names, json_mode)
    if json_mode:
        emit_json("testbed_guest", {"recipe_hash": digest,
                                    "guests": {g.variant: g.to_dict() for g in guests}})
    else:
        click.echo("\n".join(_describe(g) for g in guests))


@guest.command(name="prune")
@dry_run_option
@json_option
def prune_cmd(dry_run: bool, json_mode: bool) -> None:
    """Delete cached guests of older recipes (not the current one, not one being built)."""
    removed = refguest.prune(dry_run=dry_run)
    if json_mode:
        emit_json("testbed_guest_prune", {"dry_run": dry_run, "removed": removed,
                                          "kept": refguest.recipe_hash()})
        return
    verb = "would remove" if dry_run else "removed"
    for path in removed:
        click.echo(f"{verb} {path}")
    if not removed:
        click.echo("nothing to prune")
