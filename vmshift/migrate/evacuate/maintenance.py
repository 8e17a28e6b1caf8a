"""Hosts in maintenance, recorded in vmshift's state directory.

An evacuation with ``--mark-maintenance`` records its source host here;
later evacuations and plans place nothing on it until it is cleared. A host
is keyed by its libvirt host UUID (``/capabilities/host/uuid``): a URI or a
hostname can change or differ between admins, the UUID does not.

The file is ``$VMSHIFT_STATE_DIR/maintenance.json`` (default
``/var/lib/vmshift``). Every change is a read-modify-write under an flock on
``maintenance.json.lock`` beside it, and the new content is written to a
temporary file in the same directory, fsynced and renamed over the old one:
two evacuations marking at once both land, and a crash leaves the old or the
new file, never half of one. A file that cannot be read or parsed is an
error naming it; it is never silently reset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lxml import etree

from vmshift import locks
from vmshift.convert.safety import fsync_file, temp_name
from vmshift.errors import BadInput, OperationFailed

DEFAULT_STATE_DIR = "/var/lib/vmshift"
FILE_NAME = "maintenance.json"
FORMAT_VERSION = 1

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    uuid: str  # the host's libvirt UUID, lowercase
    uri: str  # as given when it was marked
    hostname: str
    since: str  # UTC, ISO 8601
    by: str  # the command line that marked it
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Connection(Protocol):
    """What host_uuid needs of a libvirt connection."""

    # libvirt's method names.
    def getCapabilities(self) -> str: ...

    def getURI(self) -> str: ...


def state_file() -> Path:
    """Where the maintenance state lives (read from the environment at each call)."""
    return Path(os.environ.get("VMSHIFT_STATE_DIR") or DEFAULT_STATE_DIR) / FILE_NAME


def mark(uuid: str, uri: str, hostname: str, reason: str, *, by: str | None = None) -> Entry:
    """Record the host UUID as in maintenance; BY defaults to this process's command
    line. Marking a host already in maintenance keeps its ``since`` (it has been in
    maintenance since then) and updates the rest."""
    key = canonical_uuid(uuid)
    entry = Entry(key, uri, hostname, _now(), by if by is not None else command_line(), reason)

    def change(hosts: dict[str, Entry]) -> Entry:
        old = hosts.get(key)
        hosts[key] = replace(entry, since=old.since) if old else entry
        return hosts[key]

    return _update(change)


def clear(uuid: str) -> Entry | None:
    """Take the host out of maintenance; the entry it had, or None when it had none."""
    key = canonical_uuid(uuid)
    return _update(lambda hosts: hosts.pop(key, None))


def get(uuid: str) -> Entry | None:
    return _read(state_file()).get(canonical_uuid(uuid))


def entries() -> list[Entry]:
    """Every host in maintenance, by UUID."""
    return sorted(_read(state_file()).values(), key=lambda e: e.uuid)


def host_uuid(conn: Connection) -> str:
    """The libvirt host UUID of CONN, from its capabilities XML."""
    try:
        caps = etree.fromstring(conn.getCapabilities().encode())
    except etree.XMLSyntaxError as exc:
        raise OperationFailed(f"{conn.getURI()}: unreadable capabilities XML: {exc}") from None
    text = (caps.findtext("host/uuid") or "").strip()
    if not text:
        raise OperationFailed(f"{conn.getURI()}: the host's capabilities carry no "
                              "/capabilities/host/uuid to key its maintenance state by")
    return canonical_uuid(text)


def canonical_uuid(text: str) -> str:
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise BadInput(f"host UUID {text!r}: not a UUID") from None


def command_line() -> str:
    """This process's command line as typed (``vmshift evacuate --source ...``)."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "vmshift"
    if prog in ("__main__.py", "-c", "-m"):  # python -m vmshift
        prog = "vmshift"
    return shlex.join([prog, *sys.argv[1:]])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _update(change: Callable[[dict[str, Entry]], T]) -> T:
    path = state_file()
    with _locked(path):
        hosts = _read(path)
        result = change(hosts)
        _write(path, hosts)
    return result


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # A lock file of its own: the state file is replaced by each write, so a lock
    # held on it would guard an inode the next writer no longer opens.
    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(locks.exclusive(path.with_name(path.name + ".lock")))
        except OSError as exc:
            raise OperationFailed(f"{path}: cannot lock the maintenance state: "
                                  f"{exc.strerror}") from None
        yield


def _read(path: Path) -> dict[str, Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise OperationFailed(f"{path}: cannot read the maintenance state: {why}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"{exc.msg} at line {exc.lineno}") from None
    return {e.uuid: e for e in _entries(path, doc)}


def _entries(path: Path, doc: Any) -> list[Entry]:
    hosts = doc.get("hosts") if isinstance(doc, dict) else None
    if not isinstance(hosts, list):
        raise _corrupt(path, "no 'hosts' list")
    names = [f.name for f in fields(Entry)]
    out = []
    for i, item in enumerate(hosts):
        if not isinstance(item, dict):
            raise _corrupt(path, f"hosts[{i}] is not an object")
        bad = [n for n in names if not isinstance(item.get(n), str)]
        if bad:
            raise _corrupt(path, f"hosts[{i}] has no text {bad[0]!r}")
        out.append(Entry(**{n: item[n] for n in names}))
    return out


def _corrupt(path: Path, what: str) -> OperationFailed:
    return OperationFailed(f"{path}: corrupt maintenance state ({what}); "
                           "fix or remove the file")


def _write(path: Path, hosts: dict[str, Entry]) -> None:
    doc = {"format_version": FORMAT_VERSION,
           "hosts": [hosts[k].as_dict() for k in sorted(hosts)]}
    tmp = temp_name(path)
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OperationFailed(f"{path}: cannot write the maintenance state: "
                              f"{exc.strerror}") from None
    with contextlib.suppress(OSError):  # the rename itself, durable
        fsync_file(path.parent)
