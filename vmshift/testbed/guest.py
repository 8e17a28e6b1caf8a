"""The reference VMware-style Linux guest: built once, cached by recipe hash.

``reference_guest('base' | 'novirtio')`` returns the paths of a Debian 12
guest that looks exported from ESXi (pvscsi, vmxnet3 with a static MAC,
ens192, /dev/sda1 in fstab, serial console, open-vm-tools), as a VMX plus
streamOptimized and monolithicSparse VMDKs. It builds both variants if they
are not cached yet (about 4-6 minutes, see the README).

Cache layout, outside the repository::

    $VMSHIFT_CACHE/guests/<recipe-hash>/manifest.json
    $VMSHIFT_CACHE/guests/<recipe-hash>/{base,novirtio}/<name>{.vmx,.vmdk,-stream.vmx,...}
    $VMSHIFT_CACHE/debootstrap-debs/       (debootstrap --cache-dir, shared by rebuilds)

The hash covers the recipe's parameters and the sources of
``vmshift/testbed/guestimage/``; this module (cache and locking) is not part
of it. A build happens in ``.build-<hash>-<pid>`` and is renamed into place
only when complete, so a crash never leaves something that looks cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vmshift import locks
from vmshift.errors import BadInput, OperationFailed
from vmshift.testbed.guestimage import build as recipe_build

VARIANTS = ("base", "novirtio")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOLS = ("debootstrap", "chroot", "guestfish", "qemu-img", "sfdisk", "mke2fs", "zstd")
FAILED_LOG = "last-failed-build.log"
GUESTIMAGE_DIR = Path(recipe_build.__file__).parent


@dataclass(frozen=True)
class ReferenceGuest:
    """One built variant. ``vmx`` uses the monolithicSparse disk, ``vmx_stream`` the other."""

    variant: str
    name: str
    hostname: str
    vmx: Path
    vmx_stream: Path
    vmdk_sparse: Path
    vmdk_stream: Path
    raw: Path
    mac: str
    uuid: str
    ipv4: str
    root_password: str
    kernel: str
    virtio_in_initramfs: bool
    recipe_hash: str

    def to_dict(self) -> dict[str, object]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def cache_dir() -> Path:
    return Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift"))


def guests_dir() -> Path:
    return cache_dir() / "guests"


def recipe_hash(recipe: recipe_build.Recipe = recipe_build.RECIPE) -> str:
    """sha256 of the recipe parameters and the builder's sources (first 16 hex digits)."""
    h = hashlib.sha256()
    h.update(json.dumps(recipe_build.recipe_params(recipe), sort_keys=True).encode())
    for source in sorted(GUESTIMAGE_DIR.iterdir()):
        if source.suffix in (".py", ".sh"):  # the recipe's code and guest-side scripts
            h.update(source.name.encode() + b"\0" + source.read_bytes())
    return h.hexdigest()[:16]


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise BadInput(f"--variant: unknown variant {variant!r} (choose {', '.join(VARIANTS)})")


def _from_manifest(entry: Path, manifest: dict, variant: str) -> ReferenceGuest:
    info = manifest["variants"][variant]
    vdir = entry / info["directory"]
    files = {k: vdir / v for k, v in info["files"].items()}
    return ReferenceGuest(
        variant=variant, name=info["name"], hostname=info["hostname"], vmx=files["vmx"],
        vmx_stream=files["vmx_stream"], vmdk_sparse=files["vmdk_sparse"],
        vmdk_stream=files["vmdk_stream"], raw=files["raw"], mac=info["mac"],
        uuid=info["uuid"], ipv4=info["ipv4"], root_password=manifest["root_password"],
        kernel=manifest["kernel"], virtio_in_initramfs=info["virtio_in_initramfs"],
        recipe_hash=manifest["recipe_hash"])


def cached_guest(variant: str = "base", digest: str | None = None) -> ReferenceGuest | None:
    """The cached variant, or None. Complete means: renamed into place, with a manifest."""
    _check_variant(variant)
    entry = guests_dir() / (digest or recipe_hash())
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        guest = _from_manifest(entry, manifest, variant)
    except (OSError, ValueError, KeyError):
        return None
    needed = (guest.vmx, guest.vmx_stream, guest.vmdk_sparse, guest.vmdk_stream, guest.raw)
    return guest if all(p.is_file() for p in needed) else None


