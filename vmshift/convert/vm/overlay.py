"""Stage 2: copy-on-write overlays, so the guest can be changed without touching the source.

Each source disk gets a qcow2 overlay whose backing file is the source, opened
read-only by QEMU. The appliance writes only to the overlays; the disk engine
then copies each overlay out, which flattens source plus changes into the new
disk. The overlays live in a work directory that is removed whatever happens.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from vmshift.errors import OperationFailed
from vmshift.inspect.probe import ImageProbe, probe_image


def work_dir(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="vmshift-convert-", dir=base))


def make_overlays(files: list[Path], work: Path, name: str) -> list[ImageProbe]:
    overlays = []
    for index, src in enumerate(files, start=1):
        probe = probe_image(str(src))  # bad input (not an image, broken VMDK) stops here
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
