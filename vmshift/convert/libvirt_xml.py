"""Object <-> XML mapping for libvirt domain XML (lxml only, no policy).

Each class wraps one lxml element and declares its properties as XPath-like
paths (``"./memory"`` for text, ``"./os/type/@arch"`` for an attribute), in the
manner of virt-install's XMLBuilder: the element tree *is* the storage, so an
object parsed from libvirt's XML keeps everything it did not declare and
serialises back unchanged. Which devices a KVM guest should get is decided in
``vmshift.convert.chooser``; nothing here knows about VMware or KVM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from lxml import etree

T = TypeVar("T", bound="XmlObject")

# Boolean attributes in libvirt are spelled yes/no (or on/off, per element).
YES_NO = ("yes", "no")
ON_OFF = ("on", "off")


def _split(path: str) -> tuple[list[str], str | None]:
    """'./a/b/@c' -> (['a', 'b'], 'c'); './a/b' -> (['a', 'b'], None)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    attr = parts.pop()[1:] if parts and parts[-1].startswith("@") else None
    return parts, attr


def _find(node: etree._Element, steps: list[str], create: bool) -> etree._Element | None:
    for step in steps:
        child = node.find(step)
        if child is None:
            if not create:
                return None
            child = etree.SubElement(node, step)
        node = child
    return node


class Prop:
    """A declared property: text or attribute at a path under the object's element.

    ``kind`` converts on read (int, str) ; ``boolean`` gives the two spellings
    for True/False. Setting None removes the attribute or element.
    """

    def __init__(self, path: str, kind: Callable[[str], Any] = str,
                 boolean: tuple[str, str] | None = None) -> None:
        self.steps, self.attr = _split(path)
        self.kind, self.boolean = kind, boolean

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: XmlObject | None, owner: type) -> Any:
        if obj is None:
            return self
        node = _find(obj.node, self.steps, create=False)
        if node is None:
            return None
        raw = node.get(self.attr) if self.attr else node.text
        if raw is None:
            return None
        if self.boolean:
            return raw == self.boolean[0]
        return self.kind(raw)

    def __set__(self, obj: XmlObject, value: Any) -> None:
        if value is None:
            self._remove(obj)
            return
        if self.boolean:
            value = self.boolean[0] if value else self.boolean[1]
        node = _find(obj.node, self.steps, create=True)
        assert node is not None
        if self.attr:
            node.set(self.attr, str(value))
        else:
            node.text = str(value)

    def _remove(self, obj: XmlObject) -> None:
        node = _find(obj.node, self.steps, create=False)
        if node is None:
            return
        if self.attr:
            node.attrib.pop(self.attr, None)
        elif node is not obj.node:
            node.getparent().remove(node)


