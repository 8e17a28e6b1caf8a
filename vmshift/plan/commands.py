"""The vmshift command line each plan row runs (docs/plan.md, "What each row runs").

A row is executed by the same commands an admin would type, with `--json`, so
that a plan run and a hand run behave alike and the row's result is the
command's own document. This module only builds the argument lists (pure);
vSphere credentials come from a profile (vmshift.plan.profiles), and only a
password file's path ever reaches an argument list, never a secret.
"""

from __future__ import annotations

from pathlib import Path

from vmshift.errors import BadInput
from vmshift.plan.profiles import Profile
from vmshift.plan.schema import PlanRow, network_map_value
from vmshift.units import MiB


def argv(row: PlanRow, base: Path, profiles: dict[str, Profile]) -> list[str]:
    """The vmshift arguments (after the program name) that carry out ROW of a
    valid plan whose directory is BASE."""
    assert row.vm is not None and row.source is not None and row.type is not None
    build = {"v2v": _v2v, "live": _live, "suspended": _suspended, "offline": _offline,
             "storage": _storage}[row.type]
    args = build(row, base, profiles)
    if row.network_map_text and row.type != "storage":
        args += ["--network-map", network_map_value(row.network_map_text, base)]
    return [*args, "--json"]


def _v2v(row: PlanRow, base: Path, profiles: dict[str, Profile]) -> list[str]:
    src = row.source
    assert src is not None and row.target and row.target_pool and row.vm
    if src.kind == "vmx":
        assert src.path is not None
        args = ["convert", "vm", "--vmx", str(src.path.resolve())]
    else:
        args = ["convert", "vm", "--vsphere", *profile_for(row, profiles).args(),
                "--vm", src.vm or row.vm]
    args += ["--output", "libvirt", "--connect", row.target, "--pool", row.target_pool,
             "--name", row.vm]
    if row.format:
        args += ["--format", row.format]
    return args


def _between_hosts(mode: str, row: PlanRow) -> list[str]:
    assert row.source is not None and row.vm and row.target
    return ["migrate", mode, row.vm, "--source", row.source.text, "--dest", row.target]


def _live(row: PlanRow, base: Path, profiles: dict[str, Profile]) -> list[str]:
    args = _between_hosts("live", row) + _bandwidth(row)
    if row.max_downtime is not None:
        args += ["--max-downtime", str(row.max_downtime)]
    if row.policy:
        args += ["--policy", row.policy]
    return args


def _suspended(row: PlanRow, base: Path, profiles: dict[str, Profile]) -> list[str]:
    return _between_hosts("suspended", row) + _bandwidth(row)


def _offline(row: PlanRow, base: Path, profiles: dict[str, Profile]) -> list[str]:
    args = _between_hosts("offline", row)
    if row.target_pool:
        args += ["--dest-pool", row.target_pool]
    return args


def _storage(row: PlanRow, base: Path, profiles: dict[str, Profile]) -> list[str]:
    assert row.source is not None and row.vm and row.target_pool
    # no --disk: every disk not in the pool yet (a rerun moves what is left)
    args = ["migrate", "storage", row.vm, "--source", row.source.text,
            "--dest-pool", row.target_pool]
    if row.format:
        args += ["--format", row.format]
    return args + _bandwidth(row)


def _bandwidth(row: PlanRow) -> list[str]:
    # the cell is in bytes/s; M when whole, else K (exact for any rate with a unit)
    if not row.bandwidth:
        return []
    whole = row.bandwidth % MiB == 0
    return ["--bandwidth", f"{row.bandwidth // MiB}M" if whole else
            f"{max(1, row.bandwidth // 1024)}K"]


def profile_for(row: PlanRow, profiles: dict[str, Profile]) -> Profile:
    """The vSphere profile of a vsphere:// row's host, or BadInput naming the line."""
    assert row.source is not None
    host = row.source.host or ""
    found = profiles.get(host.lower())
    if found is None:
        raise BadInput(f"line {row.line}: source: no vSphere profile for {host!r} "
                       "(docs/plan.md, \"vSphere credentials\")")
    return found
