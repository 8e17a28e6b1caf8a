"""Where a VMX ``fileName`` points.

Three spellings exist: relative to the VMX (``disk.vmdk``), an ESXi absolute
path (``/vmfs/volumes/DATASTORE/vm/disk.vmdk``), and vCenter's datastore
reference (``[DATASTORE] vm/disk.vmdk``). Relative names are resolved against
the VMX's directory and must stay inside it: a ``..`` that climbs out would
let a crafted VMX point the converter at any file on the host.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vmshift.errors import bad_input

DATASTORE_REF = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<rest>.*)$")
VMFS_PATH = re.compile(r"^/vmfs/volumes/(?P<ds>[^/]+)/(?P<rest>.+)$")
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class SourcePath:
    path: str  # absolute local path, /vmfs/volumes/... or "[ds] rest"
    datastore: str | None = None


def inside(rest: str) -> str | None:
    """``rest`` normalised, or None when its ``..`` components climb out of its base."""
    parts: list[str] = []
    for part in PurePosixPath(rest.replace("\\", "/")).parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != "/":
            parts.append(part)
    return "/".join(parts)


def resolve_file_name(vmx_path: Path, key: str, value: str, line: int | None) -> SourcePath:
    """Turn a fileName value into a SourcePath, refusing escapes (exit 2)."""
    if "\x00" in value:
        raise bad_input(vmx_path, f"{key}: NUL byte in path", line)
    ref = DATASTORE_REF.match(value)
    if ref:
        rest = inside(ref.group("rest"))
        if not rest:
            raise bad_input(vmx_path, f"{key} = {value!r}: path climbs out of its datastore",
                            line)
        return SourcePath(f"[{ref.group('ds')}] {rest}", ref.group("ds"))
    if value.startswith("/"):
        vmfs = VMFS_PATH.match(value)
        if vmfs:
            rest = inside(vmfs.group("rest"))
            if not rest:
                raise bad_input(vmx_path, f"{key} = {value!r}: path climbs out of its "
                                          "datastore", line)
            return SourcePath(f"/vmfs/volumes/{vmfs.group('ds')}/{rest}", vmfs.group("ds"))
        return SourcePath(value)
    if _WINDOWS_ABS.match(value):
        raise bad_input(vmx_path, f"{key} = {value!r}: a Windows absolute path cannot be "
                                  "resolved here; copy the disk next to the VMX", line)
    rest = inside(value)
    if rest is None:
        raise bad_input(vmx_path, f"{key} = {value!r}: relative path climbs out of the "
                                  "VMX's directory with '..' (refused)", line)
    if not rest:
        raise bad_input(vmx_path, f"{key}: empty file name", line)
    return SourcePath(os.path.join(os.path.dirname(os.path.abspath(vmx_path)), rest))
