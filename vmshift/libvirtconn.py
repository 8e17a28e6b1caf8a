"""The one way vmshift opens a libvirt connection.

Every command (doctor, convert's --pool, migrate, the test bed) connects
through ``connect``, so each gets the same three things:

- the URI goes to libvirt unchanged (qemu+ssh://, qemu+tls:// work);
- a dead peer is noticed: libvirt's keepalive needs a running event loop,
  without which a connection to a host whose link died blocks (even on
  close) until TCP gives up, minutes later. One loop thread per process;
- one clear error: an unreachable host is an ``OperationFailed`` (exit 1)
  naming the URI (and its role, when the caller has one), and libvirt's
  default handler, which prints every error to stderr besides raising it,
  is silenced, because vmshift reports errors itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import libvirt

from vmshift.errors import OperationFailed

# Probe every 5 s, give up after 3 unanswered probes: a dead link is an
# error after about 20 s instead of a hang.
KEEPALIVE = (5, 3)

_lock = threading.Lock()
_state = {"silenced": False, "loop": False}


def silence() -> None:
    """Stop libvirt printing its errors to stderr (they are raised anyway)."""
    if not _state["silenced"]:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _state["silenced"] = True


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it, once per process.

    Only connections opened afterwards use it (keepalive, stream and domain
    event callbacks), which is why ``connect`` calls this first.
    """
    with _lock:
        if _state["loop"]:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _state["loop"] = True


def connect(uri: str, *, role: str | None = None, readonly: bool = False
            ) -> libvirt.virConnect:
    """Open URI; ROLE ("source", "destination") names the host in the error."""
    silence()
    ensure_event_loop()
    try:
        conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        who = f"the {role} {uri}" if role else uri
        raise OperationFailed(f"cannot connect to {who}: {exc.get_error_message()}") from exc
    try:
        conn.setKeepAlive(*KEEPALIVE)
    except libvirt.libvirtError:
        pass  # local (unix socket) drivers have no keepalive: nothing to lose
    return conn


@contextlib.contextmanager
def opened(uri: str, what: str, *, role: str | None = None) -> Iterator[libvirt.virConnect]:
    """A connection for one piece of work: a libvirt error in it becomes one
    OperationFailed line, "WHAT: libvirt's message", and the connection is closed."""
    conn = connect(uri, role=role)
    try:
        yield conn
    except libvirt.libvirtError as exc:
        raise OperationFailed(f"{what}: {exc.get_error_message()}") from None
    finally:
        conn.close()
