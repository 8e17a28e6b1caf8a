"""vmshift.locks and the locks built on it (a domain's migration lock, a test
bed's lock): held by a real second process, refused or waited for, and dropped
by the kernel when that process is SIGKILLed. No test bed: only lock files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cli_support import ROOT
from vmshift import locks
from vmshift.errors import Refused
from vmshift.migrate import lock as domain
from vmshift.testbed import state as testbed


@contextmanager
def held_by_another_process(code: str, env: dict[str, str] | None = None
                            ) -> Iterator[int]:
    """Run CODE (which enters a lock as `with ...:`) in a child that holds it
    until SIGKILLed at the end of the block; its pid."""
    script = f"import time\n{code}\n    print('ready', flush=True)\n    time.sleep(600)\n"
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        yield child.pid
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def test_not_waiting_raises_held_with_what_the_holder_wrote(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    code = ("from pathlib import Path\nfrom vmshift import locks\n"
            f"with locks.exclusive(Path({str(path)!r}), holder='pid 1: copying'):")
    with held_by_another_process(code):
        with pytest.raises(locks.Held) as exc:
            with locks.exclusive(path, wait=False):
                pass
        assert (exc.value.path, exc.value.holder) == (path, "pid 1: copying")
    with locks.exclusive(path, wait=False, holder="me"):  # the kernel dropped it
        assert path.read_text() == "me\n"


def test_a_busy_domain_is_refused_naming_the_holder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(domain, "LOCK_DIR", tmp_path)
    uuid = "5f3c9a7e-2b1d-4c8e-9a6f-0d2e4b7c1a93"
    code = ("from vmshift.migrate.lock import domain_lock\n"
            f"with domain_lock({uuid!r}, 'web01', 'migrate live -> qemu+tcp://b/system'):")
    with held_by_another_process(code, {"VMSHIFT_LOCK_DIR": str(tmp_path)}) as pid:
        with pytest.raises(Refused) as exc:
            with domain.domain_lock(uuid, "web01", "migrate offline -> x",
                                    document=("migrate_offline", {"domain": "web01"})):
                pass
    why = (f"domain 'web01' is busy: another vmshift operation holds {tmp_path}/{uuid}.lock "
           f"(pid {pid}: migrate live -> qemu+tcp://b/system)")
    finding = {"id": "domain.busy", "severity": "blocker", "message": why}
    assert (exc.value.message, exc.value.exit_code, exc.value.detail) == (why, 3, [finding])
    assert exc.value.document == ("migrate_offline", {"domain": "web01", "findings": [finding]})
    with domain.domain_lock(uuid, "web01", "migrate storage -> b"):  # free once it died
        assert (tmp_path / f"{uuid}.lock").read_text() == \
            f"pid {os.getpid()}: migrate storage -> b\n"
        assert oct((tmp_path / f"{uuid}.lock").stat().st_mode & 0o777) == "0o600"


def test_a_bed_lock_waits_for_the_process_holding_it(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testbed, "RUN_ROOT", tmp_path)
    code = "from vmshift.testbed import state\nwith state.locked('bed1'):"
    acquired = threading.Event()

    def take() -> None:
        with testbed.locked("bed1"):
            acquired.set()

    with held_by_another_process(code, {"VMSHIFT_TESTBED_RUN": str(tmp_path)}):
        waiter = threading.Thread(target=take)
        waiter.start()
        assert not acquired.wait(0.5)  # it waits while the other process holds it
        with testbed.locked("bed2"):  # another bed's lock is its own
            pass
    assert acquired.wait(10)  # and gets it once that process is gone
    waiter.join()
