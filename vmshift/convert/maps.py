"""Network and storage maps: where source networks and datastores land on KVM.

One syntax for every command that takes ``--network-map`` or ``--storage-map``
(docs/maps.md): the value is a map file, or inline ``SRC=DST[,SRC=DST...]``.
A file holds one ``SRC=DST`` per line; blank lines and ``#`` comment lines are
ignored::

    # network map: DST is a libvirt network, network:NAME or bridge:NAME
    VM Network=default
    dvportgroup-1285=bridge:br0
    00:50:56:aa:bb:01=network:dmz

    # storage map: SRC is a datastore ([ds] or ds) or an absolute path prefix;
    # DST is a directory (dir:/path or /path) or pool:NAME
    datastore1=/srv/images
    [san-lun7] web=dir:/mnt/san/web
    LocalDS_0=pool:vmshift-pool

A network source is a MAC (one NIC), a network or portgroup name, a VDS
portgroup key or switch uuid, or a connection kind (``nat``, ``hostonly``);
the MAC wins over the names. For storage the longest matching prefix wins
(a datastore ``ds`` is the prefix ``/vmfs/volumes/ds``).

The CSV files of earlier versions (``source,target[,kind]``) are not read:
such a line is refused with a hint naming the new form, so that one syntax
(and one parser) remains.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vmshift import textfile
from vmshift.convert.vmx.paths import DATASTORE_REF, inside
from vmshift.errors import BadInput

if TYPE_CHECKING:
    from vmshift.model import Nic

MAX_MAP_BYTES = 1024 * 1024
NET_KINDS = ("network", "bridge")
STORAGE_KINDS = ("dir", "pool")
VMFS = "/vmfs/volumes/"
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_KIND = re.compile(r"^(?P<kind>[A-Za-z]+):(?P<name>.*)$")


@dataclass(frozen=True)
class NetTarget:
    name: str
    kind: str = "network"  # network | bridge


@dataclass(frozen=True)
class StorageTarget:
    kind: str  # file | volume | unmapped
    path: str | None = None  # for file (and unmapped: the source path as given)
    pool: str | None = None  # for volume
    volume: str | None = None


def _key(source: str) -> str:
    """MACs compare in lower case; every other source name as written."""
    return source.lower() if _MAC.match(source) else source


@dataclass
class NetworkMap:
    entries: dict[str, NetTarget] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, str | tuple[str, str]]) -> NetworkMap:
        entries = {}
        for source, target in mapping.items():
            name, kind = (target, "network") if isinstance(target, str) else target
            entries[_key(source)] = NetTarget(name, kind)
        return cls(entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def lookup(self, *keys: str | None) -> NetTarget | None:
        """The target of the first key the map names (a MAC, then names), or None."""
        for key in keys:
            if key and _key(key) in self.entries:
                return self.entries[_key(key)]
        return None

    def target_for(self, nic: Nic) -> NetTarget | None:
        """The first of the NIC's identities that the map names, or None."""
        return self.lookup(nic.mac, nic.network, nic.portgroup_key, nic.distributed_switch,
                           nic.connection.value if nic.connection else None)

    def describe(self) -> list[str]:
        return [f"{src} -> {t.kind}:{t.name}" for src, t in self.entries.items()]


@dataclass
class StorageMap:
    datastores: dict[str, tuple[str, str]] = field(default_factory=dict)  # ds -> (kind, target)
    prefixes: dict[str, tuple[str, str]] = field(default_factory=dict)  # /abs/prefix -> ...

    def resolve(self, source: str) -> StorageTarget:
        """Where a source path ends up; ``unmapped`` keeps an absolute form of it."""
        absolute = _absolute(source)
        table = {VMFS + ds: entry for ds, entry in self.datastores.items()} | self.prefixes
        for prefix in sorted(table, key=len, reverse=True):
            remainder = _below(absolute, prefix)
            if remainder:
                return _target(table[prefix], remainder)
        return StorageTarget("unmapped", path=absolute)

    def directories(self) -> list[str]:
        """Every directory the map names as a target (where mapped disks may live)."""
        entries = [*self.datastores.values(), *self.prefixes.values()]
        return sorted({target for kind, target in entries if kind == "dir"})


