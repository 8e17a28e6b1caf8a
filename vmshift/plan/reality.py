"""Where a row's VM really is: what a runner asks before it decides about a row
found running whose execution ended without a result (docs/plan.md, "Resume").

The answer is one of:
- ``succeeded``: the move is complete (the domain is defined, and running if
  it ran, where the plan sends it, and gone from the source; or every disk is
  in the target pool);
- ``pending``: nothing happened that a new attempt would repeat (the domain
  is still only on the source, or the conversion defined nothing);
- ``failed``: something in between that a person must look at (the domain on
  both hosts, or on neither); the row is not run again by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from vmshift.errors import OperationFailed
from vmshift.libvirtconn import connect
from vmshift.migrate.facts import volume_of
from vmshift.migrate.xmlmap import disk_paths
from vmshift.plan.schema import MIGRATIONS, PlanRow


@dataclass(frozen=True)
class Finding:
    state: str  # succeeded | pending | failed
    why: str


def where(row: PlanRow) -> Finding:
    """Ask the hosts what became of ROW (OperationFailed when one cannot be reached:
    then nothing is decided)."""
    assert row.vm is not None and row.source is not None
    if row.type in MIGRATIONS:
        return _migration(row)
    if row.type == "storage":
        return _storage(row)
    return _conversion(row)


def _state_on(uri: str, name: str) -> tuple[bool, bool] | None:
    """(active, persistent) of NAME on URI, None when it has no such domain."""
    conn = connect(uri, readonly=True)
    try:
        dom = conn.lookupByName(name)
        return bool(dom.isActive()), bool(dom.isPersistent())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise OperationFailed(f"{uri}: {exc.get_error_message()}") from None
    finally:
        conn.close()


def _migration(row: PlanRow) -> Finding:
    assert row.source is not None and row.target and row.vm
    there = _state_on(row.target, row.vm)
    here = _state_on(row.source.text, row.vm)
    wants_running = row.type != "offline"
    if there is not None and there[1] and (there[0] or not wants_running) and here is None:
        return Finding("succeeded", f"defined on {row.target}"
                       f"{', running' if there[0] else ''}; gone from {row.source.text}")
    if there is None and here is not None:
        return Finding("pending", f"still only on {row.source.text}; not moved")
    if there is None:
        return Finding("failed", f"on neither {row.source.text} nor {row.target}")
    return Finding("failed", f"on both hosts ({row.source.text}: {_says(here)}, "
                   f"{row.target}: {_says(there)}): check by hand (docs/migrate.md)")


def _says(state: tuple[bool, bool] | None) -> str:
    if state is None:
        return "absent"
    return f"{'running' if state[0] else 'shut off'}, {'' if state[1] else 'not '}persistent"


def _storage(row: PlanRow) -> Finding:
    assert row.source is not None and row.vm and row.target_pool
    conn = connect(row.source.text, readonly=True)
    try:
        dom = conn.lookupByName(row.vm)
        pools = {t: (volume_of(conn, p) or (None,))[0]
                 for t, p in disk_paths(dom.XMLDesc(0)).items()}
    except libvirt.libvirtError as exc:
        raise OperationFailed(f"{row.source.text}: {exc.get_error_message()}") from None
    finally:
        conn.close()
    left = sorted(t for t, pool in pools.items() if pool != row.target_pool)
    if not left:
        return Finding("succeeded", f"every disk is in pool {row.target_pool}")
    return Finding("pending", f"{', '.join(left)} not in pool {row.target_pool} yet")


def _conversion(row: PlanRow) -> Finding:
    # convert vm defines the domain last, after every disk is written and
    # verified, and removes what it wrote when it fails: a definition means done
    assert row.target and row.vm
    there = _state_on(row.target, row.vm)
    if there is not None and there[1]:
        return Finding("succeeded", f"{row.vm} is defined on {row.target}")
    return Finding("pending", f"no {row.vm} defined on {row.target}; not converted")
