"""Events of a migration job on the source daemon: its record of the
finished job, and the start of each pre-copy pass.

libvirt emits JOB_COMPLETED on the source with the job's final statistics,
including the achieved downtime, for pre-copy and post-copy alike. The
destination's completed-job record has no downtime after a post-copy
switch, and the source's domain is gone once the definition moved, so the
event is the one place the figure survives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import libvirt


class _DomainEvent:
    """One libvirt event of one domain on one connection, registered until
    close(); without event support the caller falls back to polling."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, event_id: int,
                 callback: Callable[..., None]) -> None:
        self._conn = conn
        self._id: int | None = None
        try:
            self._id = conn.domainEventRegisterAny(dom, event_id, callback, None)
        except libvirt.libvirtError:
            self._id = None

    @property
    def registered(self) -> bool:
        return self._id is not None

    def close(self) -> None:
        if self._id is not None:
            try:
                self._conn.domainEventDeregisterAny(self._id)
            except libvirt.libvirtError:
                pass
            self._id = None


class CompletedJob(_DomainEvent):
    """Collects the JOB_COMPLETED statistics of one domain on one connection."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        self.stats: dict[str, Any] = {}
        self._seen = threading.Event()
        # No event support: the report falls back to job stats.
        super().__init__(conn, dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_event)

    def _on_event(self, _conn: libvirt.virConnect, _dom: libvirt.virDomain,
                  params: dict[str, Any], _opaque: object) -> None:
        self.stats = dict(params)
        self._seen.set()

    def wait(self, timeout: float = 2.0) -> dict[str, Any]:
        """The statistics, waiting briefly: the event may trail the API call."""
        if self.registered:
            self._seen.wait(timeout)
        return self.stats


class PassWatch(_DomainEvent):
    """Wakes the monitor at once when a pre-copy pass begins (libvirt's
    MIGRATION_ITERATION event, sent at each bitmap sync) or when the job
    ends (``poke``), instead of at its next poll: a policy that switches to
    post-copy at a pass boundary then acts within one round trip of it, as
    libvirt's own --postcopy-after-precopy does. (On QEMU 7.2 under TCG,
    writes made through cached translations after a sync go unnoticed until
    the guest flushes them: a switch half a second into a pass lost them.)"""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        self._wake = threading.Event()
        # No event support: the monitor's poll still sees every pass.
        super().__init__(conn, dom, libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
                         self._on_pass)

    def _on_pass(self, _conn: libvirt.virConnect, _dom: libvirt.virDomain, _iteration: int,
                 _opaque: object) -> None:
        self._wake.set()

    def poke(self) -> None:
        """Wake the waiter now (the job ended)."""
        self._wake.set()

    def wait(self, timeout: float) -> None:
        """Until a pass begins, the job ends, or TIMEOUT passes."""
        self._wake.wait(timeout)
        self._wake.clear()