def _absolute(source: str) -> str:
    """``[ds] rest`` as its ESXi path; anything else as given."""
    match = DATASTORE_REF.match(source)
    return f"{VMFS}{match.group('ds')}/{match.group('rest')}" if match else source


def _below(path: str, prefix: str) -> str | None:
    """PATH relative to PREFIX, normalised; None (or '') when not strictly below it."""
    base = prefix.rstrip("/")
    return inside(path[len(base):]) if path.startswith(base + "/") else None


def _target(entry: tuple[str, str], rest: str) -> StorageTarget:
    kind, target = entry
    if kind == "pool":
        # A dir pool lists files, not subdirectories: the volume is the file name.
        return StorageTarget("volume", pool=target, volume=rest.rsplit("/", 1)[-1])
    return StorageTarget("file", path=str(Path(target) / rest))


def coerce_network_map(value: NetworkMap | Mapping[str, str] | None) -> NetworkMap:
    if value is None:
        return NetworkMap()
    if isinstance(value, NetworkMap):
        return value
    return NetworkMap.from_dict(value)


# --- the one parser ---------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    where: str  # "FILE:LINE" or "--network-map: entry N", for errors
    source: str
    kind: str
    target: str

    def error(self, what: str) -> BadInput:
        return BadInput(f"{self.where}: {what}")


def _file_lines(path: Path) -> Iterator[tuple[int, str]]:
    text = textfile.read_text(path, "map file", MAX_MAP_BYTES)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line.strip()


def _items(value: str, option: str) -> Iterator[tuple[str, str, bool]]:
    """(where, text, from_file) for each entry of a map file or an inline map."""
    path = Path(value)
    if _exists(path):
        if not path.is_file():
            raise BadInput(f"{option}: {value}: not a map file")
        for number, line in _file_lines(path):
            yield f"{value}:{number}", line, True
    elif "=" in value:
        for number, item in enumerate(value.split(","), start=1):
            yield f"{option}: entry {number}", item.strip(), False
    else:
        raise BadInput(f"{option}: no map file {value!r} (an inline map is "
                       "SRC=DST[,SRC=DST...])")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a long inline map, a NUL: not a file name
        return False


def _entries(value: str, option: str, kinds: tuple[str, ...]) -> Iterator[_Entry]:
    for where, text, from_file in _items(value, option):
        source, sep, target = (part.strip() for part in text.partition("="))
        if not sep or not source or not target:
            hint = (" (the old CSV form: write SRC=DST, see docs/maps.md)"
                    if from_file and "," in text and not sep else "")
            raise BadInput(f"{where}: expected SRC=DST, found {text[:80]!r}{hint}")
        kind, name = kinds[0], target
        match = _KIND.match(target)
        if match:
            kind, name = match.group("kind").lower(), match.group("name").strip()
            if kind not in kinds:
                raise BadInput(f"{where}: {target!r}: unknown kind {match.group('kind')!r}: "
                               f"expected {' or '.join(k + ':' for k in kinds)}")
        entry = _Entry(where, source, kind, name)
        if not name:
            raise entry.error(f"{target!r}: no {kind} name")
        yield entry


def parse_network_map(value: str, option: str = "--network-map") -> NetworkMap:
    """A map file or inline ``SRC=DST,...`` -> NetworkMap; BadInput names the entry."""
    netmap = NetworkMap()
    for entry in _entries(value, option, NET_KINDS):
        if "/" in entry.target or (entry.kind == "bridge" and (
                len(entry.target) > 15 or any(c.isspace() for c in entry.target))):
            raise entry.error(f"{entry.target!r} is not a valid {entry.kind} name")
        if _key(entry.source) in netmap.entries:
            raise entry.error(f"{entry.source!r} maps twice")
        netmap.entries[_key(entry.source)] = NetTarget(entry.target, entry.kind)
    return netmap


