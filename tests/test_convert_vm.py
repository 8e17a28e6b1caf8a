"""`vmshift convert vm` end to end on the reference guest (issue 14).

One conversion per variant, per session: VMX -> volumes in a test-bed host's
pool -> defined domain -> booted, and what the guest says of itself read from
its serial console (the first-boot report), not from its disk. Before the
real run, the same conversion is interrupted once the copy has started, to
prove that an interrupted run leaves nothing and that a rerun starts clean.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.inspect_images import sha256
from tests.migrate_support import remove_converted

NET_MAP = "VM Network=vmshift-net"
PYTHON = [sys.executable, "-m", "vmshift"]


def vmshift_json(*args: str, timeout: float = 1800) -> tuple[int, dict[str, Any], str]:
    """Run vmshift with --json: exit code, its one document, stderr."""
    return vmshift_json_pid(*args, timeout=timeout)[:3]  # type: ignore[return-value]


def vmshift_json_pid(*args: str, timeout: float = 1800
                     ) -> tuple[int, dict[str, Any], str, int]:
    """The same, and its PID (its work directory is named after it)."""
    proc = subprocess.Popen([*PYTHON, *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    try:  # exactly one document (indented: it spans lines)
        doc = json.loads(out)
    except ValueError:
        pytest.fail(f"expected one JSON document, got {out!r} {err[-2000:]}")
    return proc.returncode, doc, err, proc.pid


def leftovers(host: Any, name: str, pid: int | None = None) -> list[str]:
    """Domains, volumes and files a conversion named NAME (run as PID) could have left."""
    conn = host.connect()
    try:
        found = [f"domain {d.name()}" for d in conn.listAllDomains() if d.name() == name]
        pool = conn.storagePoolLookupByName(host.private_pool)
        pool.refresh(0)
        found += [f"volume {v}" for v in pool.listVolumes() if v.startswith(name)]
    finally:
        conn.close()
    work = Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "work"
    # Each run's work directory carries its PID (others may be converting meanwhile).
    if pid is not None:
        found += [f"work {p}" for p in work.glob(f"vmshift-convert-{pid}-*")]
    return found


def defined_xml(host: Any, name: str, rc: int) -> str:
    """The domain a successful conversion defined, as libvirt has it ("" after a failure)."""
    if rc != 0:
        return ""
    conn = host.connect()
    try:
        return str(conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()


def copy_progress(line: str) -> bool:
    """The disk engine's JSON progress event with bytes already copied."""
    try:
        event = json.loads(line)
    except ValueError:
        return False
    task = str(event.get("task", ""))
    return event.get("event") == "progress" and task.startswith("convert ") and \
        task != "convert vm" and float(event.get("done") or 0) > 0


