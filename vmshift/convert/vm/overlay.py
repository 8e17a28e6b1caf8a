"""Stage 2: copy-on-write overlays, so the guest can be changed without touching the source.

Each source disk gets a qcow2 overlay whose backing file is the source, opened
read-only by QEMU. The appliance writes only to the overlays; the disk engine
then copies each overlay out, which flattens source plus changes into the new
disk. The overlays live in a work directory that is removed whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vmshift.confine import Policy
from vmshift.errors import OperationFailed
from vmshift.inspect.probe import ImageProbe, probe_image

PREFIX = "vmshift-convert-"


def work_dir(base: Path) -> Path:
    """A fresh work directory named after this process; those of dead runs go first.

    A run killed outright (SIGKILL, a power cut) cannot clean up after itself: the
    next run removes its overlays, which nothing else would ever read again.
    """
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"{PREFIX}*-*"):
        pid = old.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            remove(old)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_overlays(files: list[Path], work: Path, name: str,
                  policy: Policy | None = None) -> list[ImageProbe]:
    """POLICY: the devices --allow-device lets a source be (probed as the source was)."""
    overlays = []
    for index, src in enumerate(files, start=1):
        # bad input (not an image, broken VMDK, a device not allowed) stops here
        probe = probe_image(str(src), policy)
        overlay = work / f"{name}-disk{index}.qcow2"
        proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", probe.format,
                               "-b", str(src.resolve()), str(overlay)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise OperationFailed(f"cannot create an overlay over {src}: "
                                  f"{proc.stderr.strip()}")
        overlays.append(ImageProbe(str(overlay), "qcow2", probe.virtual_size, None, str(src)))
    return overlays


def remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
