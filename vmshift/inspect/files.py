"""Read-only access to a guest's files, from the appliance or a directory tree.

The Linux and Windows readers only ever need "read this file, list this
directory". Keeping that behind a small interface lets the same readers run
over a libguestfs handle (the real path) and over an unpacked directory tree
(a mounted image, or a test's hand-made root).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any, Protocol

MAX_SYMLINKS = 40


class GuestFiles(Protocol):
    def read(self, path: str) -> bytes | None: ...  # None when missing or not a file
    def listdir(self, path: str) -> list[str]: ...  # [] when missing
    def is_dir(self, path: str) -> bool: ...
    def is_file(self, path: str) -> bool: ...
    def size(self, path: str) -> int | None: ...
    def fetch(self, path: str, dest: str) -> None: ...  # copy to a host file
    def head(self, path: str, count: int) -> bytes | None: ...


class GuestfsFiles:
    """Files of the guest mounted (read-only) at the appliance's /."""

    def __init__(self, g: Any) -> None:
        self.g = g

    def read(self, path: str) -> bytes | None:
        if not self.is_file(path):
            return None
        return bytes(self.g.read_file(path))

    def listdir(self, path: str) -> list[str]:
        return sorted(self.g.ls(path)) if self.is_dir(path) else []

    def is_dir(self, path: str) -> bool:
        return bool(self.g.is_dir(path, followsymlinks=True))

    def is_file(self, path: str) -> bool:
        return bool(self.g.is_file(path, followsymlinks=True))

    def size(self, path: str) -> int | None:
        return int(self.g.filesize(path)) if self.is_file(path) else None

    def fetch(self, path: str, dest: str) -> None:
        self.g.download(path, dest)

    def head(self, path: str, count: int) -> bytes | None:
        if not self.is_file(path):
            return None
        return bytes(self.g.pread(path, count, 0))


class DirFiles:
    """Files under a host directory treated as the guest's /.

    Absolute symlinks are resolved inside the root, as the guest would see
    them, so a link to /etc/shadow can never reach the host's.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _host(self, path: str) -> Path | None:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            if candidate.is_symlink():
                hops += 1
                if hops > MAX_SYMLINKS:
                    return None
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            resolved.append(part)
        return self.root.joinpath(*resolved)

    def read(self, path: str) -> bytes | None:
        host = self._host(path)
        return host.read_bytes() if host is not None and host.is_file() else None

    def listdir(self, path: str) -> list[str]:
        host = self._host(path)
        return sorted(os.listdir(host)) if host is not None and host.is_dir() else []

    def is_dir(self, path: str) -> bool:
        host = self._host(path)
        return host is not None and host.is_dir()

    def is_file(self, path: str) -> bool:
        host = self._host(path)
        return host is not None and host.is_file()

    def size(self, path: str) -> int | None:
        host = self._host(path)
        return host.stat().st_size if host is not None and host.is_file() else None

    def fetch(self, path: str, dest: str) -> None:
        data = self.read(path)
        if data is None:
            raise FileNotFoundError(path)
        Path(dest).write_bytes(data)

    def head(self, path: str, count: int) -> bytes | None:
        host = self._host(path)
        if host is None or not host.is_file():
            return None
        with host.open("rb") as f:
            return f.read(count)


def read_text(files: GuestFiles, path: str) -> str | None:
    data = files.read(path)
    return data.decode("utf-8", "replace") if data is not None else None


def glob_dir(files: GuestFiles, directory: str, suffix: str = "") -> list[str]:
    """Files directly in ``directory`` whose names end with ``suffix``, sorted."""
    return [posixpath.join(directory, n) for n in files.listdir(directory)
            if n.endswith(suffix) and files.is_file(posixpath.join(directory, n))]
