"""Confinement: every disk path a definition names stays where the user put it.

A VM definition (a VMX, an OVF, a VMDK descriptor, a qcow2 header, a vSphere
layout) is untrusted input: a crafted one could hand the host's own disk, or
``/etc/shadow``, to a guest. So every file such a definition names must,
after any storage mapping, be a regular file inside the definition's own
directory or inside a directory the user named (a ``--storage-map`` target,
``--disk-dir``):

- a ``..`` may not climb out, neither in the name as written nor in the real
  path (so a symlink cannot leave the directory either);
- a block or character device is refused unless ``--allow-device`` names that
  very device (a physical-to-virtual conversion needs it; nothing else does).

This module is the one implementation: the VMX, OVF, VMDK, qcow2 backing
chain and vSphere readers all call it. A refusal is ``BadInput`` (exit 2)
naming the file, the line and the key that named the path.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from vmshift.errors import BadInput, bad_input

if TYPE_CHECKING:  # maps imports the VMX path helpers, which import this module
    from vmshift.convert.maps import StorageMap

_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # nbd:, json:, http://, ...


@dataclass(frozen=True)
class Where:
    """Who named a path: the definition file, its line and the key (for the message)."""

    file: str | os.PathLike[str]
    line: int | None = None
    key: str | None = None

    def refuse(self, what: str) -> BadInput:
        return bad_input(self.file, f"{self.key}: {what}" if self.key else what, self.line)


@dataclass(frozen=True)
class Policy:
    """What the command line allows beyond the definition's own directory."""

    dirs: tuple[Path, ...] = ()  # directories the user named (--disk-dir, map targets)
    devices: frozenset[str] = frozenset()  # --allow-device, as real paths
    storage_map: StorageMap | None = None

    @classmethod
    def of(cls, *, storage_map: StorageMap | None = None, disk_dirs: Iterable[Any] = (),
           devices: Iterable[str] = ()) -> Policy:
        named = [Path(d) for d in disk_dirs]
        if storage_map is not None:
            named += [Path(p) for p in storage_map.directories()]
        return cls(tuple(named), frozenset(os.path.realpath(d) for d in devices), storage_map)


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


