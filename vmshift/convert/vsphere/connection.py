"""Connecting to vCenter/ESXi: where the password comes from, and TLS.

The password is read from ``VMSHIFT_VSPHERE_PASSWORD``, a ``--password-file``
or a hidden prompt, never from argv (it would show in ``ps`` and in shell
history), and it never appears in any message: every error raised here is
scrubbed of it. TLS is verified against the system trust store, or only the
``--ca-file`` CA; ``--insecure`` is an explicit, announced opt-out.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from vmshift.errors import BadInput, OperationFailed, bad_input

PASSWORD_ENV = "VMSHIFT_VSPHERE_PASSWORD"
MAX_PASSWORD_FILE = 4096
CONNECT_TIMEOUT = 30  # seconds, per SOAP connection attempt


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and how to trust it (no secret in here)."""

    host: str
    port: int
    path: str  # the SOAP path, /sdk
    user: str
    ca_file: Path | None = None
    insecure: bool = False

    @property
    def display(self) -> str:
        return f"https://{self.host}:{self.port}{self.path}"


@dataclass
class Session:
    """A logged-in pyvmomi ServiceInstance plus what HTTP downloads need."""

    endpoint: Endpoint
    si: Any
    context: ssl.SSLContext
    _password: str = field(repr=False, default="")

    @property
    def content(self) -> Any:
        return self.si.RetrieveContent()

    def cookie(self) -> str:
        """The SOAP session cookie; /folder downloads authenticate with it."""
        raw = self.si._stub.cookie or ""
        return raw.split(";", 1)[0].strip()

    def close(self) -> None:
        from pyVim.connect import Disconnect

        try:
            Disconnect(self.si)
        except Exception:  # noqa: S110 - logging out of a dying session is best effort
            pass


def parse_url(url: str, user: str, ca_file: str | None, insecure: bool) -> Endpoint:
    """Check --url and the TLS options; refuse a password embedded in the URL."""
    if "://" not in url:
        url = "https://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        raise BadInput(f"--url: scheme {parts.scheme!r} is not supported; vSphere speaks https")
    if parts.password is not None:
        raise BadInput("--url: a password in the URL is refused (it would be visible to other "
                       f"users); use {PASSWORD_ENV}, --password-file or the prompt")
    if not parts.hostname:
        raise BadInput(f"--url: no host name in {url.split('@')[-1]!r}")
    if ca_file and insecure:
        raise BadInput("--ca-file and --insecure contradict each other; pick one")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise BadInput(f"--url: {exc}") from None
    ca_path = None
    if ca_file:
        ca_path = Path(ca_file)
        if not ca_path.is_file():
            raise bad_input(ca_path, "--ca-file: no such file")
    return Endpoint(host=parts.hostname, port=port, path=parts.path.rstrip("/") or "/sdk",
                    user=user, ca_file=ca_path, insecure=insecure)


def read_password(password_file: str | None) -> str:
    """--password-file, then the environment, then a hidden prompt on a TTY."""
    if password_file:
        return _password_from_file(Path(password_file))
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        return str(click.prompt("vSphere password", hide_input=True, err=True))
    raise BadInput(f"no vSphere password: set {PASSWORD_ENV}, pass --password-file, "
                   "or run on a terminal to be prompted")


def _password_from_file(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PASSWORD_FILE + 1)
    except OSError as exc:
        raise bad_input(path, f"--password-file: {exc.strerror or exc}") from None
    if len(data) > MAX_PASSWORD_FILE:
        raise bad_input(path, "--password-file: too large to be a password file")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise bad_input(path, "--password-file: not UTF-8 text") from None
    # The first line is the password; a trailing newline is an editor's, not the user's.
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise bad_input(path, "--password-file: the first line is empty", 1)
    return password


def ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    if endpoint.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(
            cafile=str(endpoint.ca_file) if endpoint.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise bad_input(endpoint.ca_file, f"--ca-file: not a PEM CA certificate ({exc})") from None


def connect(endpoint: Endpoint, password: str) -> Session:
    """Log in; every failure is one clean line that never contains the password."""
    from pyVim.connect import SmartConnect
    from pyVmomi import vim

    context = ssl_context(endpoint)
    try:
        si = SmartConnect(host=endpoint.host, port=endpoint.port, path=endpoint.path,
                          user=endpoint.user, pwd=password, sslContext=context,
                          httpConnectionTimeout=CONNECT_TIMEOUT)
    except vim.fault.InvalidLogin:
        raise OperationFailed(f"vSphere login to {endpoint.display} as {endpoint.user!r} "
                              "failed: incorrect user name or password") from None
    except ssl.SSLCertVerificationError as exc:
        raise OperationFailed(
            f"TLS certificate of {endpoint.display} not trusted ({exc.verify_message}); "
            "pass --ca-file with the CA that signed it, or --insecure to skip the check"
        ) from None
    except ssl.SSLError as exc:
        raise OperationFailed(f"TLS with {endpoint.display} failed: "
                              f"{_scrub(str(exc.reason or exc), password)}") from None
    except OSError as exc:  # refused, unreachable, timeout, DNS
        reason = getattr(exc, "strerror", None) or str(exc)
        raise OperationFailed(f"cannot reach {endpoint.display}: "
                              f"{_scrub(reason, password)}") from None
    except Exception as exc:  # pyVmomi raises many types; none may leak the password
        raise OperationFailed(f"vSphere login to {endpoint.display} failed: "
                              f"{_scrub(_fault_text(exc), password)}") from None
    return Session(endpoint=endpoint, si=si, context=context, _password=password)


def _fault_text(exc: Exception) -> str:
    msg = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())[:300]


def _scrub(text: str, password: str) -> str:
    return text.replace(password, "***") if password else text
