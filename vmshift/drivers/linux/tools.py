"""VMware Tools out, the QEMU guest agent in, and the first-boot service that does
whatever must run inside the booted guest.

Packaged tools (open-vm-tools, or VMware's own packages) are purged in the
appliance by the guest's package manager: it is one dpkg or rpm call, and the
guest then never starts vmtoolsd on KVM. A tarball install has only its own
uninstaller, which expects a running system: that runs at first boot.
Installing the guest agent needs the distribution's repositories, so it too
runs at first boot, and its outcome is reported from there.
"""

from __future__ import annotations

from importlib import resources

from vmshift.drivers.edits import Edit, EditPlan
from vmshift.inspect.files import GuestFiles
from vmshift.inspect.result import Guest

# A first-boot step: what it does (for the report), and its shell lines.
Step = tuple[str, str]
REPORT = "report interfaces, addresses and failed units on the console"

FIRSTBOOT_SCRIPT = "/usr/local/lib/vmshift/firstboot.sh"
FIRSTBOOT_UNIT = "/etc/systemd/system/vmshift-firstboot.service"
FIRSTBOOT_WANTS = "/etc/systemd/system/multi-user.target.wants/vmshift-firstboot.service"
TARBALL_UNINSTALLER = "/usr/bin/vmware-uninstall-tools.pl"
REPO_FILES = (("/etc/apt/sources.list.d", (".list", ".sources")),
              ("/etc/yum.repos.d", (".repo",)), ("/etc/zypp/repos.d", (".repo",)))
AGENT_INSTALL = {
    "apt": "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
           "qemu-guest-agent",
    "dnf": "dnf install -y qemu-guest-agent", "yum": "yum install -y qemu-guest-agent",
    "zypper": "zypper -n install qemu-guest-agent",
}


def _tool_packages(guest: Guest) -> list[str]:
    return sorted({a.name for a in guest.applications or [] if a.vmware_tools})


def _purge(guest: Guest, packages: list[str]) -> Edit | None:
    if guest.package_format == "deb":
        argv: tuple[str, ...] = ("dpkg", "--purge", *packages)
    elif guest.package_format == "rpm":
        argv = ("rpm", "-e", *packages)
    else:
        return None
    return Edit("vmware_tools", "run", None, "VMware's tools have no hypervisor to talk to "
                "on KVM", argv=argv)


def _repos(files: GuestFiles) -> list[Edit]:
    out = []
    for directory, suffixes in REPO_FILES:
        for name in files.listdir(directory):
            if "vmware" in name.lower() and name.endswith(suffixes):
                out.append(Edit("vmware_tools", "remove", f"{directory}/{name}",
                                "a VMware-only package repository"))
    return out


def plan_vmware_tools(files: GuestFiles, guest: Guest, keep: bool) -> tuple[EditPlan, list[Step]]:
    """The appliance's edits, and the first-boot steps still needed."""
    plan = EditPlan()
    packages = _tool_packages(guest)
    tarball = files.is_file(TARBALL_UNINSTALLER)
    if keep:
        if packages or tarball:
            plan.notes.append("VMware Tools kept (--keep-vmware-tools)")
        return plan, []
    steps: list[Step] = []
    if packages:
        purge = _purge(guest, packages)
        if purge is None:
            plan.notes.append("VMware Tools packages found but no known package manager: "
                              "left installed")
        else:
            plan.add(purge)
    if tarball:
        steps.append(("uninstall VMware Tools (tarball install)",
                      f'say "VMware Tools (tarball): uninstalling"\n'
                      f"{TARBALL_UNINSTALLER} --default >>\"$LOG\" 2>&1 && "
                      f'say "VMware Tools removed" || say "VMware Tools: uninstaller failed"'))
    for edit in _repos(files):
        plan.add(edit)
    if not packages and not tarball:
        plan.notes.append("no VMware Tools in the guest")
    return plan, steps


def agent_step(files: GuestFiles, guest: Guest) -> tuple[Step | None, str]:
    """A first-boot step installing qemu-guest-agent, or why there is none."""
    if any("qemu-guest-agent" == a.name for a in guest.applications or []):
        return None, "qemu-guest-agent already installed"
    manager = guest.package_management
    command = AGENT_INSTALL.get(manager or "")
    if command is None:
        return None, f"no known package manager ({manager}): qemu-guest-agent not installed"
    line = (f"if timeout 600 sh -c '{command}' >>\"$LOG\" 2>&1; then "
            "systemctl enable --now qemu-guest-agent >/dev/null 2>&1; "
            'say "qemu-guest-agent: installed"; else '
            'say "qemu-guest-agent: could not be installed (see $LOG)"; fi')
    return ("install qemu-guest-agent", line), \
        f"qemu-guest-agent: to be installed at first boot by {manager}"


def plan_firstboot(files: GuestFiles, early: list[Step],
                   late: list[Step]) -> tuple[EditPlan, list[str]]:
    """The one-shot service: EARLY steps, the report of the guest's state, LATE steps;
    and what it will do (nothing without systemd: no service is installed then)."""
    plan = EditPlan()
    if not files.is_dir("/etc/systemd/system"):
        plan.notes.append("no systemd in the guest: no first-boot service; not done: "
                          + "; ".join([what for what, _ in early + late] or ["nothing"]))
        return plan, []
    here = resources.files("vmshift.drivers.linux") / "files"
    script = (here / "firstboot.sh").read_text() \
        .replace("@EARLY@", "\n".join(sh for _, sh in early)) \
        .replace("@LATE@", "\n".join(sh for _, sh in late))
    plan.add(Edit("firstboot", "write", FIRSTBOOT_SCRIPT, "runs once in the booted guest",
                  content=script.encode(), backup=False, mode=0o755))
    plan.add(Edit("firstboot", "write", FIRSTBOOT_UNIT, "starts the first-boot script",
                  content=(here / "firstboot.service").read_bytes(), backup=False))
    plan.add(Edit("firstboot", "symlink", FIRSTBOOT_WANTS, "enabled for multi-user",
                  source=FIRSTBOOT_UNIT))
    return plan, [what for what, _ in early] + [REPORT] + [what for what, _ in late]


CACHE_FILES = ("/etc/lvm/devices/system.devices", "/etc/blkid.tab", "/etc/blkid/blkid.tab")


def plan_caches(files: GuestFiles, relabel_needed: bool) -> EditPlan:
    """Caches that remember VMware's devices, and SELinux's view of changed files."""
    plan = EditPlan()
    for path in CACHE_FILES:
        if files.is_file(path):
            plan.add(Edit("caches", "remove", path, "remembers the source's disks by their "
                          "VMware serials"))
    selinux = (files.read("/etc/selinux/config") or b"").decode(errors="replace")
    if relabel_needed and any(f"SELINUX={m}" in selinux for m in ("enforcing", "permissive")):
        plan.add(Edit("caches", "write", "/.autorelabel", "files changed on an SELinux guest: "
                      "relabel at first boot", content=b"", backup=False))
    return plan
