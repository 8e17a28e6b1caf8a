"""Result documents and progress, in human or --json form.

With --json the final result is exactly one JSON document on stdout, carrying
``schema_version``; progress then goes to stderr as JSON lines, so a pipeline
that reads stdout never sees a partial document.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from vmshift import SCHEMA_VERSION


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, enums and paths into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def emit_json(kind: str, payload: dict[str, Any]) -> None:
    """Print the one final JSON document of a command."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):  # one style for every kind: snake_case
        raise ValueError(f"JSON kind {kind!r} is not snake_case")
    doc = {"schema_version": SCHEMA_VERSION, "kind": kind, **to_jsonable(payload)}
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def emit_event(event: str, **fields: Any) -> None:
    """One JSON line on stderr (progress and notices in --json mode)."""
    line = {"event": event, "time": round(time.time(), 3), **to_jsonable(fields)}
    sys.stderr.write(json.dumps(line) + "\n")
    sys.stderr.flush()


def notice(message: str, json_mode: bool) -> None:
    """A human notice (for example 'KVM unusable, using TCG') on stderr."""
    if json_mode:
        emit_event("notice", message=message)
    else:
        click.echo(message, err=True)


_BAR_LOCK = threading.RLock()


def _tqdm() -> Any:
    """tqdm's bar class. Its package init looks up its own version through
    importlib.metadata, 16 ms of scanning site-packages (measured; 2% of a small
    disk's conversion), and nothing in vmshift reads that version: the lookup
    is answered in advance, unless tqdm was imported already."""
    if "tqdm" not in sys.modules:
        import types

        version = types.ModuleType("tqdm.version")
        version.__version__ = "unknown (not looked up by vmshift)"  # type: ignore[attr-defined]
        sys.modules.setdefault("tqdm.version", version)
    from tqdm import tqdm

    return tqdm


class Progress:
    """A byte or step counter shown as a tqdm bar, or as JSON lines on stderr."""

    def __init__(self, task: str, total: float | None, *, json_mode: bool,
                 unit: str = "B", position: int | None = None, min_interval: float = 0.5):
        self.task, self.total, self.json_mode = task, total, json_mode
        self.done: float = 0  # an int until a caller passes a float: counts show as 2/2
        self._last_emit = 0.0
        self._min_interval = min_interval
        self._bar = None
        if not json_mode:
            # Imported here: tqdm costs a quarter of `vmshift convert disk`'s imports,
            # and a bar is first drawn while qemu-img already runs.
            tqdm = _tqdm()

            # Bars are drawn from threads, never from other processes: a thread lock
            # spares tqdm's default one importing multiprocessing for a semaphore.
            tqdm.set_lock(_BAR_LOCK)
            scale = unit == "B"
            self._bar = tqdm(total=total, desc=task, unit=unit, unit_scale=scale,
                             unit_divisor=1024 if scale else 1000, position=position,
                             leave=True, file=sys.stderr, dynamic_ncols=True)

    def update_to(self, done: float, **extra: Any) -> None:
        """Set the absolute amount done (what qemu-img and libvirt report)."""
        delta = done - self.done
        self.done = done
        if self._bar is not None:
            if extra:
                self._bar.set_postfix(extra, refresh=False)
            self._bar.update(delta)
            return
        now = time.monotonic()
        if now - self._last_emit >= self._min_interval or (self.total and done >= self.total):
            self._last_emit = now
            emit_event("progress", task=self.task, done=done, total=self.total, **extra)

    def say(self, event: str, text: str, **fields: Any) -> None:
        """A line about one step (a row started, a row ended): above the bar, or
        a JSON event line in --json mode."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            emit_event(event, task=self.task, **fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def table(rows: list[list[str]], header: list[str] | None = None) -> list[str]:
    """Aligned columns, two spaces apart; a dashed rule under HEADER."""
    allrows = ([header] if header else []) + rows
    if not allrows:
        return []
    widths = [max(len(r[i]) for r in allrows) for i in range(len(allrows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
           for r in allrows]
    if header:
        out.insert(1, "  ".join("-" * w for w in widths))
    return out
