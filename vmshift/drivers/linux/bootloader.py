"""The boot loader: serial console, GRUB regeneration, and UEFI's fallback path.

GRUB's configuration is regenerated only when something it contains changed
(a device name, the console), with the distribution's own tool, because each
run costs tens of seconds in the emulated appliance.
"""

from __future__ import annotations

import re

from vmshift.drivers.edits import Edit, EditPlan
from vmshift.inspect.files import GuestFiles
from vmshift.inspect.result import Guest

DEFAULT_GRUB = "/etc/default/grub"
SERIAL_ARGS = "console=tty0 console=ttyS0,115200n8"
ESP_DIRS = ("/boot/efi", "/efi", "/boot")


def _grub_defaults_text(files: GuestFiles) -> str:
    texts = [(files.read(DEFAULT_GRUB) or b"").decode(errors="replace")]
    texts += [(files.read(f"{DEFAULT_GRUB}.d/{n}") or b"").decode(errors="replace")
              for n in files.listdir(f"{DEFAULT_GRUB}.d") if n.endswith(".cfg")]
    return "\n".join(texts)


def plan_console(files: GuestFiles, guest: Guest) -> tuple[EditPlan, bool]:
    """console=ttyS0 on the kernel command line, unless the guest already sets a console."""
    plan = EditPlan()
    if guest.bootloader != "grub2" or files.read(DEFAULT_GRUB) is None:
        plan.notes.append("serial console: no GRUB 2 defaults file; kernel command line "
                          "left as it is")
        return plan, False
    if re.search(r"\bconsole=", _grub_defaults_text(files)):
        plan.notes.append("serial console: the guest already sets console=")
        return plan, False
    text = (files.read(DEFAULT_GRUB) or b"").decode(errors="surrogateescape")
    m = re.search(r'^GRUB_CMDLINE_LINUX="([^"]*)"', text, flags=re.M)
    if m:
        args = (m.group(1) + " " + SERIAL_ARGS).strip()
        text = text[:m.start()] + f'GRUB_CMDLINE_LINUX="{args}"' + text[m.end():]
    else:
        text += f'\nGRUB_CMDLINE_LINUX="{SERIAL_ARGS}"\n'
    plan.add(Edit("console", "write", DEFAULT_GRUB, "the kernel's console on the serial port",
                  content=text.encode(errors="surrogateescape")))
    return plan, True


def _uuid_setting(files: GuestFiles) -> Edit | None:
    """GRUB_DISABLE_LINUX_UUID=true would write the appliance's device name into grub.cfg."""
    text = (files.read(DEFAULT_GRUB) or b"").decode(errors="surrogateescape")
    new = re.sub(r"^(GRUB_DISABLE_LINUX_UUID=)\S*", r"#\1true  # vmshift: root by UUID",
                 text, flags=re.M)
    if new == text:
        return None
    return Edit("bootloader", "write", DEFAULT_GRUB, "root by UUID, not by device name",
                content=new.encode(errors="surrogateescape"))


def grub_regeneration(files: GuestFiles) -> Edit | None:
    """The distribution's own way of rewriting grub.cfg."""
    if any(files.is_file(p) for p in ("/usr/sbin/update-grub", "/sbin/update-grub")):
        return Edit("bootloader", "run", "/boot/grub/grub.cfg", "regenerate GRUB's "
                    "configuration", argv=("update-grub",))
    for tool, cfg in (("grub2-mkconfig", "/boot/grub2/grub.cfg"),
                      ("grub-mkconfig", "/boot/grub/grub.cfg")):
        if any(files.is_file(f"{d}/{tool}") for d in ("/usr/sbin", "/sbin", "/usr/bin")) \
                and files.is_file(cfg):
            return Edit("bootloader", "run", cfg, "regenerate GRUB's configuration",
                        argv=(tool, "-o", cfg))
    return None


def plan_grub(files: GuestFiles, needed: bool) -> EditPlan:
    plan = EditPlan()
    if not needed:
        plan.notes.append("GRUB configuration unchanged: not regenerated")
        return plan
    uuid = _uuid_setting(files)
    if uuid:
        plan.add(uuid)
    regen = grub_regeneration(files)
    if regen is None:
        plan.notes.append("no GRUB configuration tool found in the guest: grub.cfg not "
                          "regenerated")
    else:
        plan.add(regen)
    return plan


def _esp(files: GuestFiles) -> str | None:
    for d in ESP_DIRS:
        if files.is_dir(f"{d}/EFI"):
            return f"{d}/EFI"
    return None


def plan_uefi_fallback(files: GuestFiles, guest: Guest) -> EditPlan:
    """VMware's NVRAM boot entries stay behind: boot from \\EFI\\BOOT\\BOOTX64.EFI."""
    plan = EditPlan()
    if guest.firmware_needed != "uefi":
        return plan
    efi = _esp(files)
    if efi is None:
        plan.notes.append("UEFI guest without a mounted ESP: fallback loader not checked")
        return plan
    boot = next((d for d in files.listdir(efi) if d.upper() == "BOOT"), "BOOT")
    if any(n.upper() == "BOOTX64.EFI" for n in files.listdir(f"{efi}/{boot}")):
        plan.notes.append(f"{efi}/{boot}/BOOTX64.EFI present: firmware finds the loader")
        return plan
    for vendor in files.listdir(efi):
        names = {n.lower(): n for n in files.listdir(f"{efi}/{vendor}")}
        loader = names.get("shimx64.efi") or names.get("grubx64.efi")
        if vendor.upper() == "BOOT" or loader is None:
            continue
        plan.add(Edit("uefi", "copy", f"{efi}/BOOT/BOOTX64.EFI", "no NVRAM boot entry on "
                      "KVM: the firmware's fallback path", source=f"{efi}/{vendor}/{loader}"))
        # shim loads grubx64.efi (and mmx64.efi) from its own directory; GRUB's stub
        # config there points at the real one.
        for extra in ("grubx64.efi", "mmx64.efi", "grub.cfg"):
            if extra in names and names[extra] != loader:
                plan.add(Edit("uefi", "copy", f"{efi}/BOOT/{names[extra]}",
                              "beside the fallback loader", source=f"{efi}/{vendor}/"
                              f"{names[extra]}"))
        return plan
    plan.notes.append(f"no boot loader found under {efi}: the guest may not boot on UEFI")
    return plan
