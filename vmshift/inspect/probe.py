"""Check each disk with qemu-img before the appliance ever sees it.

Why first: a corrupt or non-image file would otherwise surface as an obscure
libguestfs error 15 s into a launch, or worse, as an "empty disk". qemu-img
names what is wrong in one line, and tells us the format, which is then
passed to libguestfs explicitly so that a raw disk whose first sector looks
like a qcow2 header can never be probed as one.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift import confine
from vmshift.errors import OperationFailed, bad_input

# File name suffixes that promise a structured image: if qemu-img finds only
# raw bytes behind them, the file is not what it claims to be.
STRUCTURED_SUFFIXES = {
    ".vmdk": "vmdk", ".qcow2": "qcow2", ".qcow": "qcow", ".vdi": "vdi",
    ".vhd": "vpc", ".vhdx": "vhdx", ".qed": "qed",
}
# Formats `qemu-img check` can walk; it finds metadata pointing past the end
# of a truncated file, which `qemu-img info` (header only) does not notice.
CHECKABLE = {"qcow2", "qed", "vdi", "vhdx", "vmdk", "parallels"}
QEMU_IMG_TIMEOUT = 300


@dataclass
class ImageProbe:
    path: str
    format: str
    virtual_size: int
    actual_size: int | None
    backing: str | None


def _qemu_img(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                              timeout=QEMU_IMG_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise OperationFailed("qemu-img is not installed (Debian package qemu-utils)") from exc
    except subprocess.TimeoutExpired as exc:
        raise OperationFailed(f"qemu-img {args[0]} {args[-1]} timed out") from exc


def _first_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "qemu-img could not read it"
    # qemu-img repeats the file name; keep the reason, the caller names the file.
    return re.sub(r"^qemu-img: ", "", lines[0])


def _check_vmdk(path: Path, policy: confine.Policy | None) -> None:
    """Walk a VMDK's descriptor chain before qemu-img opens it.

    qemu-img would follow an extent line anywhere on the host (``../../dev/sda``)
    and would only say "could not open" for a missing one; the VMDK descriptor
    parser refuses escapes and names the descriptor line instead.
    """
    from vmshift.convert import vmdk

    if not (path.suffix.lower() == ".vmdk" or vmdk.looks_like_text_descriptor(path)
            or vmdk.read_sparse_header(path) is not None):
        return
    chain = vmdk.resolve_chain(path, policy=policy)
    for desc in chain:
        for extent in vmdk.missing_extents(desc):
            raise bad_input(desc.path, f"extent file {extent.filename!r} is missing "
                                       f"({extent.path})", extent.line)


def _check_file(path: Path, policy: confine.Policy | None) -> None:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise bad_input(path, "no such file") from exc
    except OSError as exc:
        raise bad_input(path, f"cannot access: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise bad_input(path, "is a directory, not a disk image")
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        # Named on the command line, but a device is still read only when allowed.
        confine.check(path, [], confine.Where(path), policy)
    elif not stat.S_ISREG(st.st_mode):
        raise bad_input(path, "is not a regular file or block device")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise bad_input(path, "is an empty file, not a disk image")
    if not os.access(path, os.R_OK):
        raise bad_input(path, "is not readable")


_PROBED: dict[tuple[str, int, int, frozenset[str]], ImageProbe] = {}


def probe_image(path: str | os.PathLike[str],
                policy: confine.Policy | None = None) -> ImageProbe:
    """Validate one disk image; raise BadInput naming it when it is not usable.

    Its backing files are confined to its directory (``vmshift.confine``) and
    checked before qemu-img opens them. A file already probed unchanged (same
    mtime and size, same allowed devices) is not checked again: `qemu-img check`
    walks all metadata of a large image.
    """
    p = Path(path)
    _check_file(p, policy)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size,
           policy.devices if policy else frozenset())
    if key not in _PROBED:
        _PROBED[key] = _probe(p, policy)
    return _PROBED[key]


def _info(p: Path, fmt: str | None) -> dict[str, Any]:
    """One `qemu-img info` (never --backing-chain: confine opens the chain itself)."""
    info = _qemu_img(["info", "--output=json", *(["-f", fmt] if fmt else []), str(p)])
    if info.returncode != 0:
        raise bad_input(p, f"not a readable disk image: {_first_error_line(info.stderr)}")
    try:
        return dict(json.loads(info.stdout))
    except ValueError as exc:
        raise OperationFailed(f"qemu-img info {p}: unparseable output") from exc


def _probe(p: Path, policy: confine.Policy | None) -> ImageProbe:
    _check_vmdk(p, policy)
    data = confine.backing_chain(p, None, policy, _info)[0]
    fmt = str(data.get("format", ""))
    claimed = STRUCTURED_SUFFIXES.get(p.suffix.lower())
    if fmt == "raw" and claimed:
        raise bad_input(p, f"named like a {claimed} image but has no {claimed} header "
                           "(qemu-img sees raw bytes)")
    if fmt == "raw":
        _refuse_text(p)
    virtual = int(data.get("virtual-size") or 0)
    if virtual <= 0:
        raise bad_input(p, "disk image has a virtual size of 0")
    if fmt in CHECKABLE:
        _check_consistency(p, fmt)
    return ImageProbe(str(p), fmt, virtual, data.get("actual-size"),
                      data.get("full-backing-filename") or data.get("backing-filename"))


def _refuse_text(path: Path) -> None:
    """A raw "disk" that is plain text is a config file given by mistake (a .vmx, an OVF).

    Real raw disks start with a boot sector, a filesystem or zeros: binary.
    """
    with path.open("rb") as f:
        head = f.read(4096)
    if b"\0" in head:
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        raise bad_input(path, "is a text file, not a disk image (a .vmx must be the only "
                              "argument)")


def _check_consistency(path: Path, fmt: str) -> None:
    # Read-only: without -r, qemu-img check never repairs anything.
    res = _qemu_img(["check", "--output=json", "-f", fmt, str(path)])
    # 0 clean, 3 leaked clusters only (harmless), 63 format cannot be checked.
    if res.returncode in (0, 3, 63):
        return
    try:
        report = json.loads(res.stdout)
    except ValueError:
        report = {}
    if res.returncode == 2 or report.get("corruptions"):
        n = report.get("corruptions", "some")
        raise bad_input(path, f"corrupt or truncated {fmt} image ({n} corruptions found "
                              "by qemu-img check)")
    raise bad_input(path, f"{fmt} image could not be checked: {_first_error_line(res.stderr)}")
