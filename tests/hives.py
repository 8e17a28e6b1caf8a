"""Windows registry hives built for tests (a helper module, not tests).

hivex cannot create a hive from nothing, so ``empty_hive`` writes the
documented empty regf layout and hivex adds keys and values to it.
"""

from __future__ import annotations

import struct
from pathlib import Path

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7

# int -> REG_DWORD, str -> REG_SZ, list[str] -> REG_MULTI_SZ, bytes -> REG_BINARY,
# ("expand", text) -> REG_EXPAND_SZ
HiveValue = int | str | list[str] | bytes | tuple[str, str]


def empty_hive(root_name: str = "ROOT") -> bytes:
    """A minimal regf file: the base block and one hbin holding a root nk and its sk.

    Layout per the documented regf format: base block (checksum = XOR of the
    first 127 dwords), hbin header, then cells (negative size = allocated).
    hivex needs the root's security (sk) cell because new keys inherit it.
    """
    name = root_name.encode("ascii")
    nk_off = 0x20
    nk = bytearray(0x50 + ((len(name) + 7) // 8) * 8)
    sk_off = nk_off + len(nk)
    struct.pack_into("<i2sHQIIIIIIIIIIIIIIIHH", nk, 0, -len(nk), b"nk", 0x2C, 0, 0, 0, 0, 0,
                     0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFFFFFF, sk_off, 0xFFFFFFFF, 0, 0, 0, 0, 0,
                     len(name), 0)
    nk[0x50:0x50 + len(name)] = name
    descriptor = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 0)
    sk = bytearray(((0x18 + len(descriptor) + 7) // 8) * 8)
    struct.pack_into("<i2sHIIII", sk, 0, -len(sk), b"sk", 0, sk_off, sk_off, 1, len(descriptor))
    sk[0x18:0x18 + len(descriptor)] = descriptor
    hbin = bytearray(0x1000)
    struct.pack_into("<4sII", hbin, 0, b"hbin", 0, 0x1000)
    hbin[nk_off:nk_off + len(nk)] = nk
    hbin[sk_off:sk_off + len(sk)] = sk
    free = sk_off + len(sk)
    struct.pack_into("<i", hbin, free, 0x1000 - free)  # the rest: one free cell
    base = bytearray(0x1000)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 5, 0, 1, nk_off, 0x1000, 1)
    checksum = 0
    for (dword,) in struct.iter_unpack("<I", bytes(base[:0x1FC])):
        checksum ^= dword
    struct.pack_into("<I", base, 0x1FC, checksum)
    return bytes(base + hbin)


def _utf16z(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def _value(key: str, value: HiveValue) -> dict:
    """One hivex value dict; the Python type of ``value`` picks the registry type."""
    if isinstance(value, bool) or not isinstance(value, int | str | list | bytes | tuple):
        raise TypeError(f"{key}: unsupported registry value {value!r}")
    if isinstance(value, int):
        return {"key": key, "t": REG_DWORD, "value": value.to_bytes(4, "little")}
    if isinstance(value, str):
        return {"key": key, "t": REG_SZ, "value": _utf16z(value)}
    if isinstance(value, bytes):
        return {"key": key, "t": REG_BINARY, "value": value}
    if isinstance(value, tuple):
        kind, text = value
        if kind != "expand":
            raise TypeError(f"{key}: unknown tagged value {kind!r}")
        return {"key": key, "t": REG_EXPAND_SZ, "value": _utf16z(text)}
    # Each string NUL-terminated, then one more NUL ends the list.
    return {"key": key, "t": REG_MULTI_SZ,
            "value": b"".join(_utf16z(s) for s in value) + b"\0\0"}


def write_hive(path: Path, keys: dict[str, dict[str, HiveValue]]) -> None:
    """Create ``path`` with the given keys ("A\\B\\C" -> {value: data}); {} makes the key only."""
    import hivex  # Debian's python3-hivex, through --system-site-packages

    path.write_bytes(empty_hive())
    h = hivex.Hivex(str(path), write=True)
    for key, values in keys.items():
        node = h.root()
        for part in key.split("\\"):
            node = h.node_get_child(node, part) or h.node_add_child(node, part)
        if values:
            h.node_set_values(node, [_value(k, v) for k, v in values.items()])
    h.commit(None)


def pe32plus() -> bytes:
    """A minimal PE32+ x86-64 console image: libguestfs reads the arch from cmd.exe."""
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, 0, 0, 0, 0, 0xF0, 0x0022)
    opt = bytearray(0xF0)
    struct.pack_into("<H", opt, 0, 0x20B)  # PE32+
    struct.pack_into("<H", opt, 68, 3)  # console subsystem
    struct.pack_into("<I", opt, 108, 16)
    return bytes(dos) + coff + bytes(opt) + b"\0" * 512


# --- reading back (the tests' own decoding, independent of vmshift's) ---


def node(h, path: str):  # type: ignore[no-untyped-def]
    """The key at PATH ("A\\B") in an open hivex handle, or None."""
    n = h.root()
    for part in path.split("\\"):
        n = h.node_get_child(n, part)
        if n is None:
            return None
    return n


def values(h, path: str) -> dict[str, tuple[int, object]]:  # type: ignore[no-untyped-def]
    """{name: (type, decoded)} of one key."""
    n = node(h, path)
    assert n is not None, f"missing key {path}"
    out: dict[str, tuple[int, object]] = {}
    for v in h.node_values(n):
        t = h.value_type(v)[0]
        decoded = h.value_dword(v) if t == REG_DWORD else \
            multi_sz(h.value_value(v)[1]) if t == REG_MULTI_SZ else \
            h.value_value(v)[1] if t == REG_BINARY else h.value_string(v)
        out[h.value_key(v)] = (t, decoded)
    return out


def multi_sz(raw: bytes) -> list[str]:
    """REG_MULTI_SZ decoded by the format (hivex 1.3.23's value_multiple_strings adds a
    trailing "" to every properly terminated list)."""
    text = raw.decode("utf-16-le")
    assert text.endswith("\0\0") or text == "\0", f"bad REG_MULTI_SZ terminator: {raw!r}"
    return text[:-2].split("\0") if len(text) > 1 else []
