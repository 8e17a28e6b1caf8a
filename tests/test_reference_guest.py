"""The reference VMware-style guest (issue 3, part 3): real images, real tools.

libguestfs inspects both variants (one appliance launch for both disks),
qemu-img reads the VMDKs, and the base guest is booted under QEMU/TCG until
systemd greets from the real root filesystem.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vmshift.errors import BadInput
from vmshift.host import new_guestfs
from vmshift.testbed import guest as refguest
from vmshift.testbed.guestimage import build as recipe_build
from vmshift.testbed.guestimage.initramfs import kernel_modules, list_initramfs, virtio_modules

VMSHIFT = str(Path(sys.executable).with_name("vmshift"))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# systemd prints this as PID 1 of the real root (Debian's initramfs has no
# systemd), so it proves BIOS -> GRUB -> kernel -> initramfs -> root fs on sda1.
BOOT_MARKER = "Welcome to Debian GNU/Linux 12 (bookworm)!"
BOOT_TIMEOUT_S = 240  # TCG on a loaded 2-core host; typically 30-60 s


def parse_vmx(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        entries[key.strip().lower()] = value.strip().strip('"')
    return entries


def inspect_guest(guest, out: Path) -> dict:  # type: ignore[no-untyped-def]
    """What libguestfs sees in one variant's sparse VMDK (opened read-only)."""
    g = new_guestfs()
    g.add_drive_opts(str(guest.vmdk_sparse), readonly=True, format="vmdk")
    g.launch()
    try:
        roots = g.inspect_os()
        assert len(roots) == 1, roots
        root = roots[0]
        g.mount_ro(root, "/")
        initrd = out / f"{guest.variant}.initrd"
        g.download(f"/boot/initrd.img-{guest.kernel}", str(initrd))
        conf = "/etc/initramfs-tools/conf.d/vmshift-vmware-only.conf"
        return {
            "type": g.inspect_get_type(root),
            "distro": g.inspect_get_distro(root),
            "major": g.inspect_get_major_version(root),
            "hostname": g.inspect_get_hostname(root),
            "apps": {a["app2_name"] for a in g.inspect_list_applications2(root)},
            "fstab": g.cat("/etc/fstab"),
            "interfaces": g.cat("/etc/network/interfaces"),
            "grub_cfg": g.cat("/boot/grub/grub.cfg"),
            "initramfs_conf": g.cat(conf) if g.exists(conf) else "",
            "builtin": g.cat(f"/lib/modules/{guest.kernel}/modules.builtin"),
            "initrd_names": list_initramfs(initrd),
        }
    finally:
        g.shutdown()
        g.close()


