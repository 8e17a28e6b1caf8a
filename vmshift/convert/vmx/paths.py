"""Where a VMX ``fileName`` points, confined (``vmshift.confine``).

Three spellings exist: relative to the VMX (``disk.vmdk``), an ESXi absolute
path (``/vmfs/volumes/DATASTORE/vm/disk.vmdk``), and vCenter's datastore
reference (``[DATASTORE] vm/disk.vmdk``). A local path, after the storage
map, must stay inside the VMX's directory or a directory the user named: a
crafted VMX must not point the converter (or a guest) at any file or device
of the host.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vmshift.confine import Policy, Where, inside, mapped, plain_name, relative

DATASTORE_REF = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<rest>.*)$")
VMFS_PATH = re.compile(r"^/vmfs/volumes/(?P<ds>[^/]+)/(?P<rest>.+)$")
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")

__all__ = ["DATASTORE_REF", "VMFS_PATH", "SourcePath", "inside", "resolve_file_name"]


@dataclass(frozen=True)
class SourcePath:
    path: str  # absolute local path, /vmfs/volumes/... or "[ds] rest"
    datastore: str | None = None


def resolve_file_name(vmx_path: Path, key: str, value: str, line: int | None,
                      policy: Policy | None = None, *, must_exist: bool = False) -> SourcePath:
    """Turn a fileName value into a SourcePath, refusing escapes and devices (exit 2).

    ``must_exist``: the file must be here (inspect, convert); vmx2xml only
    translates, so there a missing file, or one on an unmapped datastore, is fine.
    """
    where = Where(vmx_path, line, key)
    base = Path(os.path.dirname(os.path.abspath(vmx_path)))
    source = _spelled(where, base, value)
    mapped(source.path, base, where, policy, must_exist=must_exist)
    return source


def _spelled(where: Where, base: Path, value: str) -> SourcePath:
    if "\x00" in value:
        raise where.refuse("NUL byte in path")
    ref = DATASTORE_REF.match(value) or VMFS_PATH.match(value)
    if ref:
        datastore = plain_name(ref.group("ds").strip(), where, "datastore name")
        rest = inside(ref.group("rest"))
        if not rest:
            raise where.refuse(f"{value!r}: path climbs out of its datastore")
        if value.startswith("["):
            return SourcePath(f"[{datastore}] {rest}", datastore)
        return SourcePath(f"/vmfs/volumes/{datastore}/{rest}", datastore)
    if value.startswith("/vmfs/"):
        # An ESXi device path (/vmfs/devices/...): remote, left to the caller's note.
        rest = inside(value[len("/vmfs/"):])
        if not rest or ".." in value.replace("\\", "/").split("/"):
            raise where.refuse(f"{value!r}: path climbs out of /vmfs with '..'")
        return SourcePath(f"/vmfs/{rest}")
    if _WINDOWS_ABS.match(value):
        raise where.refuse(f"{value!r}: a Windows absolute path cannot be resolved here; "
                           "copy the disk next to the VMX")
    return SourcePath(str(relative(base, value, where, absolute_ok=True)))
