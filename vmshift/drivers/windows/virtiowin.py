"""The virtio-win drivers: a directory or the ISO, read on the host.

The ISO is listed and extracted with xorriso, so the conversion's single
appliance launch is not spent on it (virt-v2v launches a second appliance
just to mount the ISO). Folder names are matched case-insensitively
(``NetKVM``), as the ISO's Joliet and Rock Ridge names differ in case.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vmshift.drivers.windows.catalogue import ARCH_FOLDERS, DRIVERS, QEMU_GA_MSI, Driver
from vmshift.errors import BadInput, OperationFailed


@dataclass
class Selection:
    """What one guest gets: each driver's folder and files, the agent's MSI."""

    os_folder: str | None = None  # the virtio-win OS folder used (2k19)
    drivers: dict[str, tuple[Driver, str, list[str]]] = field(default_factory=dict)
    qemu_ga: str | None = None  # the MSI's path in the tree
    missing: list[str] = field(default_factory=list)  # drivers with no folder for this OS


class VirtioWin:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.iso = path.is_file() or path.is_block_device()
        self.files = self._list()
        self._by_lower = {f.lower(): f for f in self.files}

    def _list(self) -> list[str]:
        if not self.iso:
            return sorted(str(PurePosixPath(os.path.relpath(os.path.join(d, f), self.path)))
                          for d, _, files in os.walk(self.path) for f in files)
        out = _xorriso(["-indev", str(self.path), "-find", "/", "-type", "f"], self.path)
        return sorted(line.strip().strip("'").lstrip("/") for line in out.splitlines()
                      if line.startswith("'/"))

    def folder_files(self, folder: str) -> list[str]:
        prefix = folder.lower().rstrip("/") + "/"
        return [f for f in self.files if f.lower().startswith(prefix)
                and "/" not in f[len(prefix):]]

    def select(self, folders: tuple[str, ...], arch: str) -> Selection:
        sel = Selection()
        arch_dir = ARCH_FOLDERS.get(arch)
        if arch_dir is None:
            sel.missing = [d.name for d in DRIVERS]
            return sel
        for driver in DRIVERS:
            for os_folder in folders:
                files = self.folder_files(f"{driver.folder}/{os_folder}/{arch_dir}")
                if files:
                    sel.drivers[driver.name] = (driver, os_folder, files)
                    sel.os_folder = sel.os_folder or os_folder
                    break
            else:
                sel.missing.append(driver.name)
        msi = QEMU_GA_MSI.get(arch)
        sel.qemu_ga = self._by_lower.get(f"guest-agent/{msi}".lower()) if msi else None
        return sel

    def extract(self, names: list[str], dest: Path) -> dict[str, Path]:
        """Host copies of NAMES (tree paths) under DEST."""
        if not self.iso:
            return {n: self.path / n for n in names}
        if names:
            _xorriso(["-osirrox", "on", "-indev", str(self.path), "-extract_l", "/",
                      str(dest), *("/" + n for n in names), "--"], self.path)
        return {n: dest / n for n in names}


def _xorriso(args: list[str], source: Path) -> str:
    try:
        done = subprocess.run(["xorriso", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OperationFailed("xorriso is not installed (make setup installs it); it "
                              "reads the virtio-win ISO") from None
    # A file that is no ISO is "a blank image" to xorriso, exit 0: its warning tells.
    if done.returncode != 0 or "No ISO 9660 image" in done.stderr:
        last = next((ln for ln in done.stderr.splitlines() if "WARNING" in ln or "FAILURE" in ln),
                    (done.stderr.strip().splitlines() or ["?"])[-1])
        raise BadInput(f"--virtio-win {source}: not a readable ISO 9660 image: {last.strip()}")
    return done.stdout


def open_virtio_win(path: Path) -> VirtioWin:
    if not path.exists():
        raise BadInput(f"--virtio-win {path}: no such file or directory")
    tree = VirtioWin(path)
    if not tree.files:
        raise BadInput(f"--virtio-win {path}: holds no files")
    return tree
