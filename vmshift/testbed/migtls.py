"""The bed's migration PKI, for ``vmshift migrate live --tls`` (VIR_MIGRATE_TLS).

With TLS, the destination's QEMU is the TLS server and the source's QEMU the
client; both load their credentials when libvirt sets up each migration, from
the directory qemu.conf names in ``migrate_tls_x509_cert_dir``. On every host
that is /etc/libvirt/pki/qemu (inside the host's private /etc/libvirt) with:

- ca-cert.pem: the bed's CA (one per bed; its key stays in <data_dir>/pki);
- server-cert.pem / server-key.pem: the host, with its address and hostname as
  SANs, because the source checks the name it connected to (the host part of
  the migrate URI, tcp://ADDRESS, or the hostname without one);
- client-cert.pem / client-key.pem: what the host presents as a source, which
  the destination demands (``migrate_tls_x509_verify = 1``).

Everything lives under the bed's data dir and goes with it at ``down``.
"""

from __future__ import annotations

import grp
import shutil
from pathlib import Path
from typing import Any

from vmshift.testbed import pki, state

CERT_DIR = "/etc/libvirt/pki/qemu"  # inside each host (its private /etc/libvirt)
DAYS = 365  # a bed is reused across runs for a long time
RENEW_SECONDS = 7 * 86400  # reissue what expires within a week
# QEMU runs as this group on Debian ("qemu" elsewhere) and must read its keys.
QEMU_GROUPS = ("libvirt-qemu", "qemu")
FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")


def qemu_conf_lines() -> list[str]:
    return [f'migrate_tls_x509_cert_dir = "{CERT_DIR}"', "migrate_tls_x509_verify = 1"]


def cert_dir(host_root: Path) -> Path:
    """A host's CERT_DIR as seen from the machine (HOST_ROOT: the host's "dir")."""
    return host_root / "etc" / "pki" / "qemu"


def cert_dir_of(bed: str, host: str) -> Path:
    """The CERT_DIR of host HOST of bed BED, as seen from the machine."""
    return cert_dir(state.data_dir(bed) / host)


def ca_dir(st: dict[str, Any]) -> Path:
    return Path(st["data_dir"]) / "pki"


def ensure_ca(st: dict[str, Any]) -> tuple[Path, Path]:
    """The bed's CA: kept while valid for another RENEW_SECONDS, else made anew."""
    where = ca_dir(st)
    cert, key = where / "ca.pem", where / "ca.key"
    if key.exists() and not pki.expires_within(cert, RENEW_SECONDS):
        return cert, key
    return pki.generate_ca(where, f"vmshift bed {st['name']} migration CA", days=DAYS)


def host_current(root: Path, ca_cert: Path) -> bool:
    """Whether the host already holds a full, valid set issued by this CA."""
    target = cert_dir(root)
    if not all((target / f).exists() for f in FILES):
        return False
    if (target / "ca-cert.pem").read_bytes() != ca_cert.read_bytes():
        return False
    return not any(pki.expires_within(target / c, RENEW_SECONDS)
                   for c in ("server-cert.pem", "client-cert.pem"))


def ensure_host(st: dict[str, Any], h: dict[str, Any], ca: tuple[Path, Path]) -> bool:
    """Issue the host's certificates unless it has current ones. True if issued."""
    root = Path(h["dir"])
    if host_current(root, ca[0]):
        return False
    work = ca_dir(st) / h["name"]
    server = pki.sign_cert(work, "server", ca, cn=h["name"],
                           sans=[f"IP:{h['address']}", f"DNS:{h['name']}"],
                           purpose=pki.SERVER_AUTH, days=DAYS)
    client = pki.sign_cert(work, "client", ca, cn=h["name"], sans=[f"DNS:{h['name']}"],
                           purpose=pki.CLIENT_AUTH, days=DAYS)
    install(cert_dir(root), ca[0], server, client)
    return True


def install(target: Path, ca_cert: Path, server: tuple[Path, Path],
            client: tuple[Path, Path]) -> None:
    """Copy a set into TARGET under the names QEMU looks for."""
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)
    pairs = {"ca-cert.pem": ca_cert, "server-cert.pem": server[0], "server-key.pem": server[1],
             "client-cert.pem": client[0], "client-key.pem": client[1]}
    for name, source in pairs.items():
        shutil.copyfile(source, target / name)
        if name.endswith("-key.pem"):
            readable_by_qemu(target / name)
        else:
            (target / name).chmod(0o644)


def readable_by_qemu(key: Path) -> None:
    for group in QEMU_GROUPS:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            continue
        shutil.chown(key, group=gid)
        key.chmod(0o640)
        return
    # No known QEMU group: a throwaway bed key, readable so QEMU can load it.
    key.chmod(0o644)


def ensure(st: dict[str, Any]) -> list[str]:
    """CA and every host's set, made where missing or expiring. Returns the
    hosts that got new certificates (QEMU reads them at each migration, so
    nothing has to restart for them)."""
    ca = ensure_ca(st)
    return [h["name"] for h in st["hosts"] if ensure_host(st, h, ca)]
