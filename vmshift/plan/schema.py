"""The plan CSV format as data: its columns, what each cell may hold, and the
parser of each (docs/plan.md).

A parser takes the cell's text (stripped) and returns its value, or raises
ValueError whose message is what the validator reports for that cell. Rules
that need more than one cell of a row (a storage move needs a pool, a live
migration a libvirt source) are ``row_problems``; rules across rows (duplicate
VMs, waves, dependency cycles) live in vmshift.plan.validate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from vmshift import units
from vmshift.convert.disks import OUTPUT_FORMATS
from vmshift.convert.maps import NetworkMap, parse_network_map
from vmshift.errors import BadInput
from vmshift.migrate.policies import POLICIES

COLUMNS = ("wave", "vm", "source", "type", "target", "target_pool", "network_map", "format",
           "bandwidth", "max_downtime", "policy", "window_start", "window_end", "priority",
           "depends_on", "notes")
REQUIRED_COLUMNS = ("wave", "vm", "source", "type")
TYPES = ("v2v", "live", "offline", "suspended", "storage")
MIGRATIONS = ("live", "offline", "suspended")  # libvirt host to libvirt host

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # waves and pools
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DEPENDS_SEPARATORS = re.compile(r"[\s,;|]+")


@dataclass(frozen=True)
class Source:
    kind: str  # vmx | vsphere | libvirt
    text: str  # as written in the plan
    host: str | None = None  # vsphere: the vCenter/ESXi; libvirt: the URI itself
    vm: str | None = None  # vsphere: the VM's name (or inventory path)
    path: Path | None = None  # vmx: the file, relative paths resolved against the plan


@dataclass
class PlanRow:
    """One row; a cell that did not parse leaves its field None (its problem is
    reported), so checks across rows can still look at the others."""

    line: int
    wave: str | None = None
    vm: str | None = None
    source: Source | None = None
    type: str | None = None
    target: str | None = None
    target_pool: str | None = None
    network_map: NetworkMap | None = None
    network_map_text: str = ""
    format: str | None = None
    bandwidth: int | None = None  # bytes per second
    max_downtime: int | None = None  # ms
    policy: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)


# --- one parser per column ------------------------------------------------------

def parse_wave(text: str) -> str:
    if not _NAME.match(text):
        raise ValueError(f"{text!r} is not a wave name (letters, digits, '.', '_', '-')")
    return text


def parse_vm(text: str) -> str:
    if "/" in text or any(ord(c) < 32 for c in text):
        raise ValueError(f"{text!r} is not a VM name (no '/' or control characters)")
    return text


def parse_source(text: str, base: Path) -> Source:
    """A VMX path, vsphere://HOST/VMNAME or a libvirt URI; credentials are refused."""
    if text.lower().startswith("vsphere://"):
        parts = urlsplit(text)
        if "@" in parts.netloc:
            raise ValueError("credentials in a vsphere:// source are refused (they come "
                             "from a profile, never from the plan)")
        vm = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not vm:
            raise ValueError(f"{text!r}: expected vsphere://HOST/VMNAME")
        return Source("vsphere", text, host=parts.hostname, vm=vm)
    if _URI.match(text):
        return Source("libvirt", parse_uri(text), host=text)
    if text.lower().endswith(".vmx"):
        path = Path(text) if Path(text).is_absolute() else base / text
        if not path.is_file():
            raise ValueError(f"no VMX file {text!r}")
        return Source("vmx", text, path=path)
    raise ValueError(f"{text!r} is not a VMX path, vsphere://HOST/VMNAME or a libvirt URI")


def parse_uri(text: str) -> str:
    """A libvirt URI (qemu+ssh://host/system...), without a password in it."""
    if not _URI.match(text) or text.lower().startswith("vsphere://"):
        raise ValueError(f"{text!r} is not a libvirt URI (e.g. qemu+ssh://HOST/system)")
    userinfo = urlsplit(text).netloc.rpartition("@")[0]
    if ":" in userinfo:
        raise ValueError("a password in the URI is refused (use SSH keys or TLS "
                         "certificates)")
    return text


def parse_type(text: str) -> str:
    return _choice(text, TYPES, "type")


def parse_pool(text: str) -> str:
    if not _NAME.match(text):
        raise ValueError(f"{text!r} is not a pool name")
    return text


def parse_format(text: str) -> str:
    return _choice(text, OUTPUT_FORMATS, "format")


def parse_policy(text: str) -> str:
    return _choice(text, tuple(POLICIES), "policy")