def plain_name(name: str, where: Where, what: str) -> str:
    """A single path component (a datastore name): no '/', '\\', '.' or '..'."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise where.refuse(f"{what} {name!r} is not a plain name ('..' and '/' are "
                           "refused)")
    return name


def relative(base: Path, name: str, where: Where, *, what: str = "path",
             absolute_ok: bool = False) -> Path:
    """``name`` as written, resolved against ``base``: a remote or climbing name is
    refused, an absolute one too unless ``absolute_ok`` (checked on the text; ``check``
    then checks the real path)."""
    if "\x00" in name:
        raise where.refuse(f"NUL byte in {what}")
    if absolute_ok and name.startswith("/"):
        return _kernel_agrees(Path(name), Path(os.path.normpath(name)), name, where, what)
    if name.startswith(("/", "\\\\")) or _WINDOWS_ABS.match(name):
        raise where.refuse(f"{what} {name!r} is absolute; only paths inside {base} are "
                           "accepted")
    if _REMOTE.match(name):
        raise where.refuse(f"{what} {name!r} is not a local file name; only paths inside "
                           f"{base} are accepted")
    rest = inside(name)
    if rest is None:
        raise where.refuse(f"{what} {name!r} climbs out of {base} with '..'; refused")
    if not rest:
        raise where.refuse(f"empty {what}")
    raw = base.joinpath(*PurePosixPath(name.replace("\\", "/")).parts)
    return _kernel_agrees(raw, Path(os.path.normpath(base / rest)), name, where, what)


def _kernel_agrees(raw: Path, normal: Path, name: str, where: Where, what: str) -> Path:
    """The kernel resolves 'a/..' through a symlink 'a' to wherever 'a' points; the
    normalised name hides that. With '..' present, both readings must agree."""
    if ".." in raw.parts and os.path.realpath(raw) != os.path.realpath(normal):
        raise where.refuse(f"{what} {name!r} goes through a symlink and '..' to "
                           f"{os.path.realpath(raw)}; refused")
    return normal


def check(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]],
          where: Where, policy: Policy | None = None, *, must_exist: bool = True) -> None:
    """Refuse ``path`` unless it is (or, with ``must_exist`` False, would be) a regular
    file inside one of ``roots`` or ``policy.dirs``, or a device ``policy`` allows."""
    policy = policy or Policy()
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise where.refuse(f"{path}: cannot access: {exc.strerror}") from None
    if st is not None and (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        _device(path, st, where, policy)
        return
    _contained(path, [*roots, *policy.dirs], where)
    if st is None:
        if must_exist:
            raise where.refuse(f"disk file {path} does not exist")
        return
    if not stat.S_ISREG(st.st_mode):
        raise where.refuse(f"{path} is {_kind(st.st_mode)}, not a regular file")


def _device(path: str, st: os.stat_result, where: Where, policy: Policy) -> None:
    if os.path.realpath(path) in policy.devices:
        return
    kind = "a block device" if stat.S_ISBLK(st.st_mode) else "a character device"
    raise where.refuse(f"{path} is {kind}; pass --allow-device {path} to use it")


def _contained(path: str, roots: list[str | os.PathLike[str]], where: Where) -> None:
    real = os.path.realpath(path)
    lexical = False
    for root in roots:
        root_abs = os.path.abspath(root)
        root_real = os.path.realpath(root)
        if os.path.commonpath([real, root_real]) == root_real:
            return
        lexical = lexical or os.path.commonpath([path, root_abs]) == root_abs
    shown = ", ".join(dict.fromkeys(str(os.path.abspath(r)) for r in roots)) or (
        "every directory the command line named")
    if lexical:
        raise where.refuse(f"{path} leaves {shown} through a symlink (to {real}); refused")
    raise where.refuse(f"{path} is outside {shown}; a disk must be inside the "
                       "definition's directory or a directory named by --storage-map or "
                       "--disk-dir")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def is_remote(path: str) -> bool:
    """An ESXi datastore path that no storage map sent anywhere local."""
    return path.startswith("/vmfs/") or path.startswith("[")


def mapped(source: str, base: Path | None, where: Where, policy: Policy | None, *,
           must_exist: bool) -> None:
    """Check a disk ``source`` after the storage map: the mapped file must be confined.

    A datastore path no map entry sends anywhere is left to the caller's note when
    the disk need not exist (translating a definition), and refused otherwise.
    """
    policy = policy or Policy()
    storage = policy.storage_map
    if storage is None:
        from vmshift.convert.maps import StorageMap

        storage = StorageMap()
    target = storage.resolve(source)
    if target.kind == "volume":
        return  # a libvirt pool volume: libvirt, not a path, names it
    path = target.path or source
    if target.kind == "unmapped" and is_remote(path):
        if must_exist:
            raise where.refuse(f"{source} is on an ESXi datastore, not a local file; "
                               "copy the VM's folder here, map the datastore with "
                               "--storage-map, or use `vmshift vsphere download`")
        return
    check(path, [base] if base is not None else [], where, policy, must_exist=must_exist)


def backing_chain(top: Path, fmt: str | None, policy: Policy | None,
                  info: Callable[[Path, str | None], dict[str, Any]],
                  *, max_depth: int = 64) -> list[dict[str, Any]]:
    """qemu-img's view of ``top`` and of each backing file, top first, each backing
    file checked *before* it is opened: it must lie inside the top image's directory
    (``qemu-img info --backing-chain`` would open ``/etc/shadow``, or block on a FIFO).

    ``info(path, fmt)`` is one ``qemu-img info`` without ``--backing-chain``.
    """
    base = Path(os.path.abspath(top)).parent
    images, current, current_fmt = [], Path(top), fmt
    seen = {os.path.realpath(top)}
    while True:
        data = info(current, current_fmt)
        images.append(data)
        name = data.get("backing-filename")
        if not name:
            return images
        where = Where(current, None, "backing file")
        nxt = relative(Path(os.path.abspath(current)).parent, str(name), where,
                       what="path", absolute_ok=True)
        check(nxt, [base], where, policy, must_exist=True)
        if os.path.realpath(nxt) in seen or len(images) > max_depth:
            raise where.refuse(f"{name!r}: the backing chain loops")
        seen.add(os.path.realpath(nxt))
        current, current_fmt = nxt, data.get("backing-filename-format")


def allow_device_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--allow-device PATH (repeatable), the same on every command that reads disks."""
    import click

    return click.option("--allow-device", "allow_devices", multiple=True, metavar="PATH",
                        help="Let a definition use this block or character device "
                             "(repeatable; any other device is still refused).")(f)
