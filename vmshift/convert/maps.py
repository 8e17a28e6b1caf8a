"""Network and storage map files: where source networks and datastores land on KVM.

Format (both maps): CSV, one mapping per line, ``#`` starts a comment line,
blank lines are ignored::

    # network map: source,target[,network|bridge]
    VM Network,default
    dvportgroup-1285,br0,bridge

    # storage map: source,target[,dir|pool]
    datastore1,/srv/images
    /vmfs/volumes/san-lun7,/mnt/san
    LocalDS_0,vmshift-pool,pool

A network source is a network or portgroup name, a VDS portgroup key or a
switch uuid, or a connection kind (``nat``, ``hostonly``). A storage source is
a datastore name (matching ``[name] path`` and ``/vmfs/volumes/name/...``) or
an absolute path prefix; the longest matching prefix wins.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vmshift.convert.vmx.paths import DATASTORE_REF, VMFS_PATH, inside
from vmshift.errors import bad_input
from vmshift.model import Nic

MAX_MAP_BYTES = 1024 * 1024


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


@dataclass
class NetworkMap:
    entries: dict[str, NetTarget] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, str | tuple[str, str]]) -> NetworkMap:
        entries = {}
        for source, target in mapping.items():
            name, kind = (target, "network") if isinstance(target, str) else target
            entries[source] = NetTarget(name, kind)
        return cls(entries)

    def target_for(self, nic: Nic) -> NetTarget | None:
        """The first of the NIC's identities that the map names, or None."""
        for key in (nic.network, nic.portgroup_key, nic.distributed_switch,
                    nic.connection.value if nic.connection else None):
            if key and key in self.entries:
                return self.entries[key]
        return None


@dataclass
class StorageMap:
    datastores: dict[str, tuple[str, str]] = field(default_factory=dict)  # ds -> (kind, target)
    prefixes: dict[str, tuple[str, str]] = field(default_factory=dict)  # /abs/prefix -> ...

    def resolve(self, source: str) -> StorageTarget:
        """Where a source path ends up; ``unmapped`` keeps an absolute form of it."""
        datastore, rest = _split_datastore(source)
        if datastore is not None and rest is not None and datastore in self.datastores:
            return _target(self.datastores[datastore], rest)
        absolute = f"/vmfs/volumes/{datastore}/{rest}" if datastore else source
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if absolute == prefix or absolute.startswith(prefix.rstrip("/") + "/"):
                remainder = inside(absolute[len(prefix.rstrip("/")):])
                if remainder:
                    return _target(self.prefixes[prefix], remainder)
        return StorageTarget("unmapped", path=absolute)


def _split_datastore(source: str) -> tuple[str | None, str | None]:
    for pattern in (DATASTORE_REF, VMFS_PATH):
        match = pattern.match(source)
        if match:
            return match.group("ds"), inside(match.group("rest"))
    return None, None


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


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MAP_BYTES + 1)
    except OSError as exc:
        raise bad_input(path, f"cannot read map file: {exc.strerror}") from None
    if len(data) > MAX_MAP_BYTES or b"\x00" in data:
        raise bad_input(path, "not a map file (binary or larger than 1 MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_input(path, "not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader([line]))]
        if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
            raise bad_input(path, f"expected source,target[,type], found {line.strip()!r}",
                            number)
        rows.append((number, fields))
    return rows


def load_network_map(path: str | Path) -> NetworkMap:
    path = Path(path)
    netmap = NetworkMap()
    for number, fields in _rows(path):
        kind = fields[2].lower() if len(fields) == 3 else "network"
        if kind not in ("network", "bridge"):
            raise bad_input(path, f"type {fields[2]!r}: expected network or bridge", number)
        if fields[0] in netmap.entries:
            raise bad_input(path, f"{fields[0]!r} is mapped twice", number)
        netmap.entries[fields[0]] = NetTarget(fields[1], kind)
    return netmap


def load_storage_map(path: str | Path) -> StorageMap:
    path = Path(path)
    storage = StorageMap()
    for number, (source, target, *rest) in _rows(path):
        kind = rest[0].lower() if rest else "dir"
        if kind not in ("dir", "pool"):
            raise bad_input(path, f"type {rest[0]!r}: expected dir or pool", number)
        if kind == "dir" and not target.startswith("/"):
            raise bad_input(path, f"target {target!r}: a directory must be an absolute path",
                            number)
        table = storage.prefixes if source.startswith("/") else storage.datastores
        if source in table:
            raise bad_input(path, f"{source!r} is mapped twice", number)
        table[source] = (kind, target)
    return storage
