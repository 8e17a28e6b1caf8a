"""The recipe: both variants of the reference guest, built into one directory.

One debootstrap serves both variants: the no-virtio one only differs in its
identity and its initramfs, which is rebuilt natively in the same tree after
the base disk has been made from it. The slow libguestfs and qemu-img steps of
the two variants run side by side (the machines this runs on have 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from vmshift.testbed.guestimage import disk, rootfs
from vmshift.testbed.guestimage.vmx import VmxSpec, uuid_bios_for, uuid_from_bios, write_vmx

STREAM, SPARSE = "streamOptimized", "monolithicSparse"


@dataclass(frozen=True)
class VariantSpec:
    variant: str  # "base" or "novirtio"
    name: str  # displayName and file stem
    hostname: str
    mac: str  # VMware's static range is 00:50:56:00:00:00-00:50:56:3f:ff:ff
    ipv4_cidr: str
    virtio_in_initramfs: bool


@dataclass(frozen=True)
class Recipe:
    suite: str
    packages: tuple[str, ...]
    vmware_initramfs_modules: tuple[str, ...]
    disk_gib: int
    memsize_mib: int
    numvcpus: int
    cores_per_socket: int
    gateway: str
    variants: tuple[VariantSpec, ...]

    def variant(self, name: str) -> VariantSpec:
        for spec in self.variants:
            if spec.variant == name:
                return spec
        raise KeyError(name)


RECIPE = Recipe(
    suite=rootfs.SUITE, packages=rootfs.PACKAGES,
    vmware_initramfs_modules=rootfs.VMWARE_INITRAMFS_MODULES,
    disk_gib=3, memsize_mib=1024, numvcpus=2, cores_per_socket=1, gateway="192.168.100.1",
    variants=(
        VariantSpec("base", "vmshift-ref-debian12", "ref-debian12", "00:50:56:3a:5e:01",
                    "192.168.100.51/24", True),
        VariantSpec("novirtio", "vmshift-ref-debian12-novirtio", "ref-debian12-novirtio",
                    "00:50:56:3a:5e:02", "192.168.100.52/24", False),
    ),
)


def recipe_params(recipe: Recipe) -> dict[str, object]:
    return asdict(recipe)


@dataclass
class BuildContext:
    out: Path  # becomes the cache entry
    work: Path  # scratch (the root tree), deleted afterwards
    log: Path
    mirror: str
    deb_cache: Path
    guestfs_env: dict[str, str]
    step: Callable[[str], None]  # progress: called at the start of each step


def _prepare_variant(ctx: BuildContext, recipe: Recipe, spec: VariantSpec,
                     root: Path) -> Path:
    """Identity, initramfs check, then the raw disk made from the tree as it is now."""
    rootfs.set_identity(root, rootfs.GuestIdentity(spec.hostname, spec.ipv4_cidr,
                                                   recipe.gateway))
    if not spec.virtio_in_initramfs:
        ctx.step(f"{spec.variant}: VMware-only initramfs")
        rootfs.make_vmware_only_initramfs(root, ctx.log)
    rootfs.check_initramfs(root, want_virtio=spec.virtio_in_initramfs)
    ctx.step(f"{spec.variant}: partition and ext4 filesystem")
    vdir = ctx.out / spec.variant
    vdir.mkdir(parents=True)
    raw = vdir / f"{spec.name}.raw"
    disk.make_filesystem_disk(raw, root, recipe.disk_gib, ctx.log)
    return raw


def _vmx_spec(recipe: Recipe, spec: VariantSpec, vmdk_name: str, seed: str) -> VmxSpec:
    return VmxSpec(display_name=spec.name, vmdk_name=vmdk_name, mac=spec.mac,
                   uuid_bios=uuid_bios_for(seed), memsize_mib=recipe.memsize_mib,
                   numvcpus=recipe.numvcpus, cores_per_socket=recipe.cores_per_socket)


def _stop(procs: list[tuple[subprocess.Popen[str], str]]) -> None:
    """End the helpers this build started (each leads its own process group)."""
    for proc, _ in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


def _run_parallel(procs: list[tuple[subprocess.Popen[str], str]], log: Path) -> None:
    try:
        for proc, what in procs:
            disk.wait_ok(proc, what, log)
    finally:
        _stop(procs)


def build(ctx: BuildContext, recipe: Recipe, recipe_hash: str) -> dict[str, object]:
    """Build every variant into ``ctx.out``; return the manifest (written by the caller)."""
    started = time.monotonic()
    root = ctx.work / "root"
    ctx.step("debootstrap Debian 12")
    rootfs.debootstrap(root, mirror=ctx.mirror, deb_cache=ctx.deb_cache, log=ctx.log)
    ctx.step("make it look exported from ESXi")
    rootfs.make_esxi_like(root, ctx.log)
    # The base variant is made from the tree before the no-virtio one changes it.
    # Each disk's GRUB install (libguestfs, slow under TCG) starts as soon as
    # its disk exists, so it overlaps the next variant's native work.
    raws: dict[str, Path] = {}
    grub_jobs: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for spec in sorted(recipe.variants, key=lambda s: not s.virtio_in_initramfs):
            raw = raws[spec.variant] = _prepare_variant(ctx, recipe, spec, root)
            ctx.step(f"{spec.variant}: grub-install and update-grub (libguestfs)")
            grub_jobs.append((disk.start_grub_install(raw, env=ctx.guestfs_env, log=ctx.log),
                              f"guestfish GRUB install ({spec.variant})"))
    except BaseException:
        _stop(grub_jobs)
        raise
    _run_parallel(grub_jobs, ctx.log)
    kernel = rootfs.kernel_version(root)
    ctx.step("convert to streamOptimized and monolithicSparse VMDK")
    variants: dict[str, object] = {}
    jobs = []
    for spec in recipe.variants:
        raw = raws[spec.variant]
        files = {"raw": raw.name, "vmdk_sparse": f"{spec.name}.vmdk",
                 "vmdk_stream": f"{spec.name}-stream.vmdk", "vmx": f"{spec.name}.vmx",
                 "vmx_stream": f"{spec.name}-stream.vmx"}
        for key, sub in (("vmdk_sparse", SPARSE), ("vmdk_stream", STREAM)):
            jobs.append((disk.start_vmdk(raw, raw.parent / files[key], sub, ctx.log),
                         f"qemu-img convert to {sub} ({spec.variant})"))
        seed = f"{recipe_hash}/{spec.variant}"
        vmx = _vmx_spec(recipe, spec, files["vmdk_sparse"], seed)
        write_vmx(raw.parent / files["vmx"], vmx)
        write_vmx(raw.parent / files["vmx_stream"],
                  _vmx_spec(recipe, spec, files["vmdk_stream"], seed))
        variants[spec.variant] = {
            "directory": spec.variant, "files": files, "name": spec.name,
            "hostname": spec.hostname, "mac": spec.mac, "ipv4": spec.ipv4_cidr,
            "uuid": uuid_from_bios(vmx.uuid_bios), "uuid_bios": vmx.uuid_bios,
            "virtio_in_initramfs": spec.virtio_in_initramfs}
    _run_parallel(jobs, ctx.log)
    for leftover in ctx.out.glob("*/*.guestfish"):
        leftover.unlink()
    return {"recipe_hash": recipe_hash, "recipe": recipe_params(recipe), "kernel": kernel,
            "root_password": rootfs.ROOT_PASSWORD, "variants": variants,
            "build_seconds": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_manifest(out: Path, manifest: dict[str, object]) -> None:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
