"""Where a test bed keeps its record of what it created.

``up`` writes the record step by step, before each resource is made, so a
``down`` after a half-finished ``up`` still finds and removes everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmshift import locks
from vmshift.errors import BadInput

RUN_ROOT = Path(os.environ.get("VMSHIFT_TESTBED_RUN", "/run/vmshift-testbed"))
DATA_ROOT = Path(os.environ.get("VMSHIFT_TESTBED_DATA", "/var/lib/vmshift-testbed"))
SUBNET_PREFIX = "10.241"
# Bed names end up in namespace names and paths: keep them plain and short.
BED_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


def check_bed_name(name: str) -> str:
    if not BED_NAME.match(name):
        raise BadInput(f"--name: {name!r} is not a valid bed name "
                       "(lowercase letters, digits and '-', starting with a letter, <= 20 chars)")
    return name


def state_dir(bed: str) -> Path:
    return RUN_ROOT / bed


def data_dir(bed: str) -> Path:
    return DATA_ROOT / bed


def state_file(bed: str) -> Path:
    return state_dir(bed) / "state.json"


def read_state(bed: str) -> dict[str, Any] | None:
    try:
        return json.loads(state_file(bed).read_text())
    except FileNotFoundError:
        return None


def write_state(state: dict[str, Any]) -> None:
    path = state_file(state["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def all_beds() -> list[str]:
    if not RUN_ROOT.is_dir():
        return []
    return sorted(p.parent.name for p in RUN_ROOT.glob("*/state.json"))


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise up/down of one bed (or of the shared index when NAME is '.global')."""
    lock_dir = RUN_ROOT / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(lock_dir / f"{name}.lock"):
        yield


def free_index() -> int:
    """The lowest third octet of 10.241.X.0/24 no other bed (or interface) uses."""
    used = set()
    for bed in all_beds():
        st = read_state(bed)
        if st and "index" in st:
            used.add(int(st["index"]))
    for idx in range(1, 250):
        if idx not in used and not Path(f"/sys/class/net/vmsbr{idx}").exists():
            return idx
    raise BadInput("--name: no free 10.241.X.0/24 subnet left for another bed")
