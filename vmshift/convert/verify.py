"""Proof that a converted disk holds exactly the source's content.

`qemu-img compare` reads both images through their format drivers, so a
VMDK source and a qcow2 output are compared guest-visible byte for guest-
visible byte; holes and zero clusters compare equal to written zeroes. An
upload is checked by reading the volume back through libvirt and comparing a
hole-independent hash with the local file that was sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vmshift.convert import qemuimg
from vmshift.errors import OperationFailed

if TYPE_CHECKING:
    from vmshift.convert import pool as poolmod


class VerificationFailed(OperationFailed):
    """The output differs from the source; the output has been removed."""


def verify_image(src: Path, src_fmt: str, dst: Path, dst_fmt: str,
                 on_progress: qemuimg.ProgressFn | None = None) -> None:
    """Raise VerificationFailed unless ``dst`` has the same content as ``src``."""
    same, message = qemuimg.compare(src, src_fmt, dst, dst_fmt, on_progress)
    if not same:
        raise VerificationFailed(f"verification failed: {dst} differs from {src} "
                                 f"({message})")


def verify_upload(target: poolmod.PoolTarget, vol: object, local: Path) -> None:
    """Raise VerificationFailed unless the volume reads back as ``local``."""
    from vmshift import volumes

    size = local.stat().st_size
    sent = volumes.file_hash(local)
    got = volumes.volume_hash(target.conn, vol, size).hexdigest()  # type: ignore[arg-type]
    if sent != got:
        raise VerificationFailed(f"verification failed: volume in pool {target.name} on "
                                 f"{target.uri} does not read back as uploaded")