class Flag:
    """A declared marker element (<readonly/>, <shareable/>): present means True."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __get__(self, obj: XmlObject | None, owner: type) -> Any:
        if obj is None:
            return self
        return obj.node.find(self.tag) is not None

    def __set__(self, obj: XmlObject, on: bool) -> None:
        existing = obj.node.find(self.tag)
        if on and existing is None:
            etree.SubElement(obj.node, self.tag)
        elif not on and existing is not None:
            obj.node.remove(existing)


class Children(Generic[T]):
    """A list of child objects found at ``path`` (e.g. './devices/disk')."""

    def __init__(self, cls: Callable[[], type[T]], path: str) -> None:
        self.cls_factory, (self.steps, _) = cls, _split(path)

    def __get__(self, obj: XmlObject | None, owner: type) -> list[T]:
        if obj is None:
            return self  # type: ignore[return-value]
        parent = _find(obj.node, self.steps[:-1], create=False)
        if parent is None:
            return []
        cls = self.cls_factory()
        return [cls(node=n) for n in parent.findall(self.steps[-1])]


class XmlObject:
    """One element of the domain document."""

    TAG = ""

    def __init__(self, node: etree._Element | None = None, **props: Any) -> None:
        self.node = node if node is not None else etree.Element(self.TAG)
        for name, value in props.items():
            if not hasattr(type(self), name):
                raise AttributeError(f"{type(self).__name__} has no property {name!r}")
            setattr(self, name, value)

    def add(self, child: T, under: str = ".") -> T:
        """Append a child object (under a sub-path, created on demand)."""
        parent = _find(self.node, _split(under)[0], create=True)
        assert parent is not None
        parent.append(child.node)
        return child

    def add_element(self, tag: str, under: str = ".", **attrs: str) -> etree._Element:
        """Append a bare element with attributes (for one-off leaf elements)."""
        parent = _find(self.node, _split(under)[0], create=True)
        assert parent is not None
        return etree.SubElement(parent, tag, {k.replace("_", "-"): v for k, v in attrs.items()})

    def to_xml(self) -> str:
        return etree.tostring(self.node, pretty_print=True, encoding="unicode")

    def fragment(self, path: str) -> str | None:
        """The element at PATH serialised as it is (e.g. <cpu> for compareCPU)."""
        node = _find(self.node, _split(path)[0], create=False)
        return etree.tostring(node, encoding="unicode") if node is not None else None

    @classmethod
    def from_xml(cls: type[T], text: str | bytes) -> T:
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        return cls(node=etree.fromstring(text.encode() if isinstance(text, str) else text,
                                         parser))


# --- devices ---------------------------------------------------------------


class Disk(XmlObject):
    TAG = "disk"
    type = Prop("./@type")  # file, block, volume
    device = Prop("./@device")  # disk, cdrom, floppy, lun
    driver_name = Prop("./driver/@name")
    driver_type = Prop("./driver/@type")  # qcow2, raw, vmdk
    driver_cache = Prop("./driver/@cache")
    source_file = Prop("./source/@file")
    source_dev = Prop("./source/@dev")
    source_pool = Prop("./source/@pool")
    source_volume = Prop("./source/@volume")
    source_name = Prop("./source/@name")  # a network disk's image (rbd pool/image, ...)
    # A byte range of the source file (a disk inside an OVA tar), read in place.
    slice_type = Prop("./source/slices/slice/@type")
    slice_offset = Prop("./source/slices/slice/@offset", int)
    slice_size = Prop("./source/slices/slice/@size", int)
    target_dev = Prop("./target/@dev")
    target_bus = Prop("./target/@bus")
    serial = Prop("./serial")
    boot_order = Prop("./boot/@order", int)
    address_type = Prop("./address/@type")
    address_controller = Prop("./address/@controller", int)
    address_bus = Prop("./address/@bus", int)
    address_target = Prop("./address/@target", int)
    address_unit = Prop("./address/@unit", int)
    alias = Prop("./alias/@name")

    readonly = Flag("readonly")
    shareable = Flag("shareable")
    transient = Flag("transient")

    @property
    def source_path(self) -> str | None:
        """The file or device behind the disk, whatever its type."""
        return self.source_file or self.source_dev

    def point_at_file(self, path: str) -> None:
        """Make this a file disk on PATH. Nothing of the old source stays: its
        attributes and children, and the backing chain, which described the
        old files (a copy is flattened)."""
        self.type = "file"
        src = _find(self.node, ["source"], create=True)
        assert src is not None
        src.attrib.clear()
        for child in list(src):
            src.remove(child)
        src.set("file", path)
        for backing in self.node.findall("backingStore"):
            self.node.remove(backing)

    def backing_chain(self) -> list[str]:
        """The files under this disk's image, nearest first (<backingStore> nesting)."""
        chain, node = [], self.node.find("backingStore")
        while node is not None:
            src = node.find("source")
            path = src.get("file") or src.get("dev") if src is not None else None
            if path:
                chain.append(path)
            node = node.find("backingStore")
        return chain


class Controller(XmlObject):
    TAG = "controller"
    type = Prop("./@type")
    index = Prop("./@index", int)
    model = Prop("./@model")


