"""`vmshift testbed up|down|status`: idempotent, and nothing left after down.

Uses a bed of its own ("tbleftover") so the session's shared bed is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmshift.errors import OperationFailed
from vmshift.libvirtconn import connect
from vmshift.testbed import procs, state
from vmshift.testbed.hosts import TestBed

BED = "tbleftover"


def vmshift(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from vmshift.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=300)


def traces_of(bed: str, data_dir: str) -> dict[str, list[str]]:
    """Everything on the machine that still points at BED."""
    found: dict[str, list[str]] = {"netns": [], "mounts": [], "processes": []}
    if Path("/run/netns").is_dir():
        found["netns"] = [n for n in os.listdir("/run/netns") if n.startswith(f"vms-{bed}-")]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue  # exited meanwhile, or a zombie
        if procs.start_time(int(pid)) is None:
            continue
        if data_dir in cmdline or f"vms-{bed}-" in cmdline:
            found["processes"].append(f"{pid}: {cmdline}")
        # A mount namespace still alive anywhere would show the bed's mounts here.
        found["mounts"] += [f"{pid}: {line.split()[4]}" for line in mountinfo.splitlines()
                            if data_dir in line.split()[4] or f"vms-{bed}-" in line]
    return found


def gluster_mounts() -> set[str]:
    return {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[2] == "fuse.glusterfs"}


def test_nsenter_refuses_the_machines_own_mount_namespace() -> None:
    # Mount commands meant for a bed host must never run in the machine's namespace.
    with pytest.raises(OperationFailed, match="no mount namespace of its own"):
        procs.nsenter(os.getpid(), ["true"])


@pytest.fixture
def own_bed_name() -> str:
    if os.geteuid() != 0:
        pytest.skip("the libvirt test bed needs root")
    vmshift("testbed", "down", "--name", BED)
    return BED


@pytest.mark.slow
def test_up_twice_down_twice_leaves_nothing(own_bed_name: str) -> None:
    uffd_before = Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip()
    other_beds = [b for b in state.all_beds() if b != BED]
    others_mounted = gluster_mounts()

    first = vmshift("testbed", "up", "--name", BED, "--hosts", "3", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["hosta", "hostb", "hostc"]
    assert len({h["host_uuid"] for h in doc["hosts"]}) == 3
    st = state.read_state(BED)
    assert st is not None
    data_dir = st["data_dir"]
    recorded = [procs.Proc(**h[r]) for h in st["hosts"] for r in ("holder", "libvirtd")]
    links = [st["bridge"]] + [h["veth"] for h in st["hosts"]]
    if st.get("gluster", {}).get("veth"):
        links.append(st["gluster"]["veth"])
    for h in doc["hosts"]:
        conn = connect(h["uri"])
        assert conn.getHostname() == h["name"]
        conn.close()
    assert Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1"

    again = vmshift("testbed", "up", "--name", BED, "--hosts", "3", "--json")
    assert again.returncode == 0, again.stderr
    assert state.read_state(BED)["hosts"][0]["libvirtd"] == st["hosts"][0]["libvirtd"]

    down = vmshift("testbed", "down", "--name", BED, "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["was_up"] is True
    down_again = vmshift("testbed", "down", "--name", BED, "--json")
    assert down_again.returncode == 0 and json.loads(down_again.stdout)["was_up"] is False

    assert traces_of(BED, data_dir) == {"netns": [], "mounts": [], "processes": []}
    assert [p.role for p in recorded if procs.alive(p)] == []
    assert [link for link in links if procs.link_exists(link)] == []
    assert not Path(data_dir).exists()
    assert not state.state_dir(BED).exists()
    if not other_beds:
        assert Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == uffd_before
    # Other beds' shared volumes are still mounted on the machine (a regression:
    # an early nsenter into a not-yet-unshared holder once unmounted them here).
    assert others_mounted <= gluster_mounts()
    status = vmshift("testbed", "status", "--name", BED, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["up"] is False


def test_dry_run_creates_nothing(own_bed_name: str) -> None:
    done = vmshift("testbed", "up", "--name", BED, "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["dry_run"] is True and any("hosta" in a for a in plan["actions"])
    assert state.read_state(BED) is None
    assert traces_of(BED, str(state.data_dir(BED)))["netns"] == []


@pytest.mark.parametrize("args, field", [
    (["up", "--name", "Bad_Name"], "--name"),
    (["up", "--name", "okname", "--hosts", "0"], "--hosts"),
    (["status", "--name", "x" * 30], "--name"),
])
def test_bad_arguments_exit_2_naming_the_option(args: list[str], field: str) -> None:
    done = vmshift("testbed", *args)
    assert done.returncode == 2
    assert field in done.stderr
    assert "Traceback" not in done.stderr
    assert not state.state_dir("okname").exists()


def test_status_json_shape(two_hosts: TestBed) -> None:
    done = vmshift("testbed", "status", "--name", two_hosts.name, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema_version"] >= 1 and doc["kind"] == "testbed_status"
    assert doc["up"] is True and doc["name"] == two_hosts.name
    assert doc["storage_kind"] in ("glusterfs", "directory")
    assert doc["shared_pool"] == two_hosts.shared_pool
    assert doc["shared_path"] == two_hosts.shared_path
    assert doc["shared_mounted_here"] is True
    assert doc["network"] == two_hosts.network
    assert "userfaultfd" in doc["userfaultfd"]
    assert len(doc["hosts"]) == len(two_hosts.hosts) >= 2
    for h, host in zip(doc["hosts"], two_hosts.hosts, strict=True):
        assert h["uri"] == f"qemu+tcp://{h['address']}/system" == host.uri
        assert h["migrate_uri"] == f"tcp://{h['address']}"
        assert h["pools"] == [two_hosts.shared_pool, host.private_pool]
        assert h["networks"] == [two_hosts.network]
        assert h["libvirtd_running"] is True and isinstance(h["libvirtd_pid"], int)
    human = vmshift("testbed", "status", "--name", two_hosts.name)
    assert human.returncode == 0 and two_hosts.hosta.uri in human.stdout


@pytest.mark.slow
def test_plain_directory_storage_is_shared_and_reported() -> None:
    if os.geteuid() != 0:
        pytest.skip("the libvirt test bed needs root")
    bed = "tbdirectory"
    vmshift("testbed", "down", "--name", bed)
    up = vmshift("testbed", "up", "--name", bed, "--storage", "directory", "--json")
    try:
        assert up.returncode == 0, up.stderr
        doc = json.loads(up.stdout)
        assert doc["storage_kind"] == "directory"
        assert doc["migration_needs_unsafe"] is True
        assert "--storage directory" in doc["storage_note"]
        # A volume made through hosta's pool appears in hostb's pool of the same name.
        a, b = (connect(h["uri"]) for h in doc["hosts"])
        vol = ("<volume><name>probe.raw</name><capacity unit='bytes'>4096</capacity>"
               "</volume>")
        a.storagePoolLookupByName(doc["shared_pool"]).createXML(vol, 0)
        pool_b = b.storagePoolLookupByName(doc["shared_pool"])
        pool_b.refresh(0)
        assert pool_b.storageVolLookupByName("probe.raw").path() == \
            f"{doc['shared_path']}/probe.raw"
        a.close()
        b.close()
    finally:
        down = vmshift("testbed", "down", "--name", bed)
    assert down.returncode == 0, down.stderr
    assert not state.state_dir(bed).exists()
