"""What a VMware guest OS id (``guestOS`` in a VMX, ``guestId`` in vSphere,
``vmw:osType`` in an OVF) says about the guest: family, architecture, age.

Rules as data: the tables below are the whole policy. VMware ids are
case-insensitive and 64-bit ones end in ``-64`` (``debian12-64``,
``windows2019srv-64``) or ``64Guest`` in vSphere's spelling
(``debian12_64Guest``).
"""

from __future__ import annotations

import re

# id prefix -> family. First match wins, so longer prefixes come first.
FAMILY_PREFIXES: list[tuple[str, str]] = [
    ("windows", "windows"), ("winnet", "windows"), ("winxp", "windows"),
    ("winvista", "windows"), ("win", "windows"), ("nt4", "windows"), ("longhorn", "windows"),
    ("rhel", "linux"), ("centos", "linux"), ("oracle", "linux"), ("debian", "linux"),
    ("ubuntu", "linux"), ("sles", "linux"), ("suse", "linux"), ("opensuse", "linux"),
    ("fedora", "linux"), ("mandrake", "linux"), ("mandriva", "linux"), ("turbolinux", "linux"),
    ("redhat", "linux"), ("asianux", "linux"), ("coreos", "linux"), ("photon", "linux"),
    ("amazonlinux", "linux"), ("rockylinux", "linux"), ("almalinux", "linux"),
    ("vmwarephoton", "linux"), ("crxpod", "linux"), ("genericlinux", "linux"),
    ("other6xlinux", "linux"), ("other5xlinux", "linux"), ("other4xlinux", "linux"),
    ("other3xlinux", "linux"), ("other26xlinux", "linux"), ("other24xlinux", "linux"),
    ("otherlinux", "linux"),
    ("freebsd", "other"), ("solaris", "other"), ("darwin", "other"), ("netware", "other"),
    ("dos", "other"), ("os2", "other"), ("other", "other"),
]

# Guests too old for the q35 chipset (no AHCI/PCIe awareness, or no ACPI that
# q35 provides): they get the i440fx "pc" machine and IDE disks when virtio is
# not available. Windows XP/2003 and older, Linux 2.4, RHEL <= 4, SLES <= 9.
OLD_GUEST_PREFIXES = (
    "win31", "win95", "win98", "winme", "nt4", "win2000", "winnt", "winxp", "winnet",
    "dos", "os2", "other24xlinux", "rhel2", "rhel3", "rhel4", "sles9", "sles8", "sles-",
    "suse", "redhat", "mandrake", "turbolinux", "netware",
)


def normalise(guest_id: str) -> str:
    """vSphere's 'debian12_64Guest' and the VMX's 'debian12-64' -> 'debian12-64'."""
    gid = guest_id.strip().lower()
    if gid.endswith("guest"):
        gid = gid[: -len("guest")]
        gid = re.sub(r"_?64$", "-64", gid)
    return gid


def family(guest_id: str | None) -> str | None:
    if not guest_id:
        return None
    gid = normalise(guest_id)
    for prefix, fam in FAMILY_PREFIXES:
        if gid.startswith(prefix):
            return fam
    return "other"


def arch(guest_id: str | None) -> str | None:
    """x86_64 for 64-bit ids, i686 for the others (VMware has no other x86 ids)."""
    if not guest_id:
        return None
    gid = normalise(guest_id)
    if gid.startswith("arm-") or gid.startswith("arm"):
        return "aarch64"
    return "x86_64" if gid.endswith("-64") or gid.endswith("64") else "i686"


def is_old(guest_id: str | None) -> bool:
    if not guest_id:
        return False
    gid = normalise(guest_id)
    return gid.startswith(OLD_GUEST_PREFIXES)
