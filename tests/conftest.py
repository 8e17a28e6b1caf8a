"""Shared pytest setup.

Fixtures for the test bed live in tests/fixtures/ and are loaded as plugins.
Under CI=true a test skipped for a missing prerequisite is turned into a
failure: the only skip allowed is one marked ``needs_kvm``, because this
machine's KVM is broken under nesting.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.testbed",
    "tests.fixtures.vcenter",
    "tests.fixtures.guests",
]

ROOT = Path(__file__).resolve().parent.parent


def find_corpus() -> Path:
    """The VMX corpus lives in shared/ beside the checkout. $VMSHIFT_CORPUS
    names it anywhere else; a local clone made elsewhere (a scratch CI run)
    finds it beside the repository it was cloned from."""
    if os.environ.get("VMSHIFT_CORPUS"):
        return Path(os.environ["VMSHIFT_CORPUS"])
    beside = ROOT.parent / "shared" / "corpus"
    if beside.is_dir():
        return beside
    origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True, check=False).stdout.strip()
    if origin.startswith("/"):
        cloned_from = Path(origin).resolve().parent / "shared" / "corpus"
        if cloned_from.is_dir():
            return cloned_from
    return beside  # absent: the corpus tests fail and name this path


CORPUS = find_corpus()

os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and item.get_closest_marker("needs_kvm") is None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true (a missing prerequisite is a failure): {reason}"


@pytest.fixture
def loop_device(tmp_path: Path) -> str:
    """A real block device: a loop device over a small raw file (root only)."""
    backing = tmp_path / "lun.raw"
    backing.write_bytes(bytes(range(256)) * (4 << 12))  # 4 MiB of binary, as a LUN holds
    dev = subprocess.run(["losetup", "--find", "--show", "--read-only", str(backing)],
                         capture_output=True, text=True, check=True).stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], check=True)
