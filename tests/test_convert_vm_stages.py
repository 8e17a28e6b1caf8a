"""`convert vm`'s source and overlay stages on their own (no appliance, no bed).

Where a disk is read from: through the storage map exactly as the reader
confined it (datastore paths and path prefixes), never a pool volume, and a
device only when --allow-device names it, the overlay stage included.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vmshift.confine import Policy
from vmshift.convert.maps import parse_storage_map
from vmshift.convert.vm import overlay, source
from vmshift.errors import BadInput

VMX = ('config.version = "8"\nvirtualHW.version = "14"\ndisplayName = "t"\nmemSize = "512"\n'
       'numvcpus = "1"\nguestOS = "debian12-64"\nscsi0.present = "TRUE"\n'
       'scsi0.virtualDev = "pvscsi"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "{disk}"\n')


def vm_on_datastore(tmp_path: Path, disk: str) -> tuple[Path, Path]:
    """A VMX naming DISK, and the local directory holding datastore ds's dir/x.vmdk."""
    ds = tmp_path / "ds"
    (ds / "dir").mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(ds / "dir/x.vmdk"), "16M"],
                   check=True)
    vmx = tmp_path / "vm" / "t.vmx"
    vmx.parent.mkdir()
    vmx.write_text(VMX.format(disk=disk))
    return vmx, ds


@pytest.mark.parametrize("disk, entry", [
    ("[ds] dir/x.vmdk", "ds={ds}"),
    ("/vmfs/volumes/ds/dir/x.vmdk", "/vmfs/volumes/ds={ds}"),  # a path prefix
])
def test_disks_read_where_the_storage_map_sends_them(tmp_path: Path, disk: str,
                                                     entry: str) -> None:
    vmx, ds = vm_on_datastore(tmp_path, disk)
    src = source.from_vmx(vmx, parse_storage_map(entry.format(ds=ds)))
    assert src.disk_files == [ds / "dir" / "x.vmdk"]


def test_a_pool_volume_target_is_refused_by_name(tmp_path: Path) -> None:
    vmx, _ = vm_on_datastore(tmp_path, "[ds] dir/x.vmdk")
    with pytest.raises(BadInput, match=r"t\.vmx: scsi0:0: \[ds\] dir/x\.vmdk maps to volume "
                                       r"x\.vmdk of pool images"):
        source.from_vmx(vmx, parse_storage_map("ds=pool:images"))


def test_an_allowed_device_reaches_the_overlay(loop_device: str, tmp_path: Path) -> None:
    link = tmp_path / "lun"  # named through a symlink, as /dev/disk/by-id names are
    link.symlink_to(loop_device)
    with pytest.raises(BadInput, match="--allow-device"):
        source.from_disks([str(link)], name="p", memory_mib=None, vcpus=None, macs=())
    src = source.from_disks([str(link)], name="p", memory_mib=None, vcpus=None, macs=(),
                            allow_devices=(loop_device,))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BadInput, match="--allow-device"):
        overlay.make_overlays(src.disk_files, work, "p")
    [made] = overlay.make_overlays(src.disk_files, work, "p",
                                   Policy.of(devices=(loop_device,)))
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", made.path],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename"] == str(link.resolve()) or \
        Path(info["backing-filename"]).resolve() == Path(loop_device).resolve()
    assert info["virtual-size"] == 4 << 20
