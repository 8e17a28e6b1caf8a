"""Bad input to `vmshift inspect`: one line naming the file, exit 2, no appliance.

Every case is stopped by the qemu-img / VMDK-descriptor checks before the
libguestfs appliance would start, so the matrix costs seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vmshift.cli import main
from vmshift.inspect.session import ApplianceSession

DESCRIPTOR = """\
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 FLAT "{extent}" 0

ddb.adapterType = "lsilogic"
"""


def empty_file(d: Path) -> tuple[Path, str]:
    p = d / "disk.img"
    p.touch()
    return p, "empty"


def random_vmdk(d: Path) -> tuple[Path, str]:
    p = d / "disk.vmdk"
    p.write_bytes(os.urandom(1 << 20))
    return p, "VMDK"


def random_qcow2(d: Path) -> tuple[Path, str]:
    p = d / "disk.qcow2"
    p.write_bytes(os.urandom(1 << 20))
    return p, "qcow2"


def truncated_qcow2(d: Path) -> tuple[Path, str]:
    full = d / "full.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(full), "1G"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 8M", str(full)], check=True,
                   capture_output=True)
    p = d / "truncated.qcow2"
    p.write_bytes(full.read_bytes()[:300_000])
    return p, "truncated"


def directory(d: Path) -> tuple[Path, str]:
    p = d / "disks.vmdk"
    p.mkdir()
    return p, "directory"


def missing_extent(d: Path) -> tuple[Path, str]:
    p = d / "vm.vmdk"
    p.write_text(DESCRIPTOR.format(extent="vm-flat.vmdk"))
    return p, "vm-flat.vmdk"


def escaping_extent(d: Path) -> tuple[Path, str]:
    p = d / "evil.vmdk"
    p.write_text(DESCRIPTOR.format(extent="../../../dev/sda"))
    return p, "../../../dev/sda"


def text_file(d: Path) -> tuple[Path, str]:
    p = d / "notes.img"
    p.write_text('displayName = "web01"\nmemSize = "1024"\n')
    return p, "text file"


def missing_file(d: Path) -> tuple[Path, str]:
    return d / "nowhere.qcow2", "no such file"


CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "empty file": empty_file, "random bytes .vmdk": random_vmdk,
    "random bytes .qcow2": random_qcow2, "truncated qcow2": truncated_qcow2,
    "directory": directory, "vmdk missing extent": missing_extent,
    "vmdk extent escapes": escaping_extent, "missing file": missing_file,
    "text file as raw": text_file,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_image_exits_2_naming_the_file(case: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, why = CASES[case](tmp_path)
    launches = ApplianceSession.total_launches
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and why.lower() in err.lower(), err
    assert ApplianceSession.total_launches == launches  # stopped before any appliance


def test_bad_image_json_error_document(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = truncated_qcow2(tmp_path)
    assert main(["inspect", "--json", str(path)]) == 2
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert doc["kind"] == "error" and doc["error"]["exit_code"] == 2
    assert str(path) in doc["error"]["message"]


def test_bad_second_disk_names_that_disk(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(good), "64M"], check=True)
    bad, _ = empty_file(tmp_path)
    assert main(["inspect", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and str(good) not in err


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path, _ = random_vmdk(tmp_path)
    exe = Path(sys.executable).parent / "vmshift"
    proc = subprocess.run([str(exe), "inspect", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and str(path) in proc.stderr
