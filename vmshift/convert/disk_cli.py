"""`vmshift convert disk`: the command-line face of the disk engine.

The `convert` group lives here so that the disk command sits beside the
engine it drives; vmshift/convert/cli.py imports the group.
"""

from __future__ import annotations

from pathlib import Path

import click

from vmshift.cliutil import SIZE, bandwidth_option, dry_run_option, json_option
from vmshift.confine import allow_device_option
from vmshift.convert import disks
from vmshift.convert.disk_plan import plan
from vmshift.errors import BadInput
from vmshift.output import emit_json, notice
from vmshift.units import human

CACHE_MODES = ["none", "writeback", "writethrough", "directsync", "unsafe"]


class _ConvertGroup(click.Group):
    """`convert vm` is imported only when it runs: `convert disk` stays light."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "vm"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "vm" and name not in self.commands:
            from vmshift.convert.vm.cli import convert_vm

            self.add_command(convert_vm, "vm")
        return super().get_command(ctx, name)


@click.group(cls=_ConvertGroup)
def convert() -> None:
    """Convert disks and VM definitions for KVM."""


@convert.command("disk")
@click.argument("paths", nargs=-1, required=True, metavar="SRC... DST")
@click.option("--format", "out_format", type=click.Choice(disks.OUTPUT_FORMATS),
              default="qcow2", show_default=True, help="Output format.")
@click.option("--pool", help="Write into this libvirt storage pool (DST is the volume name).")
@click.option("--connect", "connect_uri", metavar="URI",
              help="libvirt URI of the pool's host, e.g. qemu+tcp://host/system.")
@click.option("--compress", is_flag=True, help="Compressed qcow2 (smaller, slower to write).")
@click.option("--cluster-size", type=SIZE, metavar="SIZE",
              help="qcow2 cluster size, e.g. 64k (the default) or 2M.")
@click.option("--preallocation", type=click.Choice(disks.PREALLOCATION), default="off",
              show_default=True, help="Sparse by default; or preallocate the output.")
@click.option("--coroutines", type=int, default=disks.DEFAULT_COROUTINES, show_default=True,
              help="Parallel requests inside qemu-img (-m).")
@click.option("--out-of-order", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="qemu-img -W; auto = only for raw or preallocated outputs.")
@click.option("--cache", "target_cache", type=click.Choice(CACHE_MODES),
              default=disks.DEFAULT_TARGET_CACHE, show_default=True,
              help="Output cache mode (-t); a synced output is fsynced before it is renamed.")
@click.option("--source-cache", type=click.Choice(CACHE_MODES),
              default=disks.DEFAULT_SOURCE_CACHE, show_default=True,
              help="Source cache mode (-T).")
@bandwidth_option("qemu-img's throughput and the pool upload")
@click.option("--parallel-disks", type=int, default=1, show_default=True,
              help="Convert this many disks at once.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Prove the output identical to the source (qemu-img compare).")
@click.option("--sync/--no-sync", default=None,
              help="Wait for the output to reach the disk before it gets its name "
                   "[default: sync when verifying, as the careful path; with "
                   "--no-verify, no sync, as plain qemu-img]. Without it a power cut "
                   "soon after can leave a truncated file under the final name.")
@click.option("--snapshot", help="Convert this point of the snapshot chain (a file name in "
                                 "the chain, or 'base'); "
                                 "default: the current state.")
@click.option("--source-format", type=click.Choice(["vmdk", "raw", "qcow2", "vdi", "vpc",
                                                    "vhdx"]),
              help="Skip the extension check; the content must still be this format "
                   "(e.g. raw, to read a flat extent named .vmdk).")
@click.option("--tmpdir", type=click.Path(path_type=Path),
              help="Staging directory for pool uploads (default /var/tmp).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file or volume.")
@allow_device_option
@dry_run_option
@json_option
def convert_disk(paths: tuple[str, ...], out_format: str, pool: str | None,
                 connect_uri: str | None, compress: bool, cluster_size: int | None,
                 preallocation: str, coroutines: int, out_of_order: str, target_cache: str,
                 source_cache: str, bandwidth: int | None, parallel_disks: int,
                 verify: bool, sync: bool | None, snapshot: str | None, source_format: str | None,
                 tmpdir: Path | None, force: bool, allow_devices: tuple[str, ...],
                 dry_run: bool, json_mode: bool) -> None:
    """Convert disk images (VMDK in every form, raw, qcow2, VDI, VHD, VHDX) to
    qcow2 or raw, into a file or a libvirt pool volume on any host.

    The last argument is the output: a file, a directory, or a name containing
    '{name}' for several sources (with --pool: the volume name). Sources are
    only read. Outputs appear only complete and verified: on any failure,
    SIGINT or SIGTERM nothing partial is left behind.
    """
    if len(paths) < 2:
        raise BadInput("convert disk: give at least one SRC and a DST")
    # --no-verify asks for qemu-img's guarantees and speed: the kernel writes the
    # output back after exit. The verified default is the careful path, durable too.
    sync = verify if sync is None else sync
    o = disks.ConvertOptions(
        out_format=out_format, compress=compress, cluster_size=cluster_size,
        preallocation=preallocation, coroutines=coroutines, out_of_order=out_of_order,
        target_cache=target_cache, source_cache=source_cache, bandwidth=bandwidth,
        parallel_disks=parallel_disks, verify=verify, sync=sync, force=force, snapshot=snapshot,
        source_format=source_format, tmpdir=tmpdir, pool=pool, connect=connect_uri,
        json_mode=json_mode, allow_devices=allow_devices)
    jobs, target = plan([Path(p) for p in paths[:-1]], paths[-1], o, defer=not dry_run)
    if not dry_run:
        disks.Run(jobs, o, target).execute()
    _report(jobs, o, dry_run, json_mode)


def _report(jobs: list[disks.DiskJob], o: disks.ConvertOptions, dry_run: bool,
            json_mode: bool) -> None:
    if dry_run:
        for job in jobs:
            job.argv = disks.convert_args(job, job.dst or Path(str(job.volume)), o).argv()
    if json_mode:
        emit_json("convert_disk", {"dry_run": dry_run, "format": o.out_format,
                                   "pool": o.pool, "connect": o.connect,
                                   "disks": [j.report() for j in jobs]})
        return
    for job in jobs:
        out = job.dst or f"volume {job.volume} in pool {o.pool} ({o.connect})"
        src = job.source
        if dry_run:
            click.echo(f"would convert {src.given} [{src.kind}, {human(src.virtual_size)}] "
                       f"-> {out} [{o.out_format}, about {human(job.required)}]")
            click.echo("  qemu-img " + " ".join(job.argv))
        else:
            check = "verified" if job.verified else "NOT verified (--no-verify)"
            click.echo(f"{src.given} -> {out}: {o.out_format}, {human(src.virtual_size)} "
                       f"virtual, {human(job.out_bytes)} written, {job.seconds:.1f} s, "
                       f"{check}")
    if not dry_run and not o.verify:
        notice("verification skipped (--no-verify)", json_mode)
