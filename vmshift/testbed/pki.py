"""Test-bed X.509: a CA and certificates it signs, made with the ``openssl`` CLI.

One implementation for the whole bed: the vCenter simulator's server
certificate (vcsim.py) and the migration PKI of the libvirt hosts (migtls.py).
Keys are EC P-256 (fast to make) and written 0600.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from vmshift.errors import OperationFailed

SERVER_AUTH, CLIENT_AUTH = "serverAuth", "clientAuth"


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OperationFailed(f"openssl {args[0]} failed: {result.stderr.strip()}")
    return result


def generate_ca(directory: Path, name: str = "vmshift test-bed CA",
                days: int = 30) -> tuple[Path, Path]:
    """A self-signed CA (certificate, key) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca.key"
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    key.chmod(0o600)
    return cert, key


def sign_cert(directory: Path, stem: str, ca: tuple[Path, Path], *, cn: str,
              sans: list[str], purpose: str = SERVER_AUTH, days: int = 30) -> tuple[Path, Path]:
    """STEM.pem / STEM.key in ``directory``: a leaf certificate signed by ``ca``.

    SANS are openssl names ("IP:10.0.0.1", "DNS:hosta"); PURPOSE is the
    extended key usage (SERVER_AUTH or CLIENT_AUTH).
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    csr, ext = directory / f"{stem}.csr", directory / f"{stem}.ext"
    ext.write_text(f"subjectAltName={','.join(sans)}\n"
                   "basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage={purpose}\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    key.chmod(0o600)
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-set_serial", str(secrets.randbits(63)), "-days", str(days),
            "-extfile", str(ext), "-out", str(cert))
    return cert, key


def generate_server_cert(directory: Path, ca: tuple[Path, Path],
                         host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A server certificate for ``host`` (IP SAN), signed by ``ca``."""
    return sign_cert(directory, "server", ca, cn=host, sans=[f"IP:{host}", "DNS:localhost"])


def expires_within(cert: Path, seconds: int) -> bool:
    """Whether CERT is unreadable or no longer valid SECONDS from now."""
    done = subprocess.run(["openssl", "x509", "-noout", "-checkend", str(seconds),
                           "-in", str(cert)], capture_output=True, text=True, check=False)
    return done.returncode != 0
