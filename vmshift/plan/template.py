"""`vmshift plan template`: an example plan, one row per kind of move.

It passes ``vmshift plan validate --offline`` as printed (a test proves it),
so it names no local file: the v2v rows read from vSphere, not from VMX files.
"""

from __future__ import annotations

from vmshift.plan.csvio import format_csv
from vmshift.plan.schema import COLUMNS

A = "qemu+ssh://kvm-a.example.com/system"
B = "qemu+ssh://kvm-b.example.com/system"
WINDOW = ("2025-03-01T22:00:00+01:00", "2025-03-02T04:00:00+01:00")

EXAMPLE: list[dict[str, str]] = [
    {"wave": "1", "vm": "web01", "source": "vsphere://vcenter.example.com/web01", "type": "v2v",
     "target": A, "target_pool": "default", "network_map": "VM Network=default",
     "format": "qcow2", "bandwidth": "200M", "window_start": WINDOW[0],
     "window_end": WINDOW[1], "priority": "10",
     "notes": "credentials: the vsphere profile, never this file"},
    {"wave": "1", "vm": "web02", "source": "vsphere://vcenter.example.com/web02", "type": "v2v",
     "target": A, "target_pool": "default",
     "network_map": "VM Network=default,DMZ=bridge:br-dmz", "bandwidth": "100",
     "window_start": WINDOW[0], "window_end": WINDOW[1], "notes": "bandwidth 100 = 100 MiB/s"},
    {"wave": "2", "vm": "db01", "source": A, "type": "live", "target": B,
     "bandwidth": "1G", "max_downtime": "300", "policy": "adaptive",
     "depends_on": "1", "notes": "waits for wave 1"},
    {"wave": "2", "vm": "batch01", "source": A, "type": "offline", "target": B,
     "target_pool": "default", "depends_on": "1"},
    {"wave": "3", "vm": "cache01", "source": A, "type": "suspended", "target": B,
     "depends_on": "2"},
    {"wave": "3", "vm": "files01", "source": B, "type": "storage", "target_pool": "fast-ssd",
     "format": "raw", "depends_on": "2", "notes": "disks to another pool, same host"},
]


def template_csv() -> str:
    return format_csv(list(COLUMNS), ([row.get(c, "") for c in COLUMNS] for row in EXAMPLE))
