"""Bring a bed up and down, leaving nothing behind.

``up`` records each resource in the bed's state file before making it, and
undoes everything if a step fails. ``down`` ends only the processes recorded
there (plus what runs inside the bed's own network namespaces, which only the
bed's daemons can have started: QEMU, gluster bricks), then removes mounts,
namespaces, links, directories and restores the sysctl it changed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmshift.errors import BadInput, OperationFailed
from vmshift.testbed import libvirthost, migtls, netsetup, procs, state, storage
from vmshift.testbed.hosts import TestBed, bed_from_state, host_name, is_up

UFFD_SYSCTL = Path("/proc/sys/vm/unprivileged_userfaultfd")
Step = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _need_root() -> None:
    if os.geteuid() != 0:
        raise OperationFailed("vmshift testbed needs root (network namespaces, mounts, sysctl)")


def new_state(name: str, n_hosts: int, index: int) -> dict[str, Any]:
    data = state.data_dir(name)
    hosts = [{"name": host_name(i), "address": netsetup.subnet_address(index, 11 + i),
              "netns": f"vms-{name}-{host_name(i)}", "veth": f"vms{index}h{i}",
              "dir": str(data / host_name(i)), "host_uuid": libvirthost.new_host_uuid()}
             for i in range(n_hosts)]
    return {
        "name": name, "index": index, "subnet": f"10.241.{index}.0/24",
        "bridge": netsetup.bed_bridge(index), "data_dir": str(data),
        "shared_path": str(data / "shared"), "storage_kind": "glusterfs",
        "gluster": {"netns": f"vms-{name}-store", "veth": f"vms{index}s",
                    "address": netsetup.subnet_address(index, 2), "dir": str(data / "gluster")},
        "hosts": hosts, "complete": False, "started_at": time.time(),
    }


def plan_up(name: str, n_hosts: int) -> list[str]:
    """What ``up`` would create (for --dry-run)."""
    if is_up(state.read_state(name)):
        return [f"nothing: bed {name} is already up (see `vmshift testbed status --name {name}`)"]
    st = new_state(name, n_hosts, state.free_index())
    lines = ["set vm.unprivileged_userfaultfd=1 (restored by down)",
             f"create bridge {st['bridge']} with {netsetup.subnet_address(st['index'], 1)}/24",
             f"start glusterd in namespace {st['gluster']['netns']} at {st['gluster']['address']}, "
             f"volume {storage.VOLUME} mounted at {st['shared_path']} "
             f"(plain directory if gluster cannot start)"]
    for h in st["hosts"]:
        lines.append(f"start {h['name']}: namespace {h['netns']}, veth {h['veth']}, "
                     f"libvirtd at qemu+tcp://{h['address']}/system")
    lines.append(f"define pools {libvirthost.SHARED_POOL} (shared) and {libvirthost.PRIVATE_POOL} "
                 f"(per host), network {libvirthost.NETWORK} on every host")
    lines.append(f"migration TLS: a CA in {migtls.ca_dir(st)}, each host's certificates "
                 f"in its {migtls.CERT_DIR}")
    return lines


def _enable_userfaultfd(bed: str) -> str:
    """Post-copy needs userfaultfd for the unprivileged QEMU process."""
    with state.locked(".global"):
        record = state.RUN_ROOT / "userfaultfd.json"
        info = json.loads(record.read_text()) if record.exists() else {
            "old": UFFD_SYSCTL.read_text().strip(), "beds": []}
        if bed not in info["beds"]:
            info["beds"].append(bed)
        record.write_text(json.dumps(info))
        UFFD_SYSCTL.write_text("1\n")
    return f"sysctl vm.unprivileged_userfaultfd=1 (was {info['old']}; restored by down)"


def _restore_userfaultfd(bed: str) -> None:
    with state.locked(".global"):
        record = state.RUN_ROOT / "userfaultfd.json"
        if not record.exists():
            return
        info = json.loads(record.read_text())
        info["beds"] = [b for b in info["beds"] if b != bed]
        if info["beds"]:
            record.write_text(json.dumps(info))
            return
        UFFD_SYSCTL.write_text(info["old"] + "\n")
        record.unlink()


def _hosts_file(st: dict[str, Any]) -> str:
    lines = ["127.0.0.1\tlocalhost"] + [f"{h['address']}\t{h['name']}" for h in st["hosts"]]
    return "\n".join(lines) + "\n"


def _start_storage(st: dict[str, Any], save: Callable[[], None], step: Step,
                   kind: str) -> None:
    if kind == "directory":
        storage.use_directory(st, "plain shared directory, as asked (--storage directory)")
        return
    why = storage.gluster_available()
    if why is None:
        step("starting glusterd and mounting the shared volume")
        try:
            storage.start_gluster(st, save)
            st["storage_kind"] = "glusterfs"
            return
        except OperationFailed as exc:
            why = exc.message
    if kind == "glusterfs":
        raise OperationFailed(f"--storage glusterfs: {why}")
    step(f"gluster unavailable, using a plain shared directory: {why}")
    storage.use_directory(st, f"GlusterFS unavailable ({why}); plain shared directory in use")


def _start_hosts(st: dict[str, Any], save: Callable[[], None], step: Step) -> None:
    hosts_file = _hosts_file(st)
    ca = migtls.ensure_ca(st)
    for h in st["hosts"]:
        step(f"{h['name']}: namespaces and libvirtd")
        netsetup.add_netns(h["netns"])
        netsetup.add_veth(st["index"], h["veth"], h["netns"])
        netsetup.address_host(h["netns"], h["address"])
        root = Path(h["dir"])
        libvirthost.prepare_dirs(root, h, hosts_file)
        migtls.ensure_host(st, h, ca)  # before libvirtd: qemu.conf names the directory
        holder = libvirthost.enter_namespaces(h, root, st["shared_path"])
        h["holder"] = holder.to_dict()
        save()
        h["libvirtd"] = libvirthost.start_libvirtd(holder, root).to_dict()
        h["config"] = libvirthost.config_id(h)
        save()
    for h in st["hosts"]:
        uri = f"qemu+tcp://{h['address']}/system"
        step(f"{h['name']}: pools and network")
        conn = libvirthost.wait_connect(uri, procs.Proc(**h["libvirtd"]),
                                        Path(h["dir"]) / "log" / "libvirtd.log")
        try:
            libvirthost.define_pool(conn, libvirthost.SHARED_POOL, st["shared_path"])
            libvirthost.define_pool(conn, libvirthost.PRIVATE_POOL,
                                    libvirthost.PRIVATE_POOL_PATH)
            libvirthost.define_network(conn, netsetup.HOST_BRIDGE)
        finally:
            conn.close()


IDLE_TIMEOUT = 120.0


def _update_running(st: dict[str, Any], step: Step) -> None:
    """Bring the hosts of a bed that is already up to this version's setup.

    Certificates can change under a running libvirtd: QEMU loads them at each
    migration. A changed qemu.conf or libvirtd.conf (e.g. a bed started before
    the migration PKI existed) needs libvirtd restarted; the guests keep
    running meanwhile (libvirtd reconnects to their QEMU), but a job in flight
    would fail, so a host restarts only once it has none.
    """
    issued = migtls.ensure(st)
    if issued:
        step(f"migration TLS certificates issued for {', '.join(issued)}")
    for h in st["hosts"]:
        if h.get("config") != libvirthost.config_id(h):
            step(f"{h['name']}: restarting libvirtd for its new configuration "
                 "(guests keep running)")
            _restart_libvirtd(h, lambda: state.write_state(st))


def _wait_idle(uri: str, host: str) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT
    while busy := libvirthost.busy_domains(uri):
        if time.monotonic() > deadline:
            raise OperationFailed(f"{host}: libvirtd must restart for a new configuration, but "
                                  f"{', '.join(busy)} still had a job after "
                                  f"{IDLE_TIMEOUT:.0f} s; run `vmshift testbed up` again later")
        time.sleep(1)


def _restart_libvirtd(h: dict[str, Any], save: Callable[[], None]) -> None:
    uri, root = f"qemu+tcp://{h['address']}/system", Path(h["dir"])
    _wait_idle(uri, h["name"])
    libvirthost.write_confs(root, h)
    procs.stop(procs.Proc(**h["libvirtd"]))
    daemon = libvirthost.start_libvirtd(procs.Proc(**h["holder"]), root)
    h["libvirtd"] = daemon.to_dict()
    save()  # the new daemon is the bed's, whatever happens next
    libvirthost.wait_connect(uri, daemon, root / "log" / "libvirtd.log").close()
    h["config"] = libvirthost.config_id(h)
    save()


STORAGE_KINDS = ("auto", "glusterfs", "directory")


def up(name: str, n_hosts: int = 2, step: Step = _quiet, storage_kind: str = "auto") -> TestBed:
    """Start bed NAME with N_HOSTS hosts; a bed already up is returned as is.

    STORAGE_KIND: 'auto' (GlusterFS, else a plain directory), 'glusterfs'
    (fail without it) or 'directory'.
    """
    state.check_bed_name(name)
    if storage_kind not in STORAGE_KINDS:
        raise BadInput(f"--storage: {storage_kind!r} is not one of {', '.join(STORAGE_KINDS)}")
    if not 1 <= n_hosts <= 8:
        raise BadInput(f"--hosts: {n_hosts} is out of range (1..8)")
    _need_root()
    with state.locked(name):
        st = state.read_state(name)
        if is_up(st):
            assert st is not None
            if len(st["hosts"]) != n_hosts:
                raise BadInput(f"--hosts: bed {name} is already up with {len(st['hosts'])} "
                               f"hosts; run `vmshift testbed down --name {name}` first")
            if storage.machine_mount_missing(st):
                step("the shared volume is no longer mounted on this machine: mounting it again")
                storage.remount_on_machine(st)
                state.write_state(st)
            _update_running(st, step)
            return bed_from_state(st)
        if st is not None:
            step("removing the remains of an earlier, incomplete bed")
            _down_locked(name, st, step)
        with state.locked(".global"):
            st = new_state(name, n_hosts, state.free_index())
            state.write_state(st)

        def save() -> None:
            state.write_state(st)

        try:
            st["userfaultfd"] = {"mode": _enable_userfaultfd(name)}
            save()
            netsetup.add_bed_bridge(st["index"])
            _start_storage(st, save, step, storage_kind)
            save()
            _start_hosts(st, save, step)
        except BaseException:
            _down_locked(name, st, _quiet)
            raise
        st["complete"] = True
        st["up_seconds"] = round(time.time() - st["started_at"], 1)
        save()
        bed = bed_from_state(st)
        bed.extra["started_now"] = True  # lets a fixture know the bed is its own to stop
        return bed


def plan_down(name: str) -> list[str]:
    st = state.read_state(name)
    if st is None:
        return [f"bed {name} is not up: nothing to do"]
    lines = [f"destroy guests on {h['name']}, stop its libvirtd and namespace {h['netns']}"
             for h in st["hosts"]]
    lines.append(f"unmount {st['shared_path']}, stop gluster ({st.get('storage_kind')})")
    lines.append(f"remove bridge {st['bridge']}, {st['data_dir']}, restore userfaultfd sysctl")
    return lines


def _stop_host(h: dict[str, Any], step: Step) -> None:
    step(f"{h['name']}: stopping")
    libvirthost.save_qemu_caps(Path(h["dir"]))
    if h.get("libvirtd") and procs.alive(procs.Proc(**h["libvirtd"])):
        libvirthost.destroy_domains(f"qemu+tcp://{h['address']}/system")
        procs.stop(procs.Proc(**h["libvirtd"]))
    # QEMU processes left by a daemon that died: they live in the host's netns.
    procs.stop_netns_processes(h["netns"], "qemu")
    if h.get("holder"):
        procs.stop(procs.Proc(**h["holder"]))
    netsetup.remove_netns(h["netns"])
    netsetup.remove_link(h["veth"])


def _down_locked(name: str, st: dict[str, Any], step: Step) -> None:
    for h in st["hosts"]:
        _stop_host(h, step)
    step("stopping shared storage")
    storage.stop_gluster(st)
    netsetup.remove_link(st["bridge"])
    data = Path(st["data_dir"])
    if data.exists() and not storage.is_mounted(Path(st["shared_path"])):
        shutil.rmtree(data, ignore_errors=True)
    if st.get("userfaultfd"):
        _restore_userfaultfd(name)
    shutil.rmtree(state.state_dir(name), ignore_errors=True)


def down(name: str, step: Step = _quiet) -> bool:
    """Stop bed NAME. Returns False when there was nothing to stop."""
    state.check_bed_name(name)
    if state.read_state(name) is None:
        return False
    _need_root()
    with state.locked(name):
        st = state.read_state(name)
        if st is None:
            return False
        _down_locked(name, st, step)
    return True
