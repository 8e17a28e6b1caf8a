"""Shared pytest setup.

Fixtures for the test bed live in tests/fixtures/ and are loaded as plugins.
Under CI=true a test skipped for a missing prerequisite is turned into a
failure: the only skip allowed is one marked ``needs_kvm``, because this
machine's KVM is broken under nesting.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.testbed",
    "tests.fixtures.vcenter",
    "tests.fixtures.guests",
]

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"

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