@pytest.fixture(scope="module")
def inspected(vmware_guest, vmware_guest_novirtio, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Both variants inspected side by side (one appliance each; guestfs drops the GIL)."""
    out = tmp_path_factory.mktemp("inspected")
    guests = (vmware_guest, vmware_guest_novirtio)
    with ThreadPoolExecutor(max_workers=2) as pool:
        facts = list(pool.map(lambda guest: inspect_guest(guest, out), guests))
    return {guest.hostname: fact for guest, fact in zip(guests, facts, strict=True)}


@pytest.fixture(params=["base", "novirtio"])
def variant(request, vmware_guest, vmware_guest_novirtio):  # type: ignore[no-untyped-def]
    return vmware_guest if request.param == "base" else vmware_guest_novirtio


def test_inspected_as_debian_12_with_open_vm_tools(inspected, variant):  # type: ignore[no-untyped-def]
    facts = inspected[variant.hostname]
    assert (facts["type"], facts["distro"], facts["major"]) == ("linux", "debian", 12)
    assert facts["hostname"] == variant.hostname
    assert "open-vm-tools" in facts["apps"]
    assert "linux-image-amd64" in facts["apps"] and "grub-pc" in facts["apps"]


def test_looks_exported_from_esxi(inspected, variant):  # type: ignore[no-untyped-def]
    facts = inspected[variant.hostname]
    fstab = [line.split() for line in facts["fstab"].splitlines()
             if line.strip() and not line.startswith("#")]
    assert ["/dev/sda1", "/"] in [entry[:2] for entry in fstab]
    assert re.search(r"^iface ens192 inet static$", facts["interfaces"], re.M)
    assert f"address {variant.ipv4}" in facts["interfaces"]
    kernel_lines = [line for line in facts["grub_cfg"].splitlines()
                    if line.strip().startswith("linux")]
    assert kernel_lines and all("console=ttyS0" in line for line in kernel_lines)


def test_base_initramfs_has_virtio(inspected, vmware_guest):  # type: ignore[no-untyped-def]
    names = inspected[vmware_guest.hostname]["initrd_names"]
    assert {"virtio_pci", "virtio_blk", "virtio_scsi"} <= virtio_modules(names)
    assert vmware_guest.virtio_in_initramfs


def test_novirtio_initramfs_has_no_virtio(inspected, vmware_guest_novirtio):  # type: ignore[no-untyped-def]
    facts = inspected[vmware_guest_novirtio.hostname]
    names = facts["initrd_names"]
    assert virtio_modules(names) == set()
    # Not an empty or broken listing: VMware's storage drivers are there.
    assert {"vmw_pvscsi", "mptspi", "sd_mod", "ext4"} <= kernel_modules(names)
    assert "MODULES=dep" in facts["initramfs_conf"]
    assert not vmware_guest_novirtio.virtio_in_initramfs
    # Debian builds the virtio drivers as modules: none is built into the kernel,
    # so "not in the initramfs" means "not available at early boot".
    builtin = kernel_modules(facts["builtin"].splitlines())
    assert builtin and not {"virtio", "virtio_pci", "virtio_blk", "virtio_scsi"} & builtin


def test_vmx_describes_an_esxi_vm(variant):  # type: ignore[no-untyped-def]
    for vmx_path, vmdk in ((variant.vmx, variant.vmdk_sparse),
                           (variant.vmx_stream, variant.vmdk_stream)):
        vmx = parse_vmx(vmx_path)
        assert vmx["scsi0.virtualdev"] == "pvscsi"
        assert vmx["ethernet0.virtualdev"] == "vmxnet3"
        assert vmx["ethernet0.addresstype"] == "static"
        assert vmx["ethernet0.address"] == variant.mac and variant.mac.startswith("00:50:56:")
        assert vmx["guestos"] == "debian12-64" and vmx["firmware"] == "bios"
        assert vmx["serial0.present"] == "TRUE"
        assert vmx["displayname"] == variant.name
        assert int(vmx["memsize"]) > 0 and int(vmx["numvcpus"]) > 0
        assert "cpuid.corespersocket" in vmx
        assert vmx["uuid.bios"].replace(" ", "").replace("-", "") == variant.uuid.replace("-", "")
        # A plain name next to the VMX, as ESXi writes it.
        assert vmx_path.parent / vmx["scsi0:0.filename"] == vmdk and vmdk.is_file()


def qemu_img_info(path: Path) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_vmdk_forms_hold_the_same_disk(vmware_guest):  # type: ignore[no-untyped-def]
    for path, create_type in ((vmware_guest.vmdk_sparse, "monolithicSparse"),
                              (vmware_guest.vmdk_stream, "streamOptimized")):
        info = qemu_img_info(path)
        assert info["format"] == "vmdk"
        assert info["format-specific"]["data"]["create-type"] == create_type
        assert info["virtual-size"] == 3 << 30
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk",
                        str(vmware_guest.raw), str(path)], check=True, capture_output=True)


def boot_until(serial: Path, marker: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline and proc.poll() is None:
        text = ANSI.sub("", serial.read_text(errors="replace")) if serial.exists() else ""
        if marker in text:
            return text
        time.sleep(1)
    return text


def test_base_guest_boots_under_tcg(vmware_guest, tmp_path):  # type: ignore[no-untyped-def]
    """Converted to qcow2 and booted from IDE (/dev/sda, as in its fstab) under TCG."""
    disk = tmp_path / "boot.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2",
                    str(vmware_guest.vmdk_sparse), str(disk)], check=True)
    serial = tmp_path / "serial.log"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "512",
         "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
         "-drive", f"file={disk},format=qcow2,if=ide", "-serial", f"file:{serial}",
         "-monitor", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        text = boot_until(serial, BOOT_MARKER, proc, BOOT_TIMEOUT_S)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert BOOT_MARKER in text, f"no systemd greeting after {time.monotonic() - started:.0f} s:" \
        f"\n{text[-2000:]}"
    assert "Linux version " + vmware_guest.kernel in text
    assert "EXT4-fs (sda1): mounted filesystem" in text


def test_cli_prints_cached_paths(vmware_guest, vmware_guest_novirtio):  # type: ignore[no-untyped-def]
    proc = subprocess.run([VMSHIFT, "testbed", "guest", "build", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] >= 1 and doc["kind"] == "testbed_guest"
    assert doc["guests"]["base"]["vmx"] == str(vmware_guest.vmx)
    assert doc["guests"]["novirtio"]["vmdk_stream"] == str(vmware_guest_novirtio.vmdk_stream)


def test_cli_rejects_unknown_variant():
    proc = subprocess.run([VMSHIFT, "testbed", "guest", "build", "--variant", "windows"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--variant" in proc.stderr and "Traceback" not in proc.stderr


# --- the cache: complete entries only (no image build needed) ---------------------------

@pytest.fixture
def empty_cache(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VMSHIFT_CACHE", str(tmp_path))
    return tmp_path / "guests" / refguest.recipe_hash()


def _fake_entry(entry: Path) -> dict:
    """A cache entry's files (empty, made here: a stand-in for the layout only)."""
    manifest = {"recipe_hash": entry.name, "root_password": "x", "kernel": "6.1",
                "variants": {}}
    for variant in refguest.VARIANTS:
        (entry / variant).mkdir(parents=True)
        files = {k: f"{variant}-{k}" for k in ("raw", "vmdk_sparse", "vmdk_stream", "vmx",
                                               "vmx_stream")}
        for name in files.values():
            (entry / variant / name).write_text("")
        manifest["variants"][variant] = {
            "directory": variant, "files": files, "name": variant, "hostname": variant,
            "mac": "00:50:56:00:00:01", "ipv4": "192.0.2.1/24", "uuid": "u",
            "virtio_in_initramfs": variant == "base"}
    return manifest


def test_cache_entry_without_manifest_is_not_cached(empty_cache):  # type: ignore[no-untyped-def]
    manifest = _fake_entry(empty_cache)
    assert refguest.cached_guest("base") is None  # a crashed build's leftovers
    (empty_cache / "manifest.json").write_text(json.dumps(manifest))
    assert refguest.cached_guest("novirtio").vmx == empty_cache / "novirtio" / "novirtio-vmx"
    (empty_cache / "base" / "base-vmdk_stream").unlink()
    assert refguest.cached_guest("base") is None  # a file went missing since


def test_stale_build_dirs_are_removed(empty_cache):  # type: ignore[no-untyped-def]
    stale = empty_cache.parent / f".build-{empty_cache.name}-999999"
    (stale / "work" / "root").mkdir(parents=True)
    other = empty_cache.parent / ".build-0000000000000000-1"
    other.mkdir()
    refguest._clean_stale_builds(empty_cache.name)
    assert not stale.exists() and other.exists()


def test_prune_removes_other_recipes_only(empty_cache):  # type: ignore[no-untyped-def]
    guests = empty_cache.parent
    current = empty_cache
    old, half_built, busy = (guests / "0123456789abcdef", guests / ".build-0123456789abcdef-7",
                             guests / "fedcba9876543210")
    for path in (current, old, half_built, busy):
        (path / "base").mkdir(parents=True)
    with open(guests / ".fedcba9876543210.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build of that recipe is running
        assert set(refguest.prune(dry_run=True)) == {old, half_built}
        assert old.exists()
        assert set(refguest.prune()) == {old, half_built}
    assert not old.exists() and not half_built.exists()
    assert current.exists() and busy.exists()


def test_unknown_variant_is_bad_input(empty_cache):  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput, match="variant"):
        refguest.reference_guest("fedora")


def test_recipe_hash_covers_parameters():
    base = refguest.recipe_hash()
    bigger = recipe_build.Recipe(**{**recipe_build.RECIPE.__dict__, "disk_gib": 4})
    assert refguest.recipe_hash(bigger) != base == refguest.recipe_hash()


# --- the initramfs lister, on archives made here with cpio and zstd ------------------------

def _cpio(directory: Path, out: Path) -> None:
    names = "\n".join(sorted(str(p.relative_to(directory)) for p in directory.rglob("*")))
    with open(out, "wb") as archive:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=directory, check=True,
                       input=names.encode() + b"\n", stdout=archive)


