"""Progress of a disk run: one bar per disk and phase, plus a total.

qemu-img -p reports a percentage of its own work; it is turned into bytes of
the disk's virtual size so that the bars show bytes, rate and ETA, and the
total adds up across disks converted in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from vmshift.output import Progress


class DiskProgress:
    def __init__(self, jobs: list[Any], *, json_mode: bool) -> None:
        self.jobs, self.json_mode = jobs, json_mode
        self._lock = threading.Lock()
        self._bars: dict[tuple[int, str], Progress] = {}
        self._done = [0.0] * len(jobs)
        self._last: dict[tuple[int, str], float] = {}
        sizes = [j.source.virtual_size for j in jobs]
        self._total: Progress | None = None
        if len(jobs) > 1:
            self._total = Progress("convert (total)", float(sum(sizes)), json_mode=json_mode,
                                   position=0)

    def _bar(self, index: int, phase: str, total: float) -> Progress:
        key = (index, phase)
        if key not in self._bars:
            name = self.jobs[index].source.given.name
            position = index + (1 if self._total else 0)
            self._bars[key] = Progress(f"{phase} {name}", total, json_mode=self.json_mode,
                                       position=position)
        return self._bars[key]

    def _changed(self, index: int, phase: str, value: float) -> bool:
        """qemu-img repeats its last line; report each value once."""
        if self._last.get((index, phase)) == value:
            return False
        self._last[(index, phase)] = value
        return True

    def converter(self, index: int) -> Callable[[float], None]:
        size = float(self.jobs[index].source.virtual_size)

        def update(fraction: float) -> None:
            with self._lock:
                if not self._changed(index, "convert", fraction):
                    return
                self._bar(index, "convert", size).update_to(fraction * size)
                self._done[index] = fraction * size
                if self._total is not None:
                    self._total.update_to(sum(self._done))
        return update

    def verifier(self, index: int) -> Callable[[float], None]:
        size = float(self.jobs[index].source.virtual_size)

        def update(fraction: float) -> None:
            with self._lock:
                if not self._changed(index, "verify", fraction):
                    return
                self._bar(index, "verify", size).update_to(fraction * size)
        return update

    def uploader(self, index: int, size: int) -> Callable[[int], None]:
        def update(done: int) -> None:
            with self._lock:
                self._bar(index, "upload", float(size)).update_to(float(done))
        return update

    def finish(self, index: int, phase: str) -> None:
        """Close a phase's bar once the phase is over, so bars do not pile up."""
        with self._lock:
            bar = self._bars.pop((index, phase), None)
            if bar is not None:
                if bar.total and bar.done < bar.total:
                    bar.update_to(bar.total)
                bar.close()

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            if self._total is not None:
                self._total.close()
            self._bars.clear()
            self._total = None
