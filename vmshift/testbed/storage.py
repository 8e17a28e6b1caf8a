"""The bed's shared storage: a one-brick GlusterFS volume, or a plain directory.

glusterd runs in its own network and mount namespace (private
/var/lib/glusterd, /var/log/glusterfs and /run), so several beds can each run
one without sharing state or port 24007. The FUSE client runs in the machine's
namespaces and mounts the volume *before* the host mount namespaces are made:
namespaces made with private propagation only see mounts that already exist.
libvirt then sees ``fuse.glusterfs`` and treats the pool as shared storage, so
live migration needs no ``--unsafe``, as on a real cluster.

When gluster cannot start, the shared path is a plain directory that all host
namespaces see; libvirt calls migrations on it unsafe, and status says so.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from vmshift.errors import OperationFailed
from vmshift.testbed import netsetup, procs

VOLUME = "vmshift"


def is_mounted(path: Path, fstype: str | None = None) -> bool:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(path) and (fstype is None or fields[2] == fstype):
            return True
    return False


def _gluster(holder: int, *args: str, timeout: float = 60) -> str:
    argv = ["gluster", "--mode=script", *args]
    return procs.nsenter(holder, argv, timeout=timeout).stdout  # type: ignore[arg-type]


def _wait_glusterd(holder: int, glusterd: procs.Proc, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not procs.alive(glusterd):
            raise OperationFailed(f"glusterd exited; see {log}")
        done = procs.run(["nsenter", "-t", str(holder), "-m", "-n", "--",
                          "gluster", "--mode=script", "volume", "list"], check=False)
        if done.returncode == 0:
            return
        time.sleep(0.3)
    raise OperationFailed(f"glusterd did not answer within 30 s; see {log}")


def _wait_mount(path: Path, client: procs.Proc, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if is_mounted(path, "fuse.glusterfs"):
            return
        if not procs.alive(client):
            raise OperationFailed(f"glusterfs client exited; see {log}")
        time.sleep(0.2)
    raise OperationFailed(f"{path} not mounted within 30 s; see {log}")


def start_gluster(state: dict[str, Any], save: Any) -> None:
    """Start glusterd, create and start the volume, mount it at the shared path.

    Records every process and namespace in STATE (calling SAVE) before moving on.
    """
    g = state["gluster"]
    data = Path(g["dir"])
    for sub in ("lib", "log", "run", "brick"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    netsetup.add_netns(g["netns"])
    netsetup.add_veth(state["index"], g["veth"], g["netns"])
    netsetup.address_storage(g["netns"], g["address"])
    argv = ["ip", "netns", "exec", g["netns"], "unshare", "-m",
            "--propagation", "private", "sleep", "infinity"]
    holder = procs.spawn_holder("gluster-holder", argv, data / "holder.log")
    g["holder"] = holder.to_dict()
    save()
    # Copies of other beds' gluster mounts and netns files would outlive their ``down``.
    for target in procs.foreign_mounts(holder.pid, []):
        procs.nsenter(holder.pid, ["umount", "-l", target], net=False, check=False)
    for sub, target in (("lib", "/var/lib/glusterd"), ("log", "/var/log/glusterfs"),
                        ("run", "/run")):
        procs.nsenter(holder.pid, ["mount", "--bind", str(data / sub), target], net=False)
    log = data / "glusterd.out"
    glusterd = procs.spawn("glusterd", ["nsenter", "-t", str(holder.pid), "-m", "-n", "--",
                                        "glusterd", "-N", "-p", "/run/glusterd.pid"], log)
    g["glusterd"] = glusterd.to_dict()
    save()
    _wait_glusterd(holder.pid, glusterd, log)
    brick = f"{g['address']}:{data / 'brick'}"
    if VOLUME not in _gluster(holder.pid, "volume", "list").split():
        _gluster(holder.pid, "volume", "create", VOLUME, brick, "force")
    _gluster(holder.pid, "volume", "start", VOLUME, "force")
    g["client"] = mount_volume(state).to_dict()
    save()
    Path(state["shared_path"]).chmod(0o755)


def mount_volume(state: dict[str, Any]) -> procs.Proc:
    """Mount the volume at the shared path in the machine's mount namespace."""
    g = state["gluster"]
    shared = Path(state["shared_path"])
    shared.mkdir(parents=True, exist_ok=True)
    log = Path(g["dir"]) / "client.log"
    client = procs.spawn("glusterfs-client",
                         ["glusterfs", "-N", f"--volfile-server={g['address']}",
                          f"--volfile-id={VOLUME}", f"--log-file={log}", str(shared)],
                         Path(g["dir"]) / "client.out")
    try:
        _wait_mount(shared, client, log)
    except OperationFailed:
        procs.stop(client)
        raise
    return client


def machine_mount_missing(state: dict[str, Any]) -> bool:
    """True when the hosts see the gluster volume but the machine no longer does."""
    return state.get("storage_kind") == "glusterfs" and \
        not is_mounted(Path(state["shared_path"]), "fuse.glusterfs")


def remount_on_machine(state: dict[str, Any]) -> None:
    """Repair: a second FUSE client for the machine; the hosts keep theirs."""
    state["gluster"].setdefault("extra_clients", []).append(mount_volume(state).to_dict())


def stop_gluster(state: dict[str, Any]) -> None:
    """Unmount, stop the client, glusterd and its bricks, remove the namespace."""
    g = state.get("gluster") or {}
    shared = Path(state["shared_path"])
    if is_mounted(shared):
        procs.run(["umount", str(shared)], check=False)
        if is_mounted(shared):
            procs.run(["umount", "-l", str(shared)], check=False)
    for extra in g.get("extra_clients", []):
        procs.stop(procs.Proc(**extra))
    for role in ("client", "glusterd"):
        if g.get(role):
            procs.stop(procs.Proc(**g[role]))
    if g.get("netns"):
        # glusterd's brick daemons: only glusterd (ours) can have started them there.
        procs.stop_netns_processes(g["netns"], "glusterfsd")
    if g.get("holder"):
        procs.stop(procs.Proc(**g["holder"]))
    if g.get("netns"):
        netsetup.remove_netns(g["netns"])
    if g.get("veth"):
        netsetup.remove_link(g["veth"])


def use_directory(state: dict[str, Any], note: str) -> None:
    """Use a plain directory (migrations on it need VIR_MIGRATE_UNSAFE)."""
    stop_gluster(state)
    shared = Path(state["shared_path"])
    shared.mkdir(parents=True, exist_ok=True)
    shared.chmod(0o755)
    state["storage_kind"] = "directory"
    state["storage_note"] = note


def gluster_available() -> str | None:
    """Why gluster cannot be used here, or None when it can."""
    for tool in ("glusterd", "gluster", "glusterfs"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian glusterfs-server, glusterfs-client)"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse missing"
    return None