def parse_max_downtime(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{text!r} is not a downtime in milliseconds (a whole number > 0)")
    return int(text)


def parse_priority(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a priority (a whole number)") from None


def parse_time(text: str) -> datetime:
    """ISO 8601 with an offset: a time without one means a different moment on
    every host, so it is refused."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time "
                         "(e.g. 2025-03-01T22:00+01:00)") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (add one: +01:00, Z)")
    return moment


def parse_depends(text: str) -> tuple[str, ...]:
    names = tuple(n for n in _DEPENDS_SEPARATORS.split(text) if n)
    for name in names:
        parse_wave(name)
    return names


def network_map_value(text: str, base: Path) -> str:
    """What a network_map cell means to the map parser: a map file's path (a
    relative one resolved against the plan's directory), else the inline map."""
    candidate = Path(text) if Path(text).is_absolute() else base / text
    return str(candidate) if _is_file(candidate) else text


def parse_network_map_cell(text: str, base: Path, cache: dict[str, Any]) -> NetworkMap:
    """A map file (relative to the plan's directory) or an inline map, read by the
    one map parser; a file named on many rows is read once."""
    value = network_map_value(text, base)
    if value not in cache:
        try:
            cache[value] = parse_network_map(value, option="network_map")
        except BadInput as exc:
            cache[value] = ValueError(exc.message.removeprefix("network_map: "))
    result = cache[value]
    if isinstance(result, ValueError):
        raise result
    return result


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # an inline map is no file name
        return False


def _choice(text: str, allowed: tuple[str, ...], what: str) -> str:
    if text not in allowed:
        raise ValueError(f"unknown {what} {text!r} (expected {', '.join(allowed)})")
    return text


# column -> (PlanRow field, parser(text, context) -> value)
Parser = Callable[[str, "CellContext"], Any]


@dataclass
class CellContext:
    base: Path  # the plan's directory: relative paths are relative to it
    map_cache: dict[str, Any] = field(default_factory=dict)


PARSERS: dict[str, Parser] = {
    "wave": lambda t, c: parse_wave(t),
    "vm": lambda t, c: parse_vm(t),
    "source": lambda t, c: parse_source(t, c.base),
    "type": lambda t, c: parse_type(t),
    "target": lambda t, c: parse_uri(t),
    "target_pool": lambda t, c: parse_pool(t),
    "network_map": lambda t, c: parse_network_map_cell(t, c.base, c.map_cache),
    "format": lambda t, c: parse_format(t),
    "bandwidth": lambda t, c: units.parse_bandwidth(t),
    "max_downtime": lambda t, c: parse_max_downtime(t),
    "policy": lambda t, c: parse_policy(t),
    "window_start": lambda t, c: parse_time(t),
    "window_end": lambda t, c: parse_time(t),
    "priority": lambda t, c: parse_priority(t),
    "depends_on": lambda t, c: parse_depends(t),
    "notes": lambda t, c: t,
}


# --- rules within one row -------------------------------------------------------

def row_problems(row: PlanRow, given: set[str]) -> list[tuple[str, str]]:
    """(column, message) for combinations that make no sense. GIVEN: the columns
    whose cell is not empty (a cell that did not parse has its own problem)."""
    out: list[tuple[str, str]] = []
    src = row.source
    if row.type == "v2v" and src is not None and src.kind == "libvirt":
        out.append(("type", "v2v converts from a VMX file or vSphere; this source is "
                    "a libvirt host (use live, offline, suspended or storage)"))
    if row.type in (*MIGRATIONS, "storage") and src is not None and src.kind != "libvirt":
        out.append(("type", f"{row.type} moves a domain of a libvirt host; this source is "
                    f"{'a VMX file' if src.kind == 'vmx' else 'vSphere'} (use v2v)"))
    if row.type in (*MIGRATIONS, "v2v") and "target" not in given:
        out.append(("target", f"a {row.type} row needs a target libvirt URI"))
    if row.type in MIGRATIONS and src is not None and row.target == src.host:
        out.append(("target", "the target is the source host"))
    if row.type == "storage" and row.target and src is not None and row.target != src.host:
        out.append(("target", "a storage move stays on its host: leave target empty "
                    "or give the source URI"))
    if row.type in ("storage", "v2v") and "target_pool" not in given:
        out.append(("target_pool", f"a {row.type} row needs a target_pool"))
    for column in ("max_downtime", "policy"):
        if column in given and row.type is not None and row.type != "live":
            out.append((column, f"{column} applies to live migrations only"))
    if row.window_start and row.window_end and row.window_end <= row.window_start:
        out.append(("window_end", f"the window ends ({row.window_end.isoformat()}) "
                    f"before it starts ({row.window_start.isoformat()})"))
    return out
