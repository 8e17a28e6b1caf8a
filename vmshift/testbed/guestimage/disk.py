"""Stage 2: a bootable BIOS disk from a root tree, then the VMDK forms.

The partition table (sfdisk on the image file) and the ext4 filesystem
(``mke2fs -d`` at the partition's offset) are made natively: guestfish
``tar-in`` of the ~800 MiB tree took over 9 minutes under TCG on a loaded
host, mke2fs takes seconds. libguestfs then does what needs the guest's own
tools and a real /dev/sda: ``grub-install`` and ``update-grub`` run by
guestfish ``command`` inside the guest tree. No loop device is involved: this
kernel creates no partition nodes for loop devices.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from vmshift.errors import OperationFailed
from vmshift.testbed.guestimage.rootfs import run_logged

FS_LABEL = "rootfs"
PART_START_SECTORS = 2048  # 1 MiB, as the Debian installer aligns; GRUB embeds before it
SECTOR = 512
BLOCK = 4096


def make_filesystem_disk(raw: Path, root: Path, size_gib: int, log: Path) -> None:
    """A sparse raw disk: one bootable MBR partition holding ext4 made from ``root``."""
    size = size_gib << 30
    with open(raw, "wb") as out:
        out.truncate(size)
    run_logged(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)], log,
               input_text=f"label: dos\nstart={PART_START_SECTORS}, type=83, bootable\n",
               what="sfdisk")
    offset = PART_START_SECTORS * SECTOR
    blocks = (size - offset) // BLOCK
    # -b matters: without it mke2fs reads the count as KiB, and the filesystem
    # would fill only a quarter of its partition (a nearly full root).
    run_logged(["mke2fs", "-q", "-F", "-t", "ext4", "-L", FS_LABEL, "-b", str(BLOCK),
                "-d", str(root), "-E", f"offset={offset}", str(raw), str(blocks)], log,
               what="mke2fs -d")


INSTALL_GRUB = Path(__file__).with_name("install-grub.sh")
GUEST_SCRIPT = "/vmshift-install-grub.sh"  # uploaded into the guest, removed afterwards


def grub_script(raw: Path) -> str:
    """guestfish commands: grub-install and update-grub from the guest's own tree."""
    return "\n".join([
        f'add-drive "{raw}" format:raw',
        "run",
        "mount /dev/sda1 /",
        f'upload "{INSTALL_GRUB}" {GUEST_SCRIPT}',
        f'command "/bin/sh {GUEST_SCRIPT}"',
        f"rm {GUEST_SCRIPT}",
        "umount-all",
        "shutdown",
        "",
    ])


def start_grub_install(raw: Path, *, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """Start guestfish on ``raw``; the caller waits, so both variants overlap."""
    script = raw.with_suffix(".guestfish")
    script.write_text(grub_script(raw))
    with open(log, "a") as out:
        out.write(f"\n$ guestfish -x -f {script}\n")
        out.flush()
        # The child keeps its own copy of the log's file descriptor.
        return subprocess.Popen(["guestfish", "-x", "-f", str(script)],
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, text=True,
                                start_new_session=True)


def wait_ok(proc: subprocess.Popen[str], what: str, log: Path) -> None:
    code = proc.wait()
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        raise OperationFailed(f"reference guest build: {what} failed (exit {code}); "
                              f"log {log}:\n{tail}")


def start_vmdk(raw: Path, vmdk: Path, subformat: str, log: Path) -> subprocess.Popen[str]:
    """qemu-img convert raw -> VMDK (streamOptimized or monolithicSparse), in the background."""
    argv = ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
            f"subformat={subformat},adapter_type=lsilogic", str(raw), str(vmdk)]
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
