"""Tiny test-bed guest: boot to ready, direct ELF (PVH) kernel vs Debian's bzImage.

Side by side in one run, alternating, same initramfs, same QEMU flags (TCG):
the bed boots the ELF vmlinux unpacked from /boot/vmlinuz-* because SeaBIOS's
loader plus the in-guest xz decompression dominate a TCG boot.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmshift.testbed import tinyimage

ROUNDS = 2
TIMEOUT = 300


def boot_to_ready(kernel: Path, initramfs: Path) -> float:
    argv = ["qemu-system-x86_64", "-M", "pc", "-accel", "tcg", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
            "-initrd", str(initramfs), "-append",
            "console=ttyS0 quiet loglevel=1 8250.nr_uarts=1 mitigations=off vmshift.fill=128"]
    start = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert qemu.stdout is not None
        for raw in qemu.stdout:
            if b"VMSHIFT-READY" in raw:
                return time.monotonic() - start
            if time.monotonic() - start > TIMEOUT:
                break
        raise RuntimeError(f"{kernel.name}: no ready marker")
    finally:
        qemu.kill()
        qemu.wait()


def main() -> int:
    boot = tinyimage.boot_files()
    bzimage, _ = tinyimage.host_kernel()
    with tempfile.TemporaryDirectory() as tmp:
        # Copies, so both read from the same filesystem and page-cache state.
        elf, bz = Path(tmp) / "vmlinux", Path(tmp) / "vmlinuz"
        shutil.copyfile(boot.kernel, elf)
        shutil.copyfile(bzimage, bz)
        times: dict[str, list[float]] = {"elf-pvh": [], "bzimage": []}
        for _ in range(ROUNDS):
            times["elf-pvh"].append(boot_to_ready(elf, boot.initramfs))
            times["bzimage"].append(boot_to_ready(bz, boot.initramfs))
    best = {k: min(v) for k, v in times.items()}
    for name, runs in times.items():
        print(f"{name:8s} boot to ready: best {best[name]:.1f} s  runs "
              f"{', '.join(f'{t:.1f}' for t in runs)}")
    print(f"ratio bzimage/elf-pvh: {best['bzimage'] / best['elf-pvh']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