def interrupt_during_copy(vmx: Path, host: Any, name: str,
                          sig: signal.Signals) -> tuple[int, int]:
    """Start the conversion, send SIG once the disk engine reports copy progress."""
    proc = subprocess.Popen([*PYTHON, "convert", "vm", "--vmx", str(vmx), "--output",
                             "libvirt", "--connect", host.uri, "--pool", host.private_pool,
                             "--name", name, "--network-map", NET_MAP, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if copy_progress(line):
                break
            assert time.monotonic() < deadline, "the copy never started"
        else:
            pytest.fail("the conversion ended before its copy started")
        proc.send_signal(sig)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, proc.pid


def convert(guest: Any, host: Any, name: str, sig: signal.Signals) -> dict[str, Any]:
    disks = [guest.vmdk_sparse, guest.vmdk_stream]
    before = {str(p): sha256(p) for p in disks}
    remove_converted(host, name)
    interrupted_rc, pid = interrupt_during_copy(guest.vmx, host, name, sig)
    after_interrupt = leftovers(host, name, pid)
    rc, doc, err = vmshift_json("convert", "vm", "--vmx", str(guest.vmx), "--output",
                                "libvirt", "--connect", host.uri, "--pool",
                                host.private_pool, "--name", name, "--network-map", NET_MAP,
                                "--verify-boot", "--boot-timeout", "900")
    return {"rc": rc, "doc": doc, "stderr": err, "xml": defined_xml(host, name, rc),
            "interrupted_rc": interrupted_rc,
            "after_interrupt": after_interrupt, "before": before,
            "after": {str(p): sha256(p) for p in disks}}


@pytest.fixture(scope="module")
def base(vmware_guest, two_hosts) -> Any:  # type: ignore[no-untyped-def]
    host = two_hosts.hosts[0]
    result = convert(vmware_guest, host, "v2v-base", signal.SIGINT)
    yield result
    remove_converted(host, "v2v-base")


@pytest.fixture(scope="module")
def novirtio(vmware_guest_novirtio, two_hosts) -> Any:  # type: ignore[no-untyped-def]
    host = two_hosts.hosts[0]
    result = convert(vmware_guest_novirtio, host, "v2v-novirtio", signal.SIGTERM)
    yield result
    remove_converted(host, "v2v-novirtio")


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["rc"] == 0, result["stderr"][-2000:]
    return result["doc"]


@pytest.mark.parametrize("variant", ["base", "novirtio"])
def test_guest_boots_with_its_network(variant: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(variant)
    guest = request.getfixturevalue("vmware_guest" if variant == "base"
                                    else "vmware_guest_novirtio")
    boot = _ok(result)["boot"]
    assert boot["ok"], boot["problems"]
    assert boot["seconds_to_login"] is not None  # getty's prompt on the serial console
    ens192 = boot["interfaces"]["ens192"]
    assert ens192["mac"] == guest.mac.lower() and ens192["state"] == "UP"
    assert guest.ipv4 in ens192["addresses"]  # the static address of its ifupdown config
    assert boot["failed_units"] == []
    assert boot["vmware_tools"] is False  # open-vm-tools purged


@pytest.mark.parametrize("variant", ["base", "novirtio"])
def test_source_unchanged_and_one_launch(variant: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(variant)
    doc = _ok(result)
    assert result["before"] == result["after"]
    assert doc["appliance_launches"] == 1
    assert [s["stage"] for s in doc["stages"]] == ["preflight", "overlay", "inspect+convert",
                                                   "copy", "define", "boot"]


def test_initramfs_rebuilt_only_where_virtio_was_missing(base: dict, novirtio: dict) -> None:
    assert _ok(base)["guest"]["initramfs_rebuilt"] == []
    rebuilt = _ok(novirtio)["guest"]["initramfs_rebuilt"]
    assert rebuilt and all(p.startswith("/boot/initrd.img-") for p in rebuilt)


def test_identity_kept(base: dict, vmware_guest) -> None:  # type: ignore[no-untyped-def]
    _ok(base)
    xml = base["xml"]
    assert f"<uuid>{vmware_guest.uuid}</uuid>" in xml
    assert f"<mac address='{vmware_guest.mac.lower()}'/>" in xml
    assert "bus='virtio'" in xml and "vmshift-net" in xml


def test_guest_changes_reported(base: dict) -> None:
    guest = _ok(base)["guest"]
    areas = {(c["area"], c["path"]) for c in guest["changes"]}
    assert ("blockdev", "/etc/fstab") in areas
    assert ("network", "/etc/systemd/network/10-vmshift-ens192.link") in areas
    assert guest["interface_pins"] == [{"name": "ens192", "mac": "00:50:56:3a:5e:01",
                                        "matched_by": "slot"}]


@pytest.mark.parametrize("variant", ["base", "novirtio"])  # SIGINT, SIGTERM
def test_interrupted_copy_leaves_nothing_and_rerun_succeeds(
        variant: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(variant)
    assert result["interrupted_rc"] == 1
    assert result["after_interrupt"] == []
    _ok(result)  # the rerun, from the same state


def test_dry_run_creates_nothing(vmware_guest, two_hosts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host = two_hosts.hosts[0]
    out = tmp_path / "out"
    rc, doc, err, pid = vmshift_json_pid("convert", "vm", "--vmx", str(vmware_guest.vmx),
                                     "--output", "local", "--output-dir", str(out),
                                     "--dry-run")
    assert rc == 0, err
    assert not out.exists()
    assert leftovers(host, "vmshift-ref-debian12", pid) == []  # its overlays went too
    assert "<domain" in doc["xml"] and doc["space_needed"] > 0
    assert {c["path"] for c in doc["guest"]["changes"]} >= {"/etc/fstab"}
    assert doc["dry_run"] is True


@pytest.mark.parametrize("args, message", [
    ([], "exactly one source"),
    (["--vmx", "x.vmx", "--disk", "y.img"], "exactly one source"),
    (["--vmx", "x.vmx", "--output", "local"], "--output-dir"),
    (["--vmx", "x.vmx", "--memory", "4096"], "--memory: only with --disk"),
])
def test_bad_usage_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    argv = [*PYTHON, "convert", "vm", *args]
    if "--output" not in args:
        argv += ["--output", "local", "--output-dir", str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []
