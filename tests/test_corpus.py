"""The VMX conformance corpus: every file converts or fails with one clean line.

A converted file must pass libvirt's schema (virt-xml-validate, for real) and
agree with libvirt 9.0's own reading of the same VMX on the facts: name, UUID,
memory, vCPUs, disk files in order, CD-ROM count, NIC MACs, firmware, serial
port count. Where vmshift deliberately differs, DIFFERENCES says why, and a
test checks that each listed difference really occurs (so the list cannot go
stale and hide a regression).
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CORPUS
from vmshift.convert import libvirt_xml as lx
from vmshift.convert.chooser import RULES
from vmshift.convert.vmx import read_vmx
from vmshift.convert.writer import build_domain_xml
from vmshift.errors import BadInput

VMX_DIR = CORPUS / "vmx"
REF_DIR = CORPUS / "vmx-libvirt-xml"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"

# file stem -> {fact: reason}. Facts: name uuid memory vcpus disks cdroms macs firmware serials
DIFFERENCES: dict[str, dict[str, str]] = {
    "scsi-driver-max": {
        "disks": "libvirt 9.0 reads units 0-6 only of a pvscsi controller; VMware allows "
                 "0-15 (7 is the controller itself), so vmshift keeps all 15 disks",
    },
    "case-insensitive-1": {
        "cdroms": "ide0:0 is a CD-ROM drive backed by the vSphere client's drive "
                  "(clientDevice); libvirt drops the drive, vmshift keeps it, empty, since "
                  "the guest has it",
    },
    "case-insensitive-2": {"cdroms": "as case-insensitive-1"},
    "cdrom-scsi-passthru": {
        "cdroms": "libvirt passes the ESXi host's drive through as a 'lun'; that device "
                  "does not exist on a KVM host, so vmshift keeps an empty CD-ROM drive",
    },
    "vmx2xml-cdrom-ide-raw-auto-detect": {
        "cdroms": "libvirt writes an 'auto detect' host drive as a 'lun'; vmshift keeps "
                  "the guest's CD-ROM drive, empty",
    },
    "vmx2xml-cdrom-scsi-raw-auto-detect": {
        "cdroms": "as vmx2xml-cdrom-ide-raw-auto-detect",
    },
    "cdrom-scsi-raw-device": {
        "cdroms": "libvirt passes the source host's /dev/scd0 through as a 'lun'; vmshift "
                  "keeps the guest's CD-ROM drive, empty (that device is not on the KVM host)",
    },
    "vmx2xml-cdrom-ide-raw-device": {"cdroms": "as cdrom-scsi-raw-device"},
}
# Applies to every file: libvirt writes an all-zero UUID when uuid.bios is absent;
# vmshift writes none (libvirt then generates one): zero is not an identity, and
# two such domains would collide.
ZERO_UUID_REASON = "no uuid.bios: libvirt writes all zeros, vmshift none"
# file stem -> the error vmshift gives (a substring) and why that is right.
EXPECTED_ERRORS: dict[str, tuple[str, str]] = {
    "scsi-driver-superwide-max": (
        "already attached as scsi0:63",
        "scsi0:63 and scsi0:64 both name harddisk63.vmdk; VMware cannot power that on "
        "(the file is locked) and two writers would corrupt it on KVM; libvirt 9.0 did "
        "not notice because it ignores unit 64"),
}


@dataclass
class Facts:
    name: str | None
    uuid: str | None
    memory_kib: int
    vcpus: int
    disk_stems: list[str]
    cdroms: int
    macs: list[str]
    firmware: str | None
    serials: int


def facts(domain: lx.Domain, *, ours: bool) -> Facts:
    disks = [d for d in domain.disks if d.device == "disk"]
    cdroms = [d for d in domain.disks if d.device == "cdrom"]
    serials = [s for s in domain.serials if not (ours and s.alias == RULES["console_alias"])]
    return Facts(
        name=domain.name, uuid=domain.uuid, memory_kib=domain.memory_kib, vcpus=domain.vcpus,
        disk_stems=[Path(d.source_path or d.source_volume or "").stem for d in disks],
        cdroms=len(cdroms), macs=[i.mac for i in domain.interfaces],
        firmware=domain.os_firmware, serials=len(serials))


def corpus_files() -> list[Path]:
    return sorted(VMX_DIR.glob("*.vmx")) if VMX_DIR.is_dir() else []


def rejected_by_libvirt() -> dict[str, str]:
    path = REF_DIR / "REJECTED.tsv"
    with open(path, newline="") as handle:
        return {row[0]: row[1] for row in csv.reader(handle, delimiter="\t") if row}


def test_corpus_is_present() -> None:
    """No corpus is a failure, never a skip."""
    assert VMX_DIR.is_dir(), f"corpus missing: {VMX_DIR}"
    assert len(corpus_files()) >= 58
    assert (REF_DIR / "REJECTED.tsv").is_file()


def convert(path: Path) -> tuple[str, list[str]]:
    result = build_domain_xml(read_vmx(path), virt_type="qemu")
    return result.xml, result.notes


def validate(xml: str, tmp_path: Path) -> None:
    target = tmp_path / "domain.xml"
    target.write_text(xml)
    run = subprocess.run(["virt-xml-validate", str(target), "domain"], capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, f"virt-xml-validate: {run.stderr or run.stdout}"


def compare(stem: str, ours: Facts, ref: Facts, ref_has_name: bool) -> list[str]:
    """The facts that differ and are not listed as deliberate."""
    allowed = DIFFERENCES.get(stem, {})
    problems = []
    checks = {
        "name": (ours.name, ref.name) if ref_has_name else (None, None),
        "uuid": (ours.uuid, None if ref.uuid == ZERO_UUID else ref.uuid),
        "memory": (ours.memory_kib, ref.memory_kib),
        "vcpus": (ours.vcpus, ref.vcpus),
        "disks": (ours.disk_stems, ref.disk_stems),
        "cdroms": (ours.cdroms, ref.cdroms),
        "macs": (ours.macs, ref.macs),
        "firmware": (ours.firmware, ref.firmware),
        "serials": (ours.serials, ref.serials),
    }
    for fact, (mine, theirs) in checks.items():
        if mine != theirs and fact not in allowed:
            problems.append(f"{fact}: vmshift {mine!r} != libvirt {theirs!r}")
    return problems


@pytest.mark.parametrize("path", corpus_files() or [VMX_DIR / "MISSING"],
                         ids=lambda p: p.stem)
def test_corpus_file(path: Path, tmp_path: Path) -> None:
    assert path.is_file(), f"corpus missing: {path}"
    stem = path.stem
    try:
        xml, _notes = convert(path)
    except BadInput as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message
        assert stem in EXPECTED_ERRORS, f"unexpected refusal: {message}"
        assert EXPECTED_ERRORS[stem][0] in message
        return
    assert stem not in EXPECTED_ERRORS, "expected a refusal"
    validate(xml, tmp_path)
    ours = facts(lx.Domain.from_xml(xml), ours=True)
    ref_path = REF_DIR / f"{stem}.xml"
    if not ref_path.exists():
        assert f"{path.name}" in rejected_by_libvirt()
        check_rejected_by_libvirt(stem, ours)
        return
    ref_domain = lx.Domain.from_xml(ref_path.read_bytes())
    problems = compare(stem, ours, facts(ref_domain, ours=False), ref_domain.name is not None)
    assert not problems, "; ".join(problems)


def check_rejected_by_libvirt(stem: str, ours: Facts) -> None:
    """libvirt 9.0 refuses VDS NICs missing a port id; vmshift needs neither the port
    nor (with a default network) the portgroup, and keeps the MAC."""
    assert stem.startswith("ethernet-vds-")
    assert ours.macs == ["00:50:56:87:65:43"]
    assert ours.memory_kib == 32768 and ours.vcpus == 1


@pytest.mark.parametrize("stem", sorted(DIFFERENCES))
def test_listed_difference_is_real(stem: str) -> None:
    """Each deliberate difference must actually occur, with the reason on record."""
    path = VMX_DIR / f"{stem}.vmx"
    xml, _ = convert(path)
    ref = lx.Domain.from_xml((REF_DIR / f"{stem}.xml").read_bytes())
    ours, theirs = facts(lx.Domain.from_xml(xml), ours=True), facts(ref, ours=False)
    for fact, reason in DIFFERENCES[stem].items():
        assert reason
        field_name = {"disks": "disk_stems", "memory": "memory_kib"}.get(fact, fact)
        assert getattr(ours, field_name) != getattr(theirs, field_name), f"{fact} agrees now"


def test_zero_uuid_difference_is_real() -> None:
    """libvirt's all-zero UUID for a VMX without uuid.bios; ours leaves it to libvirt."""
    xml, _ = convert(VMX_DIR / "annotation.vmx")
    assert lx.Domain.from_xml(xml).uuid is None
    ref = lx.Domain.from_xml((REF_DIR / "annotation.xml").read_bytes())
    assert ref.uuid == ZERO_UUID