def parse_storage_map(value: str, option: str = "--storage-map") -> StorageMap:
    """A map file or inline ``SRC=DST,...`` -> StorageMap; BadInput names the entry."""
    storage, seen = StorageMap(), set[str]()
    for entry in _entries(value, option, STORAGE_KINDS):
        table, key, absolute = _storage_source(entry)
        if absolute in seen:
            raise entry.error(f"{entry.source!r} maps twice")
        seen.add(absolute)
        table_of = storage.datastores if table == "datastore" else storage.prefixes
        table_of[key] = (entry.kind, _storage_target(entry))
    return storage


def parse_priority_map(value: str, option: str = "--priority-file") -> dict[str, int]:
    """A map file or inline ``DOMAIN=PRIORITY,...`` -> {domain: priority}."""
    priorities: dict[str, int] = {}
    for entry in _entries(value, option, ("priority",)):
        try:
            priorities[entry.source] = int(entry.target)
        except ValueError:
            raise entry.error(f"{entry.target!r}: a priority is an integer") from None
    return priorities


def _storage_source(entry: _Entry) -> tuple[str, str, str]:
    """('datastore', name, its ESXi path) or ('prefix', path, path), normalised."""
    source = entry.source
    match = DATASTORE_REF.match(source)
    if match and "/" not in match.group("ds"):
        ds, rest = match.group("ds"), match.group("rest")
        source = f"{VMFS}{ds}/{rest}" if rest else ds
    if not source.startswith("/"):
        if "/" in source or "[" in source or "]" in source:
            raise entry.error(f"source {entry.source!r}: expected a datastore name, "
                              "[datastore] or an absolute path prefix")
        return "datastore", source, VMFS + source
    if ".." in source.split("/"):
        raise entry.error(f"source {entry.source!r}: '..' in a path prefix")
    prefix = "/" + (inside(source) or "")
    return "prefix", prefix, prefix


def _storage_target(entry: _Entry) -> str:
    if entry.kind == "pool":
        if "/" in entry.target:
            raise entry.error(f"pool {entry.target!r}: a pool name has no '/'")
        return entry.target
    if not entry.target.startswith("/") or ".." in entry.target.split("/"):
        raise entry.error(f"target {entry.target!r}: a directory must be an absolute path "
                          "without '..' (pool:NAME for a pool)")
    return "/" + (inside(entry.target) or "")


# --- the one option declaration -----------------------------------------------

class MapParam(click.ParamType):
    """A map value, parsed when the command line is: bad entries exit 2 on one line."""

    name = "map"

    def __init__(self, parse: Callable[[str, str], Any]) -> None:
        self.parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        if not isinstance(value, str):
            return value
        return self.parse(value, param.opts[0] if param else self.name)


_F = TypeVar("_F", bound=Callable[..., Any])


def network_map_option(what: str) -> Callable[[_F], _F]:
    """``--network-map MAP`` (a NetworkMap, or None) for every command that takes one."""
    return click.option(
        "--network-map", type=MapParam(parse_network_map), default=None, metavar="MAP",
        help=f"{what} MAP: a file, or SRC=DST[,SRC=DST...]; DST is a libvirt network, "
             "bridge:NAME or network:NAME (docs/maps.md).")


def storage_map_option(what: str) -> Callable[[_F], _F]:
    """``--storage-map MAP`` (a StorageMap, or None) for every command that takes one."""
    return click.option(
        "--storage-map", type=MapParam(parse_storage_map), default=None, metavar="MAP",
        help=f"{what} MAP: a file, or SRC=DST[,SRC=DST...]; SRC is a datastore or an "
             "absolute path prefix, DST a directory or pool:NAME (docs/maps.md).")
