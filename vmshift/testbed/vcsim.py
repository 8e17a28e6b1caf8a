"""A real vCenter to test against: govmomi's simulator behind real TLS.

``build()`` compiles ``vcsim/main.go`` against Debian's
golang-github-vmware-govmomi-dev into ``$VMSHIFT_CACHE``, keyed by the
source's hash, so a warm start costs no compile. ``start()`` makes a fresh CA
and server certificate (pki.py, the ``openssl`` CLI), a random password, and runs
the simulator on 127.0.0.1 with a random free port. ``stop()`` ends it by PID.

The simulator serves datastore files under ``/folder/...`` like ESXi does, so
``upload_disk()`` and ``attach_disk()`` let a test put a real VMDK behind a
VM's disk and exercise the download path for real.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from vmshift.errors import OperationFailed
from vmshift.testbed.pki import generate_ca, generate_server_cert  # tests use them from here

SOURCE = Path(__file__).with_name("vcsim") / "main.go"
GO_ENV = {"GOPATH": "/usr/share/gocode", "GO111MODULE": "off"}
START_TIMEOUT = 60.0
DATACENTER = "DC0"

# Processes this module started, so stop() can close their stdin (which makes
# the simulator exit by itself) before falling back to a signal.
_RUNNING: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class VCenter:
    """A running simulator: everything a client needs, and how to stop it."""

    url: str  # https://127.0.0.1:PORT/sdk
    user: str
    password: str
    ca_path: Path
    pid: int
    datastores: dict[str, Path] = field(default_factory=dict)  # name -> backing dir
    run_dir: Path | None = None

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 443

    def __repr__(self) -> str:  # never show the password in test output
        return f"VCenter(url={self.url!r}, user={self.user!r}, pid={self.pid})"


def cache_dir() -> Path:
    return Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "vcsim"


def binary_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"vcsim-{digest}"


def build() -> Path:
    """Compile the simulator once per version of main.go; return the binary."""
    target = binary_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **GO_ENV, "GOCACHE": str(cache_dir() / "go-build")}
    # A name of our own: two sessions building at once must not share a file.
    partial = target.with_name(f"{target.name}.building-{os.getpid()}")
    result = subprocess.run(["go", "build", "-o", str(partial), str(SOURCE)],
                            env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise OperationFailed(f"building the vCenter simulator failed: {last}")
    partial.rename(target)  # atomic: a concurrent builder never runs half a binary
    for stale in target.parent.glob("vcsim-*"):  # binaries of older main.go versions
        if stale != target and ".building-" not in stale.name:
            stale.unlink(missing_ok=True)
    return target


# --- process ----------------------------------------------------------------

def start(user: str = "vmshift@vsphere.local", password: str | None = None,
          exit_with_parent: bool = True) -> VCenter:
    """Start a simulator; return once it answers. The caller must stop() it.

    With ``exit_with_parent`` the simulator exits when this process does
    (its stdin is a pipe we hold), so an aborted test run leaves nothing behind.
    """
    binary = build()
    run_dir = Path(tempfile.mkdtemp(prefix="vmshift-vcsim-"))
    ca = generate_ca(run_dir)
    cert, key = generate_server_cert(run_dir, ca)
    password = password or secrets.token_urlsafe(18)
    # TMPDIR: the simulator keeps its datastores in temporary directories;
    # inside run_dir, stop() removes them even if the process was killed -9.
    env = {**os.environ, "VCSIM_USER": user, "VCSIM_PASSWORD": password,
           "TMPDIR": str(run_dir)}
    proc = subprocess.Popen(
        [str(binary), "-cert", str(cert), "-key", str(key), "-listen", "127.0.0.1:0",
         *(["-exit-on-eof"] if exit_with_parent else [])],
        stdin=subprocess.PIPE if exit_with_parent else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=(run_dir / "vcsim.log").open("wb"),
        env=env, cwd=run_dir, start_new_session=True)
    _RUNNING[proc.pid] = proc
    try:
        url, datastores = _read_banner(proc, run_dir)
    except BaseException:
        _terminate(proc.pid)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return VCenter(url=url, user=user, password=password, ca_path=ca[0], pid=proc.pid,
                   datastores=datastores, run_dir=run_dir)


def _read_banner(proc: subprocess.Popen[bytes], run_dir: Path) -> tuple[str, dict[str, Path]]:
    assert proc.stdout is not None
    url, datastores = None, {}
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode().strip()
        if not line:
            log = (run_dir / "vcsim.log").read_text(errors="replace").strip()
            raise OperationFailed(f"the vCenter simulator exited at start: {log[-300:]}")
        word, _, rest = line.partition(" ")
        if word == "VCSIM_URL":
            url = rest
        elif word == "VCSIM_DATASTORE":
            name, _, directory = rest.partition(" ")
            datastores[name] = Path(directory)
        elif word == "VCSIM_READY" and url:
            return url, datastores
    raise OperationFailed("the vCenter simulator did not become ready in time")


def _terminate(pid: int, timeout: float = 10.0) -> None:
    proc = _RUNNING.pop(pid, None)
    if proc is None:  # started by another process: signal it by PID
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        return
    if proc.stdin:
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


def stop(vc: VCenter) -> None:
    """Stop the simulator (by its PID) and remove its certificates."""
    _terminate(vc.pid)
    if vc.run_dir:
        shutil.rmtree(vc.run_dir, ignore_errors=True)


# --- clients ----------------------------------------------------------------

def ssl_context(ca_path: Path | str) -> ssl.SSLContext:
    """A verifying client context that trusts only ``ca_path``."""
    return ssl.create_default_context(cafile=str(ca_path))


def connect(vc: VCenter):  # type: ignore[no-untyped-def]
    """A pyvmomi ServiceInstance over verified TLS."""
    from pyVim.connect import SmartConnect

    return SmartConnect(host=vc.host, port=vc.port, user=vc.user, pwd=vc.password,
                        sslContext=ssl_context(vc.ca_path))


def find_vm(si, name: str):  # type: ignore[no-untyped-def]
    from pyVmomi import vim

    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        for vm in view.view:
            if vm.name == name:
                return vm
    finally:
        view.Destroy()
    raise OperationFailed(f"no VM named {name!r} in the simulator")


def upload_file(vc: VCenter, local: Path, datastore: str, ds_path: str) -> None:
    """PUT a file into a datastore over /folder, as one would on ESXi."""
    query = urllib.parse.urlencode({"dcPath": DATACENTER, "dsName": datastore})
    target = f"/folder/{urllib.parse.quote(ds_path)}?{query}"
    conn = http.client.HTTPSConnection(vc.host, vc.port, context=ssl_context(vc.ca_path))
    try:
        with local.open("rb") as body:
            conn.request("PUT", target, body=body,
                         headers={"Content-Length": str(local.stat().st_size),
                                  "Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        if response.status not in (200, 201, 204):
            raise OperationFailed(f"upload of {ds_path} failed: HTTP {response.status}")
    finally:
        conn.close()


def upload_disk(vc: VCenter, image: Path, datastore: str, ds_dir: str, name: str) -> str:
    """Store ``image`` on the datastore as ESXi keeps a disk: a VMDK
    descriptor plus its ``-flat`` extent (what qemu-img calls monolithicFlat).
    Returns the ``[datastore] dir/name.vmdk`` path of the descriptor."""
    with tempfile.TemporaryDirectory(prefix="vmshift-vmdk-") as tmp:
        descriptor = Path(tmp) / f"{name}.vmdk"
        subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat",
                        str(image), str(descriptor)], check=True, capture_output=True)
        # Upload the extent first: the descriptor names it.
        upload_file(vc, Path(tmp) / f"{name}-flat.vmdk", datastore, f"{ds_dir}/{name}-flat.vmdk")
        upload_file(vc, descriptor, datastore, f"{ds_dir}/{name}.vmdk")
    return f"[{datastore}] {ds_dir}/{name}.vmdk"


def attach_disk(vc: VCenter, vm_name: str, image: Path, name: str = "uploaded") -> str:
    """Upload ``image`` beside the VM and point the VM's first disk at it.

    Returns the new ``[datastore] path``. The disk's capacity follows the image.
    """
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = connect(vc)
    vm = find_vm(si, vm_name)
    disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
    datastore = disk.backing.fileName.split("]")[0].lstrip("[")
    ds_path = upload_disk(vc, image, datastore, vm_name, name)
    size = _virtual_size(image)
    disk.backing.fileName = ds_path
    disk.capacityInKB = size // 1024
    disk.capacityInBytes = size
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    return ds_path


def _virtual_size(image: Path) -> int:
    import json

    out = subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                         check=True, capture_output=True, text=True).stdout
    return int(json.loads(out)["virtual-size"])


def create_vm(vc: VCenter, name: str, *, power_on: bool = False, tools: bool = False,
              datastore: str = "LocalDS_0") -> None:
    """Create a small VM of a test's own: pvscsi with one 1 MiB disk, a
    vmxnet3 NIC on "VM Network", on the standalone host DC0_H0.

    ``tools`` makes it report running VMware Tools and a guest hostname, as a
    guest with open-vm-tools does (set through the simulator's ``SET.``
    extraConfig keys, its documented way to change read-only properties)."""
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = connect(vc)
    content = si.RetrieveContent()
    datacenter = content.rootFolder.childEntity[0]
    host_view = content.viewManager.CreateContainerView(datacenter, [vim.HostSystem], True)
    try:
        host = next(h for h in host_view.view if h.name == "DC0_H0")
    finally:
        host_view.Destroy()
    network = next(n for n in datacenter.network if n.name == "VM Network")
    scsi = vim.vm.device.ParaVirtualSCSIController(key=-100, busNumber=0, sharedBus="noSharing")
    disk = vim.vm.device.VirtualDisk(
        key=-101, controllerKey=-100, unitNumber=0, capacityInKB=1024,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"[{datastore}] {name}/{name}.vmdk", diskMode="persistent",
            thinProvisioned=True))
    nic = vim.vm.device.VirtualVmxnet3(
        key=-102, addressType="manual", macAddress="00:50:56:3f:00:01",
        backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName="VM Network", network=network))
    spec = vim.vm.ConfigSpec(
        name=name, guestId="debian10_64Guest", numCPUs=1, memoryMB=256,
        files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"),
        deviceChange=[
            vim.vm.device.VirtualDeviceSpec(operation="add", device=scsi),
            vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk),
            vim.vm.device.VirtualDeviceSpec(operation="add", device=nic),
        ])
    WaitForTask(datacenter.vmFolder.CreateVM_Task(config=spec, pool=host.parent.resourcePool,
                                                  host=host))
    vm = find_vm(si, name)
    if power_on:
        WaitForTask(vm.PowerOnVM_Task())
    if tools:
        fake_guest = {"SET.guest.toolsRunningStatus": "guestToolsRunning",
                      "SET.guest.toolsStatus": "toolsOk",
                      "SET.guest.hostName": f"{name}.example.test"}
        extra = [vim.option.OptionValue(key=k, value=v) for k, v in fake_guest.items()]
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=extra)))


def delete_vm(vc: VCenter, name: str) -> None:
    """Power off (if needed) and destroy a VM with its files."""
    from pyVim.task import WaitForTask

    si = connect(vc)
    vm = find_vm(si, name)
    if vm.runtime.powerState != "poweredOff":
        WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def serve() -> None:
    """``python -m vmshift.testbed.vcsim``: a simulator in the foreground, to try
    `vmshift vsphere` by hand. The password goes to a 0600 file, not the screen."""
    vc = start()
    password_file = (vc.run_dir or Path(tempfile.gettempdir())) / "password"
    password_file.touch(mode=0o600)
    password_file.write_text(vc.password + "\n")
    print(f"url: {vc.url}\nuser: {vc.user}\nca-file: {vc.ca_path}\n"
          f"password-file: {password_file}\n"
          f"try: vmshift vsphere list --url {vc.url} --user {vc.user} "
          f"--ca-file {vc.ca_path} --password-file {password_file}\n"
          "Ctrl-C stops it.", flush=True)
    try:
        _RUNNING[vc.pid].wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(vc)


if __name__ == "__main__":
    serve()
