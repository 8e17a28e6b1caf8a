"""Running the real `vmshift` executable for the CLI-edge tests, and a libvirt
host they can point --source/--dest at without a test bed.

That host is libvirt's own test driver (``test:///FILE``): a real libvirt
connection, served by libvirt itself, whose domains and pools come from FILE.
It is enough for what these tests look at (option parsing, argument checks,
preflight findings, dry runs); nothing there ever starts a guest or copies a
byte. And Debian's headless Chromium, for the tests that open an HTML report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VMSHIFT = str(ROOT / ".venv" / "bin" / "vmshift")
KIND = re.compile(r"[a-z][a-z0-9_]*")
UNREACHABLE = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def doc(self) -> dict[str, Any]:
        """Exactly one JSON document on stdout (a second one fails json.loads:
        'Extra data'), carrying schema_version and a snake_case kind."""
        doc = json.loads(self.out)
        assert isinstance(doc, dict), self.out
        assert doc["schema_version"] == 1, doc
        assert KIND.fullmatch(doc["kind"]), doc["kind"]
        return doc

    def error_lines(self) -> list[str]:
        """stderr without the JSON event lines of --json mode."""
        return [ln for ln in self.err.splitlines() if ln and not ln.startswith("{")]


def vmshift(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    proc = subprocess.run([VMSHIFT, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr)


NODE_XML = """<node>
  <domain type='test'>
    <name>vm1</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='{a}/vda.img'/><target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='disk'>
        <source file='{a}/vdb.img'/><target dev='vdb' bus='virtio'/>
      </disk>
    </devices>
  </domain>
  <pool type='dir'>
    <name>a</name><target><path>{a}</path></target>
    <volume type='file'><name>vda.img</name><capacity>1048576</capacity></volume>
    <volume type='file'><name>vdb.img</name><capacity>1048576</capacity></volume>
  </pool>
  <pool type='dir'><name>b</name><target><path>{b}</path></target></pool>
</node>
"""


def libvirt_test_host(directory: Path) -> str:
    """A libvirt URI (test driver) with a running domain vm1 (disks vda, vdb in
    pool a, 64 MiB of memory) and an empty pool b."""
    node = directory / "node.xml"
    node.write_text(NODE_XML.format(a=directory / "pool-a", b=directory / "pool-b"))
    return f"test://{node}"


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Debian's chromium-headless-shell, its own profile, never more than 2 minutes."""
    binary = shutil.which("chromium-headless-shell")
    if binary is None:
        pytest.skip("chromium-headless-shell is not installed (`make setup` installs it)")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                           f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=True)