class Interface(XmlObject):
    TAG = "interface"
    type = Prop("./@type")  # network, bridge, user, null, vds...
    mac = Prop("./mac/@address")
    source_network = Prop("./source/@network")
    source_bridge = Prop("./source/@bridge")
    source_portgroup = Prop("./source/@portgroup")
    source_dev = Prop("./source/@dev")  # type='direct': the host interface
    model = Prop("./model/@type")
    boot_order = Prop("./boot/@order", int)
    alias = Prop("./alias/@name")


class CharDev(XmlObject):
    """<serial>, <parallel>, <console> and <channel> share one shape."""

    TAG = "serial"
    type = Prop("./@type")  # pty, file, dev, pipe, tcp, unix, null
    source_path = Prop("./source/@path")
    source_mode = Prop("./source/@mode")
    source_host = Prop("./source/@host")
    source_service = Prop("./source/@service")
    protocol = Prop("./protocol/@type")
    target_type = Prop("./target/@type")
    target_port = Prop("./target/@port", int)
    target_name = Prop("./target/@name")
    target_model = Prop("./target/model/@name")
    alias = Prop("./alias/@name")


class Serial(CharDev):
    TAG = "serial"


class Parallel(CharDev):
    TAG = "parallel"


class Console(CharDev):
    TAG = "console"


class Channel(CharDev):
    TAG = "channel"


class Video(XmlObject):
    TAG = "video"
    model = Prop("./model/@type")
    vram = Prop("./model/@vram", int)
    heads = Prop("./model/@heads", int)
    primary = Prop("./model/@primary", boolean=YES_NO)


class Graphics(XmlObject):
    TAG = "graphics"
    type = Prop("./@type")
    autoport = Prop("./@autoport", boolean=YES_NO)
    listen_type = Prop("./listen/@type")
    listen_address = Prop("./listen/@address")


class Rng(XmlObject):
    TAG = "rng"
    model = Prop("./@model")
    backend_model = Prop("./backend/@model")
    backend = Prop("./backend")


class MemBalloon(XmlObject):
    TAG = "memballoon"
    model = Prop("./@model")


class HostDev(XmlObject):
    TAG = "hostdev"
    type = Prop("./@type")  # pci, usb, scsi, mdev
    mode = Prop("./@mode")  # subsystem, capabilities


class Tpm(XmlObject):
    TAG = "tpm"
    model = Prop("./@model")
    backend_type = Prop("./backend/@type")  # emulator, passthrough
    backend_version = Prop("./backend/@version")
    # Where swtpm keeps its state, when not libvirt's default directory.
    source_type = Prop("./backend/source/@type")  # dir (file: libvirt 9.10+)
    source_path = Prop("./backend/source/@path")


class Lease(XmlObject):
    TAG = "lease"
    lockspace = Prop("./lockspace")
    key = Prop("./key")


class Filesystem(XmlObject):
    TAG = "filesystem"
    source_dir = Prop("./source/@dir")
    target_dir = Prop("./target/@dir")


class Timer(XmlObject):
    TAG = "timer"
    name = Prop("./@name")
    present = Prop("./@present", boolean=YES_NO)
    tickpolicy = Prop("./@tickpolicy")


class FirmwareFeature(XmlObject):
    TAG = "feature"
    name = Prop("./@name")
    enabled = Prop("./@enabled", boolean=YES_NO)


class HypervFeature(XmlObject):
    """One Hyper-V enlightenment, e.g. <relaxed state='on'/>; TAG is set per instance."""

    state = Prop("./@state", boolean=ON_OFF)
    retries = Prop("./@retries", int)

    def __init__(self, name: str | None = None, node: etree._Element | None = None,
                 **props: Any) -> None:
        super().__init__(node if node is not None else etree.Element(name or "relaxed"),
                         **props)


# --- the domain -------------------------------------------------------------


