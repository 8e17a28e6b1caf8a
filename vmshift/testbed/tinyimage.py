"""Build the tiny guest's boot files: the host's Debian kernel plus a busybox initramfs.

The initramfs holds busybox (busybox-static), the init script and memhog
(tiny/memhog.c, compiled statically with gcc) and the virtio modules the
kernel needs for the data disk and NIC. It is written as a newc cpio archive
here (device nodes without mknod, byte-for-byte reproducible), gzip-compressed
and cached in $VMSHIFT_CACHE/tinyguest/<recipe hash>/.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import OperationFailed

HERE = Path(__file__).resolve().parent / "tiny"
BUSYBOX = Path("/bin/busybox")
# Loaded in this order; their dependencies are resolved from modules.dep.
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_net")
RECIPE_VERSION = "2"
XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass
class BootFiles:
    kernel: Path
    initramfs: Path
    recipe: str  # hash of everything that went into them


def cache_root() -> Path:
    return Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "tinyguest"


def host_kernel() -> tuple[Path, str]:
    """The newest /boot/vmlinuz-* whose modules are installed."""
    for kernel in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        release = kernel.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / release / "modules.dep").exists():
            return kernel, release
    raise OperationFailed("no /boot/vmlinuz-* with matching /lib/modules (Debian "
                          "linux-image-amd64)")


def module_order(release: str) -> list[str]:
    """Module files (relative to /lib/modules/RELEASE) in dependency order."""
    moddir = Path("/lib/modules") / release
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[Path(path).name.split(".ko")[0].replace("-", "_")] = [path, *rest.split()]
    by_path = {v[0]: k for k, v in deps.items()}
    order: list[str] = []

    def visit(path: str) -> None:
        name = by_path[path]
        for dep in deps[name][1:]:
            visit(dep)
        if path not in order:
            order.append(path)

    for wanted in WANTED_MODULES:
        if wanted in deps:  # built into the kernel when absent
            visit(deps[wanted][0])
    return order


def recipe_hash(kernel: Path, release: str, modules: list[str]) -> str:
    h = hashlib.sha256(RECIPE_VERSION.encode())
    for path in (HERE / "init.sh", HERE / "memhog.c", BUSYBOX, kernel):
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(release.encode())
    h.update("\n".join(modules).encode())
    return h.hexdigest()[:16]


def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
                ino: int = 0) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def write_cpio(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    body = b"".join(_cpio_entry(n, m, d, r, i + 1) for i, (n, m, d, r) in enumerate(entries))
    return body + _cpio_entry("TRAILER!!!", 0)


def compile_memhog(out: Path) -> None:
    argv = ["gcc", "-static", "-O2", "-o", str(out), str(HERE / "memhog.c")]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise OperationFailed("gcc not installed (Debian gcc, libc6-dev)") from exc
    except subprocess.CalledProcessError as exc:
        raise OperationFailed(f"compiling memhog failed: {exc.stderr.strip()}") from exc


def build_initramfs(release: str, modules: list[str], out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        memhog = Path(tmp) / "memhog"
        compile_memhog(memhog)
        dirs = ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"]
        entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
            (d, 0o040755, b"", (0, 0)) for d in dirs]
        entries.append(("dev/console", 0o020600, b"", (5, 1)))
        entries.append(("init", 0o100755, (HERE / "init.sh").read_bytes(), (0, 0)))
        entries.append(("bin/busybox", 0o100755, BUSYBOX.read_bytes(), (0, 0)))
        entries.append(("bin/sh", 0o120777, b"busybox", (0, 0)))
        entries.append(("bin/memhog", 0o100755, memhog.read_bytes(), (0, 0)))
        names = []
        for rel in modules:
            name = Path(rel).name
            names.append(name)
            data = (Path("/lib/modules") / release / rel).read_bytes()
            entries.append((f"lib/modules/{name}", 0o100644, data, (0, 0)))
        entries.append(("lib/modules/load-order", 0o100644,
                        ("\n".join(names) + "\n").encode(), (0, 0)))
        part = out.with_suffix(".part")
        with gzip.GzipFile(part, "wb", mtime=0) as gz:
            gz.write(write_cpio(entries))
        part.replace(out)


def uncompressed_kernel(bzimage: Path, out: Path) -> None:
    """The ELF vmlinux inside Debian's xz-compressed bzImage.

    QEMU boots an ELF kernel with a PVH note directly (Debian: CONFIG_PVH=y),
    skipping SeaBIOS's loader and the in-guest xz decompression, which under
    TCG take much of the boot (benchmarks/bench_testbed.py: 8.4 s to ready
    instead of 13.4 s, 1.6x, on an idle-ish machine).
    """
    data = bzimage.read_bytes()
    start = data.find(XZ_MAGIC)
    if start < 0:
        raise OperationFailed(f"{bzimage}: no xz payload (kernel not xz-compressed)")
    elf = lzma.LZMADecompressor().decompress(data[start:])
    if not elf.startswith(b"\x7fELF"):
        raise OperationFailed(f"{bzimage}: xz payload is not an ELF kernel")
    out.write_bytes(elf)


def boot_files() -> BootFiles:
    """Kernel and initramfs, built once per recipe and cached."""
    kernel, release = host_kernel()
    modules = module_order(release)
    for rel in modules:
        if not rel.endswith(".ko"):
            raise OperationFailed(f"module {rel} is compressed; busybox insmod needs plain .ko")
    recipe = recipe_hash(kernel, release, modules)
    cache = cache_root() / recipe
    initramfs, vmlinux = cache / "initramfs.gz", cache / "vmlinux"
    if not (initramfs.exists() and vmlinux.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        build_initramfs(release, modules, initramfs)
        uncompressed_kernel(kernel, vmlinux.with_suffix(".part"))
        vmlinux.with_suffix(".part").replace(vmlinux)
    return BootFiles(vmlinux, initramfs, recipe)
