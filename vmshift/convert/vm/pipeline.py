"""The stages of `convert vm` in order, each timed, all undone on failure.

Nothing the run creates survives a failure or an interruption: the work
directory with the overlays always goes, and the converted disks, the XML
file or the defined domain are removed unless the whole run succeeded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshift.confine import Policy
from vmshift.convert import safety
from vmshift.convert.vm import bootcheck, output, overlay
from vmshift.convert.vm.copy import CopiedDisk, copy_out
from vmshift.convert.vm.guest import inspect_and_convert
from vmshift.convert.vm.source import Source
from vmshift.convert.writer import DomainXml, build_domain_xml
from vmshift.drivers.linux import LinuxOptions
from vmshift.drivers.windows import WindowsOptions
from vmshift.errors import BadInput, OperationFailed
from vmshift.model import VirtualMachine


@dataclass
class Request:
    source: Source
    name: str
    output: str  # local | libvirt
    output_dir: Path | None = None
    uri: str | None = None
    pool: str | None = None
    out_format: str = "qcow2"
    network_map: Any = None
    default_network: str = "default"
    virt_type: str = "auto"
    start: bool = False
    verify_boot: bool = False
    boot_timeout: float = 600.0
    keep_vmware_tools: bool = False
    virtio_win: Path | None = None
    allow_emulated: bool = False
    allow_devices: tuple[str, ...] = ()
    dry_run: bool = False
    force: bool = False
    json_mode: bool = False


@dataclass
class Result:
    stages: list[dict[str, Any]] = field(default_factory=list)
    doc: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.stages.append({"stage": name, "seconds": round(time.monotonic() - start, 2)})


class Undo:
    """What to take back if the run does not finish: newest first."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, action: Callable[[], object]) -> None:
        self.actions.append((what, action))

    def run(self) -> list[str]:
        failed = []
        for what, action in reversed(self.actions):
            try:
                action()
            except Exception as exc:  # keep undoing the rest; report what stayed
                failed.append(f"{what}: {exc}")
        self.actions.clear()
        return failed


def _cache_base() -> Path:
    # QEMU (as libvirt-qemu) never opens the overlays: only the appliance and
    # qemu-img do, as this user. Kept beside the other caches, outside /root.
    return Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "work"


def run(req: Request, step: Callable[[str], None]) -> Result:
    result = Result()
    undo = Undo()
    work = overlay.work_dir(_cache_base())
    try:
        # SIGTERM as well as Ctrl-C becomes an exception, so the undo below runs.
        with safety.signals_raise():
            _run(req, result, undo, work, step)
    except BaseException:
        safety.ignore_signals()  # a second signal must not cut the cleanup short
        leftovers = undo.run()
        if leftovers:
            raise OperationFailed("conversion failed and some of its output could not be "
                                  "removed: " + "; ".join(leftovers)) from None
        raise
    finally:
        overlay.remove(work)
    return result


def _preflight(req: Request) -> Path | None:
    if req.output == "local":
        assert req.output_dir is not None
        return output.check_local(req.output_dir, req.name, req.force)
    assert req.uri is not None
    output.check_libvirt(req.uri, req.name, req.force)
    return None


