"""Serial and parallel ports, video, USB and passthrough from a VMX."""

from __future__ import annotations

import re

from vmshift.convert.vmx.lexer import VmxFile
from vmshift.errors import bad_input
from vmshift.model import CharDevice, PassthroughDevice, UsbController, Video

_FILE_TYPES = {"device", "file", "pipe", "network", "thinprint"}
MAX_PORTS = {"serial": 32, "parallel": 3}


def read_ports(vmx: VmxFile, kind: str) -> list[CharDevice]:
    """``serialN.*`` or ``parallelN.*``; fileType defaults to device, as in VMware."""
    pattern = re.compile(rf"^{kind}(\d+)\.present$")
    ports: list[CharDevice] = []
    for index in sorted(int(m.group(1)) for m in vmx.keys_matching(pattern)):
        prefix = f"{kind}{index}"
        if index >= MAX_PORTS[kind]:
            raise bad_input(vmx.path, f"{prefix}: port index too high",
                            vmx.line(f"{prefix}.present"))
        if not vmx.get_bool(f"{prefix}.present", False):
            continue
        file_type = (vmx.get(f"{prefix}.fileType") or "device").strip().lower()
        if file_type not in _FILE_TYPES:
            raise bad_input(vmx.path, f"{prefix}.fileType = {file_type!r}: expected one of "
                                      f"{sorted(_FILE_TYPES)}", vmx.line(f"{prefix}.fileType"))
        extra = {}
        for sub in ("pipe.endPoint", "network.endPoint", "tryNoRxLoss", "yieldOnMsrRead"):
            value = vmx.get(f"{prefix}.{sub}")
            if value is not None:
                extra[sub] = value
        ports.append(CharDevice(index=index, kind=file_type,
                                target=(vmx.get(f"{prefix}.fileName") or None), extra=extra))
    return ports


def read_video(vmx: VmxFile) -> Video:
    """The SVGA adapter; vramSize is in bytes in the VMX."""
    vram = vmx.get_int("svga.vramSize", 0, 4 * 1024 * 1024 * 1024)
    heads = vmx.get_int("svga.numDisplays", 1, 10)
    return Video(model="vmvga", vram_kib=vram // 1024 if vram else None, heads=heads)


def read_usb(vmx: VmxFile) -> list[UsbController]:
    controllers = []
    for key, model in (("usb.present", "uhci"), ("ehci.present", "ehci"),
                       ("usb_xhci.present", "xhci")):
        if vmx.get_bool(key, False):
            controllers.append(UsbController(model=model))
    return controllers


def read_passthrough(vmx: VmxFile) -> list[PassthroughDevice]:
    """PCI passthrough (pciPassthruN) and vGPUs: hardware that cannot follow the VM."""
    devices = []
    pattern = re.compile(r"^pcipassthru(\d+)\.present$")
    for index in sorted(int(m.group(1)) for m in vmx.keys_matching(pattern)):
        prefix = f"pciPassthru{index}"
        if not vmx.get_bool(f"{prefix}.present", False):
            continue
        vgpu = vmx.get(f"{prefix}.vgpu")
        devices.append(PassthroughDevice(
            kind="vgpu" if vgpu else "pci",
            address=vmx.get(f"{prefix}.id") or vgpu,
            label=prefix,
        ))
    return devices
