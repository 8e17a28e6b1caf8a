"""Windows registry writes, applied with the appliance's hivex on the overlay.

A registry change is planned like any other guest change (an ``Edit`` with
the action "registry": the hive file, the key path and its values) so that
``--dry-run`` lists every key and value. Applying opens each hive once for a
run of consecutive changes to it and commits once: a SYSTEM hive is tens of
MiB, and every commit rewrites all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7
TYPE_NAMES = {REG_SZ: "REG_SZ", REG_EXPAND_SZ: "REG_EXPAND_SZ", REG_BINARY: "REG_BINARY",
              REG_DWORD: "REG_DWORD", REG_MULTI_SZ: "REG_MULTI_SZ"}

# (name, type, data): data is str, int, list[str] or bytes as the type says.
RegValue = tuple[str, int, Any]


def sz(name: str, text: str) -> RegValue:
    return (name, REG_SZ, text)


def expand_sz(name: str, text: str) -> RegValue:
    return (name, REG_EXPAND_SZ, text)


def dword(name: str, number: int) -> RegValue:
    return (name, REG_DWORD, number)


def multi_sz(name: str, items: Sequence[str]) -> RegValue:
    return (name, REG_MULTI_SZ, list(items))


def binary(name: str, data: bytes) -> RegValue:
    return (name, REG_BINARY, data)


def encode(vtype: int, data: Any) -> bytes:
    """The value's bytes as Windows stores them (UTF-16LE, NUL-terminated)."""
    if vtype in (REG_SZ, REG_EXPAND_SZ):
        return (str(data) + "\0").encode("utf-16-le")
    if vtype == REG_MULTI_SZ:
        return "".join(s + "\0" for s in data).encode("utf-16-le") + b"\0\0"
    if vtype == REG_DWORD:
        return int(data).to_bytes(4, "little")
    return bytes(data)


def show(value: RegValue) -> dict[str, Any]:
    """A value for reports and --dry-run: readable, JSON-safe."""
    name, vtype, data = value
    shown = data.hex() if isinstance(data, bytes) else data
    return {"name": name or "(default)", "type": TYPE_NAMES.get(vtype, str(vtype)),
            "data": shown}


def _key(g: Any, root: int, path: Sequence[str]) -> int:
    node = root
    for part in path:
        child = g.hivex_node_get_child(node, part)  # case-insensitive, as Windows
        node = child if child else g.hivex_node_add_child(node, part)
    return int(node)


def apply_group(g: Any, hive: str, changes: Sequence[tuple[Sequence[str], Sequence[RegValue]]]
                ) -> None:
    """Create each key (and its parents) in HIVE and set its values; one commit."""
    g.hivex_open(hive, write=True)
    try:
        root = g.hivex_root()
        for path, values in changes:
            node = _key(g, root, path)
            for name, vtype, data in values:
                g.hivex_node_set_value(node, name, vtype, encode(vtype, data))
        g.hivex_commit(None)
    finally:
        g.hivex_close()