def _run(req: Request, result: Result, undo: Undo, work: Path,
         step: Callable[[str], None]) -> None:
    doc = result.doc
    src = req.source
    with result.stage("preflight"):
        xml_path = _preflight(req)
    if src.fetch is not None:  # an OVA's members, a datastore's files: local files first
        with result.stage(src.fetch_stage):
            src.disk_files = src.fetch(work)
    with result.stage("overlay"):
        overlays = overlay.make_overlays(src.disk_files, work, req.name,
                                         Policy.of(devices=req.allow_devices))

    def domain(vm: VirtualMachine, inspection: Any) -> DomainXml:
        # The chooser sees the inspection: the guest's drivers decide the disk bus.
        return build_domain_xml(vm, virt_type=req.virt_type, network_map=req.network_map,
                                default_network=req.default_network, inspection=inspection)

    with result.stage("inspect+convert"):
        opts = LinuxOptions(keep_vmware_tools=req.keep_vmware_tools)
        wopts = WindowsOptions(virtio_win=req.virtio_win, allow_emulated=req.allow_emulated,
                               keep_vmware_tools=req.keep_vmware_tools)
        gs = inspect_and_convert(overlays, src.vm, lambda ins: domain(src.vm, ins).disk_bus,
                                 opts, wopts, dry_run=req.dry_run, where=src.ref, step=step)
    if gs.windows is not None and req.verify_boot:
        raise BadInput("--verify-boot reads the report of the Linux first-boot service; "
                       "Windows guests have none yet: use --start")
    doc["appliance_launches"] = gs.appliance_launches
    doc["findings"] = [f for f in gs.findings if f.outcome == "fired"]
    doc["guest"] = _guest_summary(gs)
    if req.output_dir is not None and not req.dry_run:
        req.output_dir.mkdir(parents=True, exist_ok=True)
    with result.stage("copy"):
        copied, needed = copy_out(overlays, out_format=req.out_format,
                                  output_dir=req.output_dir, uri=req.uri, pool=req.pool,
                                  force=req.force, json_mode=req.json_mode,
                                  dry_run=req.dry_run, sources=src.disk_files,
                                  allow_devices=req.allow_devices)
    for disk in copied:
        if not req.dry_run:
            undo.add(f"remove {disk.path}", _remover(req, disk))
    doc["disks"] = [{"output": d.path, "volume": d.volume, "virtual_size": d.virtual_size,
                     "bytes_written": d.bytes_written, "seconds": round(d.seconds, 2),
                     "verified": d.verified} for d in copied]
    doc["space_needed"] = needed
    with result.stage("define"):
        target = output.target_model(src.vm, copied, req.out_format, req.name)
        dom = domain(target, gs.converted())
        doc.update(virt_type=dom.virt_type, machine=dom.machine, disk_bus=dom.disk_bus,
                   notes=dom.notes)
        if req.dry_run:
            doc["xml"] = dom.xml
            return
        _define(req, xml_path, dom.xml, undo)
    if req.start or req.verify_boot:
        with result.stage("boot"):
            _boot(req, gs, doc)
    undo.actions.clear()  # everything stands: nothing to take back


def _remover(req: Request, disk: CopiedDisk) -> Callable[[], object]:
    if disk.volume is None:
        return lambda: Path(disk.path).unlink(missing_ok=True)

    def delete_volume() -> None:
        from vmshift.libvirtconn import opened

        with opened(str(req.uri), f"cannot remove volume {disk.volume}") as conn:
            conn.storagePoolLookupByName(req.pool).storageVolLookupByName(
                disk.volume).delete(0)
    return delete_volume


def _define(req: Request, xml_path: Path | None, xml: str, undo: Undo) -> None:
    if xml_path is not None:
        output.write_local(xml_path, xml)
        undo.add(f"remove {xml_path}", lambda: xml_path.unlink(missing_ok=True))
        return
    assert req.uri is not None
    output.define(req.uri, req.name, xml, req.force)

    def undefine() -> None:
        from vmshift.libvirtconn import opened

        with opened(str(req.uri), f"cannot undefine {req.name}") as conn:
            output.remove_domain(conn, req.name)
    undo.add(f"undefine {req.name}", undefine)


def _boot(req: Request, gs: Any, doc: dict[str, Any]) -> None:
    pins = {p.name: p.mac for p in (gs.linux.pins if gs.linux else [])}
    report = bootcheck.start_and_verify(str(req.uri), req.name, pins, req.boot_timeout,
                                        req.verify_boot)
    doc["started"] = True
    if report is None:
        return
    doc["boot"] = report.as_dict()
    if report.problems:
        raise OperationFailed("boot verification failed: " + "; ".join(report.problems)
                              + f" (console: {report.console_log})")


def _guest_summary(gs: Any) -> dict[str, Any]:
    guest = gs.inspection.guests[0]
    out: dict[str, Any] = {"type": guest.type, "distro": guest.distro,
                           "version": guest.version, "hostname": guest.hostname,
                           "firmware": guest.firmware_needed}
    for result in (gs.linux, gs.windows):
        if result is not None:
            out.update(result.as_dict())
    return out