def test_annotation_escapes_decoded() -> None:
    xml, _ = convert(VMX_DIR / "annotation.vmx")
    assert lx.Domain.from_xml(xml).description == (
        'Some |text| to test the "escaping": ||""||"| Escaped!')


FACTS = ("name", "uuid", "memory", "vcpus", "disks", "cdroms", "macs", "firmware", "serials")


def test_deliberate_differences_listed() -> None:
    """Print the list (pytest -s shows it): the report of where vmshift and libvirt part.

    Every entry must name a file of the corpus (a renamed file would leave a stale
    entry that excuses nothing), and DIFFERENCES entries a file libvirt read, a
    fact the comparison knows and a reason; an "as OTHER" reason must point at an
    entry listing the same fact."""
    lines = [f"{stem}: {fact}: {why}" for stem, d in DIFFERENCES.items() for fact, why in d.items()]
    lines.append(f"(all files): uuid: {ZERO_UUID_REASON}")
    lines += [f"{stem}: refused: {why}" for stem, (_, why) in EXPECTED_ERRORS.items()]
    print("\n".join(lines))
    for stem in [*DIFFERENCES, *EXPECTED_ERRORS]:
        assert (VMX_DIR / f"{stem}.vmx").is_file(), f"{stem}: not in the corpus"
    for stem, listed in DIFFERENCES.items():
        assert (REF_DIR / f"{stem}.xml").is_file(), f"{stem}: libvirt's reading is missing"
        for fact, why in listed.items():
            assert fact in FACTS and why.strip(), (stem, fact)
            if why.startswith("as "):
                other = why.removeprefix("as ")
                assert other != stem and fact in DIFFERENCES.get(other, {}), (stem, why)
    for stem, (error, why) in EXPECTED_ERRORS.items():
        assert error.strip() and why.strip(), stem
