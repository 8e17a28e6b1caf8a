"""Datastore files over HTTPS (``/folder/<path>?dcPath=..&dsName=..``), resumable.

The same path ESXi and vCenter serve. A file is written to ``NAME.part`` and
renamed only when it is complete, so a file without ``.part`` is always whole;
an interrupted ``.part`` is continued with an HTTP Range request. A small
``.NAME.vmshift.json`` beside it remembers which version (ETag/Last-Modified)
of which datastore file the bytes belong to.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmshift.confine import Policy, Where, inside, mapped, plain_name
from vmshift.convert.vsphere.connection import Session
from vmshift.errors import OperationFailed
from vmshift.model import VirtualMachine

CHUNK = 1024 * 1024
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class DatastoreFile:
    datastore: str
    path: str  # inside the datastore, e.g. "vm1/vm1-flat.vmdk"
    size: int | None = None  # what vSphere's file layout says; the HTTP headers decide

    @classmethod
    def parse(cls, ref: str, size: int | None = None, *,
              where: Where | None = None) -> DatastoreFile:
        """'[ds] dir/file.vmdk' -> DatastoreFile('ds', 'dir/file.vmdk'); a datastore
        name that is not a plain name, or a path that climbs out of it, is refused."""
        where = where or Where(ref)
        if not ref.startswith("[") or "]" not in ref:
            raise where.refuse(f"not a datastore path: {ref!r} (expected '[datastore] path')")
        datastore, _, rest = ref[1:].partition("]")
        plain_name(datastore.strip(), where, "datastore name")
        path = inside(rest.strip())
        if not path:
            raise where.refuse(f"{ref!r}: path climbs out of its datastore")
        return cls(datastore.strip(), path, size)

    @property
    def ref(self) -> str:
        return f"[{self.datastore}] {self.path}"

    @property
    def basename(self) -> str:
        name = self.path.rsplit("/", 1)[-1]
        if name in ("", ".", "..") or "\\" in name:
            raise OperationFailed(f"refusing to write datastore file {self.ref!r} locally: "
                                  "its name is not a plain file name")
        return name


@dataclass
class Fetched:
    file: DatastoreFile
    local: Path
    size: int
    resumed_from: int  # bytes already on disk from an earlier, interrupted run
    skipped: bool = False  # already complete, same version as on the datastore
    restarted: bool = False  # a .part was discarded: the source changed since


class Throttle:
    """Caps the transfer rate (bytes/s) so a copy spares a production datastore."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def account(self, n: int) -> None:
        if not self.rate:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def confine_disks(vm: VirtualMachine, policy: Policy | None, *, must_exist: bool) -> None:
    """A vSphere VM's disk paths after the storage map (and ``--disk-dir``): a local
    one must stay inside a directory the user named (``vmshift.confine``)."""
    for disk in vm.disks or []:
        if not disk.source:
            continue
        where = Where(vm.source_ref or vm.name or "vSphere", None, disk.label)
        if disk.source.startswith("["):
            DatastoreFile.parse(disk.source, where=where)
        mapped(disk.source, None, where, policy, must_exist=must_exist)


def folder_url(file: DatastoreFile, dc_path: str) -> str:
    query = urllib.parse.urlencode({"dcPath": dc_path, "dsName": file.datastore})
    return f"/folder/{urllib.parse.quote(file.path)}?{query}"


def fetch(session: Session, file: DatastoreFile, dc_path: str, dest: Path,
          on_bytes: Callable[[int], None], throttle: Throttle) -> Fetched:
    """Download one datastore file into ``dest``, continuing a ``.part`` left behind.

    A ``.part`` is continued only with ``If-Range`` on the validator (ETag or
    Last-Modified) its first bytes came with, so a file that changed at the
    source since is fetched again from byte 0 instead of being spliced.
    """
    final = dest / file.basename
    part = dest / (file.basename + PART_SUFFIX)
    state_path = dest / f".{file.basename}.vmshift.json"
    state = _load_state(state_path)
    known = state.get("ref") == file.ref and state.get("validator")
    have = part.stat().st_size if part.exists() and known else 0
    conn = http.client.HTTPSConnection(session.endpoint.host, session.endpoint.port,
                                       context=session.context, timeout=60)
    try:
        headers = {"Cookie": session.cookie()}
        if have:
            headers.update({"Range": f"bytes={have}-", "If-Range": state["validator"]})
        conn.request("GET", folder_url(file, dc_path), headers=headers)
        response = conn.getresponse()
        start, total = _range_of(response, have, file)
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        restarted = bool(have) and start == 0  # changed at the source, or Range ignored
        have = start
        if not have and _complete(state, file, final, total, validator):
            response.close()
            return Fetched(file, final, final.stat().st_size, 0, skipped=True)
        _save_state(state_path, {"ref": file.ref, "validator": validator, "size": total,
                                 "complete": False})
        on_bytes(have)
        with part.open("r+b" if have else "wb") as out:
            out.truncate(have)
            out.seek(have)
            written = _copy(response, out, on_bytes, throttle)
            out.flush()
            os.fsync(out.fileno())
    finally:
        conn.close()
    size = have + written
    if total is not None and size != total:
        raise OperationFailed(f"download of {file.ref} stopped at {size} of {total} bytes; "
                              "run the same command again to resume")
    part.rename(final)
    _save_state(state_path, {"ref": file.ref, "validator": validator, "size": size,
                             "complete": True})
    return Fetched(file, final, size, have, restarted=restarted)


def _complete(state: dict, file: DatastoreFile, final: Path, total: int | None,
              validator: str | None) -> bool:
    """A finished copy of this very version of the file is already here."""
    return (bool(validator) and state.get("complete") is True and state.get("ref") == file.ref
            and state.get("validator") == validator and final.exists()
            and total is not None and final.stat().st_size == total == state.get("size"))


def _load_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.rename(path)


def _range_of(response: http.client.HTTPResponse, have: int,
              file: DatastoreFile) -> tuple[int, int | None]:
    """(first byte the body carries, total file size) from the response headers."""
    if response.status == 416 and have:
        # Nothing left past what we have: the .part is already whole.
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return have, int(total) if total.isdigit() else have
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # bytes a-b/total
        span, _, total = content_range.removeprefix("bytes ").partition("/")
        first = span.partition("-")[0]
        if not first.isdigit() or int(first) != have:
            raise OperationFailed(f"{file.ref}: server answered range {content_range!r} "
                                  f"to a request from byte {have}")
        return have, int(total) if total.isdigit() else None
    if response.status == 200:
        length = response.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None
    if response.status in (401, 403):
        raise OperationFailed(f"{file.ref}: access denied by the datastore "
                              f"(HTTP {response.status})")
    if response.status == 404:
        raise OperationFailed(f"{file.ref}: not found on the datastore (HTTP 404)")
    raise OperationFailed(f"{file.ref}: HTTP {response.status} {response.reason}")


def _copy(response: http.client.HTTPResponse, out, on_bytes: Callable[[int], None],  # type: ignore[no-untyped-def]
          throttle: Throttle) -> int:
    if response.status == 416:
        return 0
    written = 0
    while chunk := response.read(CHUNK):
        out.write(chunk)
        written += len(chunk)
        on_bytes(len(chunk))
        throttle.account(len(chunk))
    return written