@contextmanager
def _build_lock(digest: str) -> Iterator[None]:
    """One build per recipe at a time, across processes (pytest workers, CLI)."""
    guests_dir().mkdir(parents=True, exist_ok=True)
    with locks.exclusive(guests_dir() / f".{digest}.lock"):
        yield


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def remove_build_dir(path: Path) -> None:
    """Delete a build directory; refuse while anything is mounted under it.

    debootstrap mounts /proc and /sys into its target; deleting through such a
    mount would delete the host's files.
    """
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", point], check=False)
    if _mounts_under(path):
        raise OperationFailed(f"{path}: still has mounts under it; not deleting it")
    shutil.rmtree(path, ignore_errors=True)


def _clean_stale_builds(digest: str) -> None:
    # Called with the lock held: any build directory for this hash is a leftover.
    for stale in guests_dir().glob(f".build-{digest}-*"):
        remove_build_dir(stale)


class BuildTerminated(OperationFailed):
    """SIGTERM during a build: unwind, so helpers are stopped and the temp dir removed."""


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise BuildTerminated("reference guest build: terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _preflight() -> None:
    if os.geteuid() != 0:
        raise OperationFailed("building the reference guest needs root (debootstrap, chroot)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise OperationFailed("building the reference guest needs " + ", ".join(missing)
                              + " (run `make setup`)")


def _guestfs_env() -> dict[str, str]:
    from vmshift.host import libguestfs_env

    return libguestfs_env()


def build_guests(step: Callable[[str], None] = lambda _s: None) -> Path:
    """Build every variant if not cached; return the cache entry. Safe to call concurrently."""
    digest = recipe_hash()
    final = guests_dir() / digest
    with _build_lock(digest):
        if (final / "manifest.json").is_file():
            return final
        _preflight()
        _clean_stale_builds(digest)
        tmp = guests_dir() / f".build-{digest}-{os.getpid()}"
        out, work = tmp / "out", tmp / "work"
        out.mkdir(parents=True)
        work.mkdir()
        ctx = recipe_build.BuildContext(
            out=out, work=work, log=out / "build.log",
            mirror=os.environ.get("VMSHIFT_DEBIAN_MIRROR", DEFAULT_MIRROR),
            deb_cache=cache_dir() / "debootstrap-debs", guestfs_env=_guestfs_env(), step=step)
        try:
            with _sigterm_as_exception():
                manifest = recipe_build.build(ctx, recipe_build.RECIPE, digest)
            recipe_build.write_manifest(out, manifest)
            if final.exists():  # an incomplete entry (no manifest) from older code
                remove_build_dir(final)
            out.rename(final)
        except BaseException as exc:
            # Keep the log of a failed build where the error message can point.
            if not ctx.log.exists():
                raise
            kept = guests_dir() / FAILED_LOG
            shutil.copyfile(ctx.log, kept)
            if isinstance(exc, OperationFailed):
                raise OperationFailed(exc.message.replace(str(ctx.log), str(kept))) from None
            raise
        finally:
            remove_build_dir(tmp)
    return final


def reference_guest(variant: str = "base",
                    step: Callable[[str], None] = lambda _s: None) -> ReferenceGuest:
    """The reference guest ``variant`` ('base' or 'novirtio'), building it if needed."""
    _check_variant(variant)
    guest = cached_guest(variant)
    if guest is not None:
        return guest
    entry = build_guests(step)
    # The entry's own hash: the sources may have changed while it was built.
    guest = cached_guest(variant, digest=entry.name)
    if guest is None:
        raise OperationFailed(f"reference guest {variant}: the build finished but "
                              f"{entry} is incomplete")
    return guest


def stale_entries() -> list[Path]:
    """Cache entries (and leftover build dirs) of recipes other than the current one."""
    if not guests_dir().is_dir():
        return []
    current = recipe_hash()
    found = []
    for path in sorted(guests_dir().iterdir()):
        digest = path.name.removeprefix(".build-").split("-")[0]
        if path.is_dir() and digest != current and re.fullmatch(r"[0-9a-f]{16}", digest):
            found.append(path)
    return found


def prune(dry_run: bool = False) -> list[Path]:
    """Delete stale entries whose build lock is free (a running build keeps its own)."""
    removed = []
    for path in stale_entries():
        digest = path.name.removeprefix(".build-").split("-")[0]
        lock_path = guests_dir() / f".{digest}.lock"
        try:
            with locks.exclusive(lock_path, wait=False):
                if not dry_run:
                    remove_build_dir(path)
                removed.append(path)
        except locks.Held:
            continue  # being built right now
        if not dry_run and not any(digest in p.name for p in guests_dir().iterdir()
                                   if p.is_dir()):
            lock_path.unlink(missing_ok=True)
    return removed
