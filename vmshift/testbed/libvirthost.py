"""One bed host: a libvirtd in its own network, mount and UTS namespaces.

The recipe (FIELD-NOTES): private /var/lib/libvirt, /etc/libvirt,
/var/log/libvirt and /var/cache/libvirt bind-mounted in a mount namespace
made with private propagation, and a tmpfs on /run/libvirt, as on a real
host; a random host_uuid per host (libvirt refuses a migration "to the same
host" otherwise); TCP without auth on the host's private address;
stdio_handler="file" so no virtlogd is needed.
Each host also gets its own hostname and an /etc/hosts naming every host of
the bed, so even a migration without an explicit URI resolves the right peer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from vmshift import libvirtconn, volumes
from vmshift.errors import OperationFailed
from vmshift.testbed import migtls, procs

PRIVATE_DIRS = {
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
# libvirt saves a domain's status XML here, with an fsync, at every state
# change, several inside a migration's pause: the source's STOP handler saves
# it before libvirt sees the event that lets QEMU go on. On disk, with another
# process writing, that one fsync held the pause for 185 ms. A real host has
# /run on tmpfs.
RUNTIME_DIR = "/run/libvirt"
SHARED_POOL = "vmshift-shared"
PRIVATE_POOL = "vmshift-private"
PRIVATE_POOL_PATH = "/var/lib/libvirt/vmshift-private"  # inside each host
NETWORK = "vmshift-net"


def libvirtd_conf(host_uuid: str) -> str:
    return "\n".join([
        "# vmshift test bed host (generated)",
        "listen_tcp = 1",
        "listen_tls = 0",
        'auth_tcp = "none"',
        f'host_uuid = "{host_uuid}"',
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
        "",
    ])


def qemu_conf() -> str:
    return "\n".join([
        "# vmshift test bed host (generated)",
        # No virtlogd per host: QEMU's console log goes straight to a file.
        'stdio_handler = "file"',
        # Ownership xattrs on a file that two daemons share (gluster) would
        # make each daemon restore the other's labels; the bed does not need them.
        "remember_owner = 0",
        # TLS migration (--tls): the bed's migration PKI (migtls.py). libvirtd
        # refuses to start if this directory is missing.
        *migtls.qemu_conf_lines(),
        "",
    ])


def config_id(host: dict[str, Any]) -> str:
    """Names the configuration a host's libvirtd reads at start: a running
    daemon whose recorded id differs must restart to apply a new one."""
    text = libvirtd_conf(host["host_uuid"]) + qemu_conf()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_confs(root: Path, host: dict[str, Any]) -> None:
    """The daemon's configuration, as config_id names it."""
    (root / "etc" / "libvirtd.conf").write_text(libvirtd_conf(host["host_uuid"]))
    (root / "etc" / "qemu.conf").write_text(qemu_conf())


def prepare_dirs(root: Path, host: dict[str, Any], hosts_file: str) -> None:
    """Fill the host's private directories: a copy of /etc/libvirt, its confs."""
    for sub in PRIVATE_DIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    # QEMU creates a guest's serial <log> file, not its directory, which a
    # fresh host only has after libvirt started its first domain.
    (root / "log" / "qemu").mkdir(exist_ok=True)
    etc = root / "etc"
    if not (etc / "qemu.conf.dist").exists():
        shutil.copytree("/etc/libvirt", etc, symlinks=True, dirs_exist_ok=True)
        shutil.copy2(etc / "qemu.conf", etc / "qemu.conf.dist")
    # The distribution's default NAT network must not autostart on every host.
    shutil.rmtree(etc / "qemu" / "networks" / "autostart", ignore_errors=True)
    for xml in (etc / "qemu").glob("*.xml"):
        xml.unlink()
    write_confs(root, host)
    (root / "lib" / "vmshift-private").mkdir(exist_ok=True)
    seed_qemu_caps(root)
    (root / "hosts").write_text(hosts_file)


def caps_cache() -> Path:
    return Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "libvirt-qemu-caps"


def seed_qemu_caps(root: Path) -> None:
    """Give a fresh host the QEMU capabilities an earlier host probed.

    Probing QEMU takes 5-20 s under TCG on a busy machine, and every bed host
    starts with an empty cache. libvirt re-validates a seeded entry (QEMU
    binary, libvirt version, host CPU) and probes again if it is stale.
    """
    target = root / "cache" / "qemu" / "capabilities"
    target.mkdir(parents=True, exist_ok=True)
    for xml in caps_cache().glob("*.xml"):
        if not (target / xml.name).exists():
            shutil.copy2(xml, target / xml.name)