class Domain(XmlObject):
    TAG = "domain"
    type = Prop("./@type")  # kvm, qemu (and vmware in libvirt's ESX output)
    name = Prop("./name")
    uuid = Prop("./uuid")
    title = Prop("./title")
    description = Prop("./description")
    memory_kib = Prop("./memory", int)
    memory_unit = Prop("./memory/@unit")
    current_memory_kib = Prop("./currentMemory", int)
    current_memory_unit = Prop("./currentMemory/@unit")
    vcpus = Prop("./vcpu", int)
    vcpu_placement = Prop("./vcpu/@placement")
    os_firmware = Prop("./os/@firmware")  # efi or bios: libvirt picks the files
    os_type = Prop("./os/type")
    os_arch = Prop("./os/type/@arch")
    os_machine = Prop("./os/type/@machine")
    os_loader_type = Prop("./os/loader/@type")  # pflash: UEFI
    nvram = Prop("./os/nvram")  # the vars file (the classic spelling)
    nvram_type = Prop("./os/nvram/@type")  # file, network... (libvirt 8.5+)
    nvram_source_file = Prop("./os/nvram/source/@file")
    cpu_mode = Prop("./cpu/@mode")
    cpu_match = Prop("./cpu/@match")
    cpu_model = Prop("./cpu/model")
    cpu_sockets = Prop("./cpu/topology/@sockets", int)
    cpu_dies = Prop("./cpu/topology/@dies", int)
    cpu_cores = Prop("./cpu/topology/@cores", int)
    cpu_threads = Prop("./cpu/topology/@threads", int)
    clock_offset = Prop("./clock/@offset")
    on_poweroff = Prop("./on_poweroff")
    on_reboot = Prop("./on_reboot")
    on_crash = Prop("./on_crash")
    smm = Prop("./features/smm/@state", boolean=ON_OFF)
    hyperv_mode = Prop("./features/hyperv/@mode")

    firmware_features = Children(lambda: FirmwareFeature, "./os/firmware/feature")
    timers = Children(lambda: Timer, "./clock/timer")
    disks = Children(lambda: Disk, "./devices/disk")
    controllers = Children(lambda: Controller, "./devices/controller")
    interfaces = Children(lambda: Interface, "./devices/interface")
    serials = Children(lambda: Serial, "./devices/serial")
    parallels = Children(lambda: Parallel, "./devices/parallel")
    consoles = Children(lambda: Console, "./devices/console")
    channels = Children(lambda: Channel, "./devices/channel")
    videos = Children(lambda: Video, "./devices/video")
    graphics = Children(lambda: Graphics, "./devices/graphics")
    rngs = Children(lambda: Rng, "./devices/rng")
    filesystems = Children(lambda: Filesystem, "./devices/filesystem")
    hostdevs = Children(lambda: HostDev, "./devices/hostdev")
    tpms = Children(lambda: Tpm, "./devices/tpm")
    leases = Children(lambda: Lease, "./devices/lease")

    def boot_devs(self) -> list[str]:
        return [b.get("dev", "") for b in self.node.findall("os/boot")]

    def add_boot_dev(self, dev: str) -> None:
        self.add_element("boot", under="./os", dev=dev)

    def set_feature(self, name: str) -> None:
        """A plain <features> flag such as <acpi/> or <apic/>."""
        features = _find(self.node, ["features"], create=True)
        assert features is not None
        if features.find(name) is None:
            etree.SubElement(features, name)

    def has_feature(self, name: str) -> bool:
        return self.node.find(f"features/{name}") is not None

    def add_device(self, device: T) -> T:
        return self.add(device, under="./devices")

    def add_metadata(self, namespace: str, prefix: str, tag: str,
                     **attrs: str) -> etree._Element:
        """Application metadata, in its own XML namespace as libvirt requires."""
        parent = _find(self.node, ["metadata"], create=True)
        assert parent is not None
        element = etree.SubElement(parent, f"{{{namespace}}}{tag}", nsmap={prefix: namespace})
        for key, value in attrs.items():
            element.set(key, value)
        return element
