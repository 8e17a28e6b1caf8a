"""Bad VMX input through the real command: exit 2, one line on stderr, nothing
on stdout, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmshift.cli import main
from vmshift.cliutil import JSON_MODE

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
MINIMAL = 'displayName = "bad"\nmemSize = "512"\n'


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The real installed command, in its own process."""
    return subprocess.run([VMSHIFT, *args], capture_output=True, text=True, check=False,
                          timeout=60)


def run_in_process(capsys: pytest.CaptureFixture[str],
                   *args: str) -> subprocess.CompletedProcess[str]:
    """The same entry point (vmshift.cli.main) without a process start per case."""
    JSON_MODE["on"] = False  # process-global, set by any earlier in-process --json run
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def assert_bad_input(result: subprocess.CompletedProcess[str], *must_name: str) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for text in must_name:
        assert text in lines[0]
    return lines[0]


def disk_vmx(file_name: str) -> str:
    return (MINIMAL + 'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\n'
            f'scsi0:0.fileName = "{file_name}"\n')


CASES = {
    "binary-garbage": (bytes(range(256)) * 64, "binary"),
    "ten-megabyte-line": (b'annotation = "' + b"A" * (10 * 1024 * 1024) + b'"\n', "VMX"),
    "negative-memsize": (b'memSize = "-512"\n', "memSize"),
    "huge-memsize": (b'memSize = "99999999999999"\n', "memSize"),
    "zero-memsize": (b'memSize = "0"\n', "memSize"),
    "text-memsize": (b'memSize = "lots"\n', "memSize"),
    "shadow": (disk_vmx("../../etc/shadow").encode(), "climbs out"),
    "backslash-escape": (disk_vmx("..\\..\\etc\\shadow").encode(), "climbs out"),
    "datastore-escape": (disk_vmx("[ds1] ../../etc/shadow").encode(), "datastore"),
    "no-equals": (b'displayName = "x"\nthis is not a vmx line\n', ":2:"),
    "bad-uuid": (b'uuid.bios = "zz 11"\n', "uuid.bios"),
    "bad-mac": (b'ethernet0.present = "TRUE"\nethernet0.addressType = "static"\n'
                b'ethernet0.address = "00:50:56:zz:00:01"\n', "ethernet0.address"),
    "bad-cores": (b'numvcpus = "3"\ncpuid.coresPerSocket = "2"\n', "coresPerSocket"),
    "bad-encoding": (b'.encoding = "klingon-8"\ndisplayName = "x"\n', ".encoding"),
    "bad-boolean": (b'scsi0.present = "maybe"\nscsi0:0.present = "TRUE"\n', "scsi0.present"),
    "empty-file": (b"", "no key"),
    "control-char": (b'displayName = "a|01b"\n', "displayName"),
    "unknown-scsi": (b'scsi0.present = "TRUE"\nscsi0.virtualDev = "megaraid"\n'
                     b'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "a.vmdk"\n', "virtualDev"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_vmx_exit_2_one_line(case: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    data, must = CASES[case]
    path = tmp_path / f"{case}.vmx"
    path.write_bytes(data)
    result = run_in_process(capsys, "vmx2xml", "--virt-type", "qemu", str(path))
    line = assert_bad_input(result, str(path), must)
    assert len(line) < 400  # one readable line, never the 10 MB echoed back


@pytest.mark.parametrize("case", ["binary-garbage", "shadow", "ten-megabyte-line"])
def test_bad_vmx_real_process(case: str, tmp_path: Path) -> None:
    """The flagship cases again through the installed binary: exit status and streams."""
    data, must = CASES[case]
    path = tmp_path / f"{case}.vmx"
    path.write_bytes(data)
    assert_bad_input(run("vmx2xml", str(path)), str(path), must)


def test_vmdk_passed_as_vmx(tmp_path: Path) -> None:
    """Both VMDK shapes: a binary sparse image and a text descriptor."""
    sparse = tmp_path / "sparse.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(sparse), "1M"], check=True)
    assert_bad_input(run("vmx2xml", str(sparse)), "VMDK")
    flat = tmp_path / "flat.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat",
                    str(flat), "1M"], check=True)
    assert b"# Disk DescriptorFile" in flat.read_bytes()
    assert_bad_input(run("vmx2xml", str(flat)), "VMDK")


def test_missing_and_directory(tmp_path: Path) -> None:
    assert_bad_input(run("vmx2xml", str(tmp_path / "absent.vmx")), "absent.vmx")
    assert_bad_input(run("vmx2xml", str(tmp_path)))


def test_bad_network_map_names_line(tmp_path: Path) -> None:
    vmx = tmp_path / "ok.vmx"
    vmx.write_text(MINIMAL)
    netmap = tmp_path / "net.map"
    netmap.write_text("# comment\nVM Network=default\nonly-one-field\n")
    assert_bad_input(run("vmx2xml", "--network-map", str(netmap), str(vmx)), f"{netmap}:3")


def test_missing_disk_is_fine_for_vmx2xml(tmp_path: Path) -> None:
    """vmx2xml translates only: a disk that does not exist is not an error."""
    vmx = tmp_path / "vm.vmx"
    vmx.write_text(disk_vmx("nowhere.vmdk"))
    result = run("vmx2xml", "--virt-type", "qemu", str(vmx))
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/nowhere.vmdk" in result.stdout
    assert not (tmp_path / "nowhere.vmdk").exists()


def test_missing_disk_is_bad_input_for_inspect(tmp_path: Path) -> None:
    """`vmshift inspect FILE.vmx` reaches the disks through the VMX reader: it needs them."""
    vmx = tmp_path / "vm.vmx"
    vmx.write_text(disk_vmx("nowhere.vmdk"))
    line = assert_bad_input(run("inspect", str(vmx)), str(vmx), "scsi0:0")
    assert "nowhere.vmdk does not exist" in line
    vmx.write_text(disk_vmx("[ds1] vm/disk.vmdk"))
    assert_bad_input(run("inspect", str(vmx)), "ESXi datastore")
