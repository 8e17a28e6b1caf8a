"""vSphere profiles: where a plan's vsphere://HOST rows get their credentials.

A plan never holds credentials. `plan run` reads an INI file (``--vsphere-profiles``,
else ``$VMSHIFT_VSPHERE_PROFILES``, else ``~/.config/vmshift/vsphere.ini``) with
one section per HOST as the plan writes it::

    [vcenter.example.com]
    url = https://vcenter.example.com
    user = migrate@vsphere.local
    password_file = /etc/vmshift/vcenter.pass
    ca_file = /etc/vmshift/vcenter-ca.pem
    insecure = no

`url` defaults to https://HOST. Without ``password_file`` the password is the
runner's ``$VMSHIFT_VSPHERE_PASSWORD`` (a run is unattended: there is no
prompt). Only the password file's path reaches the row's command line.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import BadInput

KEYS = {"url", "user", "password_file", "ca_file", "insecure"}


@dataclass(frozen=True)
class Profile:
    host: str
    url: str
    user: str
    password_file: Path | None = None
    ca_file: Path | None = None
    insecure: bool = False

    def args(self) -> list[str]:
        """The convert vm options that name this profile's endpoint and credentials."""
        out = ["--url", self.url, "--user", self.user]
        if self.password_file is not None:
            out += ["--password-file", str(self.password_file)]
        if self.ca_file is not None:
            out += ["--ca-file", str(self.ca_file)]
        return out + (["--insecure"] if self.insecure else [])


def default_path() -> Path:
    env = os.environ.get("VMSHIFT_VSPHERE_PROFILES")
    return Path(env) if env else Path.home() / ".config" / "vmshift" / "vsphere.ini"


def load(path: Path | None, hosts: set[str]) -> dict[str, Profile]:
    """The profiles of HOSTS (lowercased keys) from PATH (the default when None);
    BadInput naming the file, section or key for anything missing or wrong. No
    hosts: nothing is read (a plan without vSphere rows needs no file)."""
    if not hosts:
        return {}
    path = path or default_path()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the vSphere profiles: {exc.strerror} "
                       f"(needed for {', '.join(sorted(hosts))})") from None
    except configparser.Error as exc:
        raise BadInput(f"{path}: not an INI file: {exc.message.splitlines()[0]}") from None
    sections = {s.lower(): s for s in parser.sections()}
    out = {}
    for host in sorted(hosts):
        if host.lower() not in sections:
            raise BadInput(f"{path}: no [{host}] section (the plan reads from "
                           f"vsphere://{host}/...)")
        out[host.lower()] = _profile(path, host, parser[sections[host.lower()]])
    return out


def _profile(path: Path, host: str, sec: configparser.SectionProxy) -> Profile:
    where = f"{path}: [{sec.name}]"
    unknown = set(sec) - KEYS
    if unknown:
        raise BadInput(f"{where}: unknown key {sorted(unknown)[0]!r} "
                       f"(the keys are {', '.join(sorted(KEYS))})")
    if not sec.get("user"):
        raise BadInput(f"{where}: user: missing")
    try:
        insecure = sec.getboolean("insecure", fallback=False)
    except ValueError:
        raise BadInput(f"{where}: insecure: not yes or no") from None
    pw = _file(where, "password_file", sec.get("password_file"), path.parent)
    if pw is None and not os.environ.get("VMSHIFT_VSPHERE_PASSWORD"):
        raise BadInput(f"{where}: password_file: missing, and $VMSHIFT_VSPHERE_PASSWORD "
                       "is not set (a plan run cannot prompt)")
    return Profile(host, sec.get("url") or f"https://{host}", sec["user"], pw,
                   _file(where, "ca_file", sec.get("ca_file"), path.parent), insecure)


def _file(where: str, key: str, value: str | None, base: Path) -> Path | None:
    if not value:
        return None
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        raise BadInput(f"{where}: {key}: no such file {value!r}")
    return path.resolve()