def test_initramfs_with_early_microcode_is_listed_whole(tmp_path):  # type: ignore[no-untyped-def]
    early, main = tmp_path / "early", tmp_path / "main"
    (early / "kernel/x86/microcode").mkdir(parents=True)
    (early / "kernel/x86/microcode/GenuineIntel.bin").write_bytes(os.urandom(3000))
    (main / "usr/lib/modules/6.1/kernel/drivers/block").mkdir(parents=True)
    (main / "usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko").write_bytes(b"x" * 5)
    (main / "init").write_text("#!/bin/sh\n")
    _cpio(early, tmp_path / "early.cpio")
    _cpio(main, tmp_path / "main.cpio")
    subprocess.run(["zstd", "-q", "-19", str(tmp_path / "main.cpio")], check=True)
    image = tmp_path / "initrd.img"
    image.write_bytes((tmp_path / "early.cpio").read_bytes()
                      + (tmp_path / "main.cpio.zst").read_bytes())
    names = list_initramfs(image)
    assert "kernel/x86/microcode/GenuineIntel.bin" in names  # the uncompressed prefix
    assert "init" in names  # the zstd part behind it
    assert virtio_modules(names) == {"virtio_blk"}
    image.write_bytes(image.read_bytes()[:-200])
    with pytest.raises(BadInput, match="initrd.img"):
        list_initramfs(image)
