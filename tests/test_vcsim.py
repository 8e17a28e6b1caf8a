"""The vCenter simulator answers pyvmomi over verified TLS, and only then."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from vmshift.testbed import vcsim


def _vm_names(si) -> dict[str, str]:  # type: ignore[no-untyped-def]
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return {vm.name: vm.runtime.powerState for vm in view.view}
    finally:
        view.Destroy()


def test_lists_vms_over_verified_tls(vcenter):
    assert vcenter.url.startswith("https://127.0.0.1:")
    si = SmartConnect(host=vcenter.host, port=vcenter.port, user=vcenter.user,
                      pwd=vcenter.password, sslContext=vcsim.ssl_context(vcenter.ca_path))
    try:
        vms = _vm_names(si)
        hosts = {h.name for dc in si.content.rootFolder.childEntity
                 for cr in dc.hostFolder.childEntity for h in cr.host}
    finally:
        Disconnect(si)
    assert {"DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"} <= set(vms)
    assert vms["DC0_H0_VM0"] == "poweredOn" and vms["DC0_H0_VM1"] == "poweredOff"
    assert len(hosts) >= 2


def test_wrong_ca_is_a_certificate_error(vcenter, tmp_path):
    other_ca, _ = vcsim.generate_ca(tmp_path / "other")  # same shape, different key
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        SmartConnect(host=vcenter.host, port=vcenter.port, user=vcenter.user,
                     pwd=vcenter.password, sslContext=vcsim.ssl_context(other_ca))


def test_no_ca_at_all_is_refused_too(vcenter):
    # The system trust store does not know the test-bed CA: verification is real.
    with pytest.raises(ssl.SSLCertVerificationError):
        SmartConnect(host=vcenter.host, port=vcenter.port, user=vcenter.user,
                     pwd=vcenter.password, sslContext=ssl.create_default_context())


def test_listens_on_loopback_only(vcenter):
    out = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    mine = [line for line in out.splitlines() if f"pid={vcenter.pid}," in line]
    assert mine, out
    assert all(f"127.0.0.1:{vcenter.port}" in line for line in mine), mine


def test_wrong_password_is_rejected(vcenter):
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(host=vcenter.host, port=vcenter.port, user=vcenter.user,
                     pwd=vcenter.password + "x", sslContext=vcsim.ssl_context(vcenter.ca_path))


def test_uploaded_vmdk_backs_a_vm_disk_and_downloads_back(vcenter, vcenter_vm, tmp_path):
    image = tmp_path / "payload.raw"
    image.write_bytes(bytes(range(256)) * 4096 * 2)  # 2 MiB with a recognisable pattern
    name = vcenter_vm()
    ds_path = vcsim.attach_disk(vcenter, name, image)
    si = vcsim.connect(vcenter)
    disk = next(d for d in vcsim.find_vm(si, name).config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk))
    assert disk.backing.fileName == ds_path == f"[LocalDS_0] {name}/uploaded.vmdk"
    assert disk.capacityInKB == 2048
    # The extent is on the datastore's backing directory, byte for byte.
    extent = vcenter.datastores["LocalDS_0"] / name / "uploaded-flat.vmdk"
    assert extent.read_bytes() == image.read_bytes()
    # ... and served back over /folder like ESXi.
    query = urllib.parse.urlencode({"dcPath": "DC0", "dsName": "LocalDS_0"})
    import http.client
    conn = http.client.HTTPSConnection(vcenter.host, vcenter.port,
                                       context=vcsim.ssl_context(vcenter.ca_path))
    conn.request("GET", f"/folder/{name}/uploaded-flat.vmdk?{query}")
    body = conn.getresponse().read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(image.read_bytes()).digest()


def test_stop_ends_the_process_and_removes_its_files():
    vc = vcsim.start()
    datastore = next(iter(vc.datastores.values()))
    assert datastore.is_dir() and Path(f"/proc/{vc.pid}").exists()
    vcsim.stop(vc)
    assert not Path(f"/proc/{vc.pid}").exists()
    assert not datastore.exists() and vc.run_dir is not None and not vc.run_dir.exists()
    assert "password" not in repr(vc) and vc.password not in repr(vc)


def test_a_killed_simulator_still_leaves_nothing_after_stop():
    import os
    import signal

    vc = vcsim.start()
    datastore = next(iter(vc.datastores.values()))
    assert vc.run_dir is not None and vc.run_dir in datastore.parents
    os.kill(vc.pid, signal.SIGKILL)  # no chance for it to clean up after itself
    vcsim.stop(vc)
    assert not datastore.exists() and not vc.run_dir.exists()


def test_listen_address_must_be_loopback(tmp_path):
    ca = vcsim.generate_ca(tmp_path / "ca")
    cert, key = vcsim.generate_server_cert(tmp_path, ca)
    env = {"VCSIM_USER": "u", "VCSIM_PASSWORD": "p", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(vcsim.build()), "-cert", str(cert), "-key", str(key),
                             "-listen", "0.0.0.0:0"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "only a loopback address" in result.stderr
