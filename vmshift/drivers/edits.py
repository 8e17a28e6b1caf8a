"""Guest changes as data: planned first, applied through the appliance second.

Every driver (Linux, Windows) only *plans*: it reads the guest's files and
returns ``Edit`` objects saying which file it writes, removes, copies or
uploads from the host, which registry key it sets, or which of the guest's
own tools it runs, and why. The plan is what
``--dry-run`` prints and what the report lists; ``apply_edits`` is the one
place that writes into the guest, always inside the copy-on-write overlay,
and it keeps a backup of every file it replaces.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmshift.drivers import registry
from vmshift.errors import OperationFailed

BACKUP_SUFFIX = ".vmshift-orig"


@dataclass(frozen=True)
class Edit:
    area: str  # blockdev, network, initramfs, bootloader, vmware_tools, guest_agent, ...
    action: str  # write, remove, copy, upload, symlink, run, registry
    path: str | None  # the guest file touched (run: the file the tool rewrites; registry: the hive)
    why: str
    content: bytes | None = None  # write
    source: str | None = None  # copy: from; upload: the host file; symlink: target
    argv: tuple[str, ...] | None = None  # run: the guest's own tool, chrooted
    backup: bool = True  # keep PATH.vmshift-orig when replacing or removing a file
    mode: int = 0o644
    key: tuple[str, ...] = ()  # registry: the key under the hive's root
    values: tuple[registry.RegValue, ...] = ()  # registry: set on that key

    def describe(self) -> str:
        what = {"write": f"write {self.path}", "remove": f"remove {self.path}",
                "copy": f"copy {self.source} to {self.path}",
                "upload": f"copy host:{self.source} to {self.path}",
                "symlink": f"link {self.path} -> {self.source}",
                "run": "run " + " ".join(self.argv or ()),
                "registry": f"set {self.path}:{chr(92).join(self.key)}"}[self.action]
        return f"{self.area}: {what} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"area": self.area, "action": self.action, "path": self.path,
                               "why": self.why}
        if self.argv:
            doc["argv"] = list(self.argv)
        if self.source:
            doc["source"] = self.source
        if self.action == "registry":
            doc["key"] = "\\".join(self.key)
            doc["values"] = [registry.show(v) for v in self.values]
        return doc


@dataclass
class Applied:
    edit: Edit
    seconds: float = 0.0
    output: str = ""
    backup: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = {**self.edit.as_dict(), "seconds": round(self.seconds, 2)}
        if self.backup:
            doc["backup"] = self.backup
        return doc


@dataclass
class EditPlan:
    edits: list[Edit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was checked and left alone

    def add(self, edit: Edit) -> None:
        self.edits.append(edit)

    def extend(self, other: EditPlan) -> None:
        self.edits.extend(other.edits)
        self.notes.extend(other.notes)

    def areas(self) -> set[str]:
        return {e.area for e in self.edits}


class PlannedFiles:
    """The guest's files as they will be once PLAN is applied.

    Several concerns edit the same file (/etc/default/grub: a device name, then
    the console): each planner reads through the edits already planned, so the
    last write carries every change, not just its own.
    """

    _REMOVED = b"\0vmshift-removed"

    def __init__(self, files: Any, plan: EditPlan) -> None:
        self.files, self.plan = files, plan

    def _planned(self, path: str) -> bytes | None:
        for e in reversed(self.plan.edits):
            if e.path == path and e.action == "write":
                return e.content or b""
            if e.path == path and e.action == "remove":
                return self._REMOVED
        return None

    def read(self, path: str) -> bytes | None:
        planned = self._planned(path)
        if planned is None:
            return self.files.read(path)  # type: ignore[no-any-return]
        return None if planned == self._REMOVED else planned

    def is_file(self, path: str) -> bool:
        planned = self._planned(path)
        return bool(self.files.is_file(path)) if planned is None else planned != self._REMOVED

    def __getattr__(self, name: str) -> Any:  # listdir, is_dir, size, fetch, head
        return getattr(self.files, name)


def _backup(g: Any, path: str) -> str | None:
    """Keep the guest's own file once; a rerun over the same overlay keeps the first copy."""
    if not g.is_file(path, followsymlinks=False) and not g.is_symlink(path):
        return None
    saved = path + BACKUP_SUFFIX
    if not g.exists(saved):
        g.cp_a(path, saved)
    return saved


def apply_edit(g: Any, edit: Edit) -> Applied:
    start = time.monotonic()
    done = Applied(edit)
    try:
        if edit.action == "write":
            done.backup = _backup(g, edit.path) if edit.backup else None
            g.mkdir_p(posixpath.dirname(edit.path))
            g.write(edit.path, edit.content or b"")
            g.chmod(edit.mode, edit.path)
        elif edit.action == "remove":
            done.backup = _backup(g, edit.path) if edit.backup else None
            g.rm_rf(edit.path)
        elif edit.action == "copy":
            g.mkdir_p(posixpath.dirname(edit.path))
            g.cp_a(edit.source, edit.path)
        elif edit.action == "upload":
            g.mkdir_p(posixpath.dirname(edit.path))
            g.upload(edit.source, edit.path)
        elif edit.action == "symlink":
            g.mkdir_p(posixpath.dirname(edit.path))
            g.ln_sf(edit.source, edit.path)
        elif edit.action == "run":
            if edit.path and edit.backup:
                done.backup = _backup(g, edit.path)
            done.output = str(g.command(list(edit.argv or ())))
        else:
            raise ValueError(f"unknown edit action {edit.action!r}")
    except RuntimeError as exc:
        raise OperationFailed(f"guest change failed: {edit.describe()}: {exc}") from exc
    done.seconds = time.monotonic() - start
    return done


def _apply_registry(g: Any, run: list[Edit]) -> list[Applied]:
    """Consecutive changes to one hive: backed up once, opened and committed once."""
    start = time.monotonic()
    hive = str(run[0].path)
    saved = _backup(g, hive)
    try:
        registry.apply_group(g, hive, [(e.key, e.values) for e in run])
    except RuntimeError as exc:
        raise OperationFailed(f"guest change failed: {run[0].describe()}: {exc}") from exc
    each = (time.monotonic() - start) / len(run)
    return [Applied(e, each, backup=saved) for e in run]


def apply_edits(g: Any, plan: EditPlan) -> list[Applied]:
    done: list[Applied] = []
    edits = list(plan.edits)
    while edits:
        edit = edits.pop(0)
        if edit.action != "registry":
            done.append(apply_edit(g, edit))
            continue
        run = [edit]
        while edits and edits[0].action == "registry" and edits[0].path == edit.path:
            run.append(edits.pop(0))
        done.extend(_apply_registry(g, run))
    return done


def mount_rw(g: Any, guest: Any) -> None:
    """Mount the guest's filesystems writable (on the overlay), / before /boot."""
    for mp in sorted(guest.mountpoints, key=len):
        try:
            g.mount(guest.mountpoints[mp], mp)
        except RuntimeError as exc:
            raise OperationFailed(f"cannot mount {guest.mountpoints[mp]} on {mp} "
                                  f"read-write in the overlay: {exc}") from exc


def change_guest(g: Any, guest: Any, plan: Callable[[], Any], *, dry_run: bool) -> Any:
    """Mount GUEST writable, call PLAN (a driver's result, with ``.plan`` and
    ``.applied``), and unless DRY_RUN apply it; unmounted whatever happens."""
    mount_rw(g, guest)
    try:
        result = plan()
        if not dry_run:
            result.applied = apply_edits(g, result.plan)
            g.sync()
    finally:
        g.umount_all()
    return result