def save_qemu_caps(root: Path) -> None:
    """Keep what this host probed for the next bed host (see seed_qemu_caps)."""
    source = root / "cache" / "qemu" / "capabilities"
    if not source.is_dir():
        return
    caps_cache().mkdir(parents=True, exist_ok=True)
    for xml in source.glob("*.xml"):
        if not (caps_cache() / xml.name).exists():
            shutil.copy2(xml, caps_cache() / xml.name)


def enter_namespaces(host: dict[str, Any], root: Path, shared_path: str) -> procs.Proc:
    """Start the namespace holder and make the private mounts inside it."""
    argv = ["ip", "netns", "exec", host["netns"], "unshare", "-m", "-u",
            "--propagation", "private", "sleep", "infinity"]
    holder = procs.spawn_holder("holder", argv, root / "holder.log")
    for target in procs.foreign_mounts(holder.pid, [shared_path]):
        procs.nsenter(holder.pid, ["umount", "-l", target], net=False, check=False)
    procs.nsenter(holder.pid, ["hostname", host["name"]], net=False)
    # A mount point may not exist yet: /run/libvirt does only once a system libvirtd ran.
    for sub, target in PRIVATE_DIRS.items():
        Path(target).mkdir(parents=True, exist_ok=True)
        procs.nsenter(holder.pid, ["mount", "--bind", str(root / sub), target], net=False)
    Path(RUNTIME_DIR).mkdir(parents=True, exist_ok=True)
    procs.nsenter(holder.pid, ["mount", "-t", "tmpfs", "-o", "mode=0755,size=64m",
                               "tmpfs", RUNTIME_DIR], net=False)
    procs.nsenter(holder.pid, ["mount", "--bind", str(root / "hosts"), "/etc/hosts"], net=False)
    return holder


def start_libvirtd(holder: procs.Proc, root: Path) -> procs.Proc:
    argv = ["nsenter", "-t", str(holder.pid), "-m", "-u", "-n", "--",
            "libvirtd", "--listen", "-p", "/run/libvirt/libvirtd.pid",
            "-f", "/etc/libvirt/libvirtd.conf"]
    return procs.spawn("libvirtd", argv, root / "libvirtd.out")


def wait_connect(uri: str, daemon: procs.Proc, log: Path,
                 timeout: float = 60) -> libvirt.virConnect:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not procs.alive(daemon):
            raise OperationFailed(f"libvirtd for {uri} exited; see {log}")
        try:
            return libvirtconn.connect(uri)
        except OperationFailed as exc:
            last = exc.message
        time.sleep(0.3)
    raise OperationFailed(f"libvirtd at {uri} did not answer within {timeout:.0f} s: {last}")


def _network_xml(bridge: str) -> str:
    net = etree.Element("network")
    etree.SubElement(net, "name").text = NETWORK
    etree.SubElement(net, "forward", mode="bridge")
    etree.SubElement(net, "bridge", name=bridge)
    return etree.tostring(net, encoding="unicode")


def define_pool(conn: libvirt.virConnect, name: str, path: str) -> None:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        pool = conn.storagePoolDefineXML(volumes.dir_pool_xml(name, path), 0)
    if not pool.isActive():
        pool.create(0)
    pool.setAutostart(1)
    pool.refresh(0)


def define_network(conn: libvirt.virConnect, bridge: str) -> None:
    try:
        net = conn.networkLookupByName(NETWORK)
    except libvirt.libvirtError:
        net = conn.networkDefineXML(_network_xml(bridge))
    if not net.isActive():
        net.create()
    net.setAutostart(1)


def new_host_uuid() -> str:
    # Random (version 4): libvirt rejects all-same-digit UUIDs as invalid.
    return str(uuid.uuid4())


def destroy_domains(uri: str) -> None:
    """Stop the guests still running on a host before its daemon goes."""
    try:
        conn = libvirtconn.connect(uri)
    except OperationFailed:
        return
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()


def busy_domains(uri: str) -> list[str]:
    """Domains on a host with a job in flight (a migration, a save...)."""
    conn = libvirtconn.connect(uri)
    try:
        busy = []
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                    busy.append(dom.name())
            except libvirt.libvirtError:
                continue  # gone meanwhile
        return busy
    finally:
        conn.close()
