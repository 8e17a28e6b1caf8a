"""vmshift.migrate.evacuate.maintenance: the hosts-in-maintenance state file.

Every test points $VMSHIFT_STATE_DIR at its own temporary directory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from vmshift.errors import BadInput, OperationFailed
from vmshift.migrate.evacuate import maintenance

U1 = "5f3c9a7e-2b1d-4c8e-9a6f-0d2e4b7c1a93"
U2 = "0b8e6d4c-7a2f-4e1b-8c3d-9f5a1e2b6c70"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("VMSHIFT_STATE_DIR", str(d))
    return d / "maintenance.json"


def test_mark_get_clear_entries_round_trip(state: Path):
    assert maintenance.get(U1) is None
    assert maintenance.entries() == []
    assert not state.parent.exists()  # reading creates nothing
    before = datetime.now(UTC).replace(microsecond=0)
    e1 = maintenance.mark(U1.upper(), "qemu+tcp://10.0.0.1/system", "hosta", "kernel update",
                          by="vmshift evacuate --source qemu+tcp://10.0.0.1/system")
    assert e1.uuid == U1  # canonical lowercase
    since = datetime.strptime(e1.since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= since <= datetime.now(UTC)
    assert maintenance.get(U1) == e1
    e2 = maintenance.mark(U2, "qemu+tcp://10.0.0.2/system", "hostb", "disk swap", by="me")
    assert maintenance.entries() == [e2, e1]  # by UUID
    doc = json.loads(state.read_text())
    assert doc["format_version"] == 1
    assert doc["hosts"][1] == {"uuid": U1, "uri": "qemu+tcp://10.0.0.1/system",
                               "hostname": "hosta", "since": e1.since,
                               "by": "vmshift evacuate --source qemu+tcp://10.0.0.1/system",
                               "reason": "kernel update"}
    assert maintenance.clear(U1) == e1
    assert maintenance.get(U1) is None
    assert maintenance.clear(U1) is None
    assert maintenance.entries() == [e2]


def test_marking_again_keeps_since_and_updates_the_rest(state: Path):
    first = maintenance.mark(U1, "qemu+tcp://a/system", "hosta", "first", by="one")
    doc = json.loads(state.read_text())
    doc["hosts"][0]["since"] = "2020-01-02T03:04:05Z"  # as if marked long ago
    state.write_text(json.dumps(doc))
    again = maintenance.mark(U1, "qemu+tcp://10.0.0.1/system", "hosta", "second", by="two")
    assert again.since == "2020-01-02T03:04:05Z"
    assert (again.uri, again.reason, again.by) == ("qemu+tcp://10.0.0.1/system", "second", "two")
    assert again != first
    assert maintenance.entries() == [again]


def test_by_defaults_to_the_command_line(state: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/vmshift", "evacuate", "--source",
                                      "qemu+tcp://10.0.0.1/system", "--reason", "two words"])
    e = maintenance.mark(U1, "qemu+tcp://10.0.0.1/system", "hosta", "two words")
    assert e.by == ("vmshift evacuate --source qemu+tcp://10.0.0.1/system "
                    "--reason 'two words'")


def test_writes_replace_the_file_atomically(state: Path):
    maintenance.mark(U1, "qemu+tcp://a/system", "hosta", "r", by="x")
    with open(state) as old:
        old_inode = os.fstat(old.fileno()).st_ino
        maintenance.mark(U2, "qemu+tcp://b/system", "hostb", "r", by="x")
        # a reader holding the old file still sees the whole old document: the new one
        # was written beside it and renamed over it, not rewritten in place
        assert [h["uuid"] for h in json.load(old)["hosts"]] == [U1]
    assert os.stat(state).st_ino != old_inode
    assert len(maintenance.entries()) == 2
    assert sorted(p.name for p in state.parent.iterdir()) == ["maintenance.json",
                                                              "maintenance.json.lock"]


def _mark_many(worker: int, count: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    for i in range(count):
        maintenance.mark(f"00000000-0000-4000-8000-{worker:06d}{i:06d}",
                         f"qemu+tcp://10.0.{worker}.{i}/system", f"host{worker}-{i}",
                         "concurrent", by=f"worker {worker}")


def test_concurrent_marks_from_several_processes_are_all_kept(state: Path):
    ctx = multiprocessing.get_context("fork")
    workers, count = 6, 8
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_mark_many, args=(w, count, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    got = maintenance.entries()
    assert len(got) == workers * count
    assert {e.by for e in got} == {f"worker {w}" for w in range(workers)}
    assert sorted(p.name for p in state.parent.iterdir()) == ["maintenance.json",
                                                              "maintenance.json.lock"]


@pytest.mark.parametrize(("content", "what"), [
    (b"{not json", "Expecting property name"),
    (b"[]", "no 'hosts' list"),
    (b'{"hosts": {}}', "no 'hosts' list"),
    (b'{"hosts": [7]}', "hosts[0] is not an object"),
    (b'{"hosts": [{"uuid": "x"}]}', "hosts[0] has no text 'uri'"),
    (b"\xff\xfe\x00", "not UTF-8 text"),
])
def test_a_corrupt_state_file_is_one_line_naming_it_and_is_kept(state: Path, content: bytes,
                                                                what: str):
    state.parent.mkdir(parents=True)
    state.write_bytes(content)
    calls = [lambda: maintenance.get(U1), maintenance.entries, lambda: maintenance.clear(U1),
             lambda: maintenance.mark(U1, "qemu+tcp://a/system", "hosta", "r", by="x")]
    for call in calls:
        with pytest.raises(OperationFailed) as info:
            call()
        assert info.value.message.startswith(f"{state}: ")
        assert what in info.value.message
        assert "\n" not in info.value.message
    assert state.read_bytes() == content  # never silently reset


def test_an_unreadable_state_file_names_it(state: Path):
    state.mkdir(parents=True)  # a directory where the file should be: EISDIR, even as root
    with pytest.raises(OperationFailed, match=f"^{state}: cannot read the maintenance state"):
        maintenance.entries()


def test_a_bad_uuid_is_bad_input(state: Path):
    with pytest.raises(BadInput, match="host UUID 'hosta': not a UUID"):
        maintenance.mark("hosta", "qemu+tcp://a/system", "hosta", "r")


# The head of `virsh capabilities` as libvirt 9.0's QEMU driver prints it (trimmed):
# real input for host_uuid, handed over by the small connection object below. It
# stands in for a daemon this unit test does not start; it fakes no failure.
CAPABILITIES = """<capabilities>

  <host>
    <uuid>5F3C9A7E-2B1D-4C8E-9A6F-0D2E4B7C1A93</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>Skylake-Client-IBRS</model>
      <vendor>Intel</vendor>
      <topology sockets='1' dies='1' cores='2' threads='1'/>
    </cpu>
    <power_management/>
    <iommu support='no'/>
    <migration_features>
      <live/>
      <uri_transports>
        <uri_transport>tcp</uri_transport>
        <uri_transport>rdma</uri_transport>
      </uri_transports>
    </migration_features>
  </host>

  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
  </guest>

</capabilities>
"""


class CapabilitiesConnection:
    """Answers what host_uuid asks of a libvirt connection, from a fixed XML text."""

    def __init__(self, xml: str) -> None:
        self.xml = xml

    def getCapabilities(self) -> str:  # libvirt's name
        return self.xml

    def getURI(self) -> str:  # libvirt's name
        return "qemu+tcp://10.0.0.1/system"


def test_host_uuid_from_capabilities():
    assert maintenance.host_uuid(CapabilitiesConnection(CAPABILITIES)) == U1
    with pytest.raises(OperationFailed, match="^qemu\\+tcp://10.0.0.1/system: unreadable"):
        maintenance.host_uuid(CapabilitiesConnection("<capabilities><host>"))


def test_host_uuid_missing_on_a_real_connection():
    # libvirt's in-process test driver (no daemon) reports no host UUID at all
    conn = libvirt.open("test:///default")
    try:
        with pytest.raises(OperationFailed, match="^test:///default: .*no /capabilities/host/uuid"):
            maintenance.host_uuid(conn)
    finally:
        conn.close()
