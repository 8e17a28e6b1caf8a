"""The source daemon's own record of a finished migration job.

libvirt emits JOB_COMPLETED on the source with the job's final statistics,
including the achieved downtime, for pre-copy and post-copy alike. The
destination's completed-job record has no downtime after a post-copy
switch, and the source's domain is gone once the definition moved, so the
event is the one place the figure survives.
"""

from __future__ import annotations

import threading
from typing import Any

import libvirt


class CompletedJob:
    """Collects the JOB_COMPLETED statistics of one domain on one connection."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        self.stats: dict[str, Any] = {}
        self._seen = threading.Event()
        self._conn = conn
        self._id: int | None = None
        try:
            self._id = conn.domainEventRegisterAny(
                dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_event, None)
        except libvirt.libvirtError:
            self._id = None  # no event support: the report falls back to job stats

    def _on_event(self, _conn: libvirt.virConnect, _dom: libvirt.virDomain,
                  params: dict[str, Any], _opaque: object) -> None:
        self.stats = dict(params)
        self._seen.set()

    def wait(self, timeout: float = 2.0) -> dict[str, Any]:
        """The statistics, waiting briefly: the event may trail the API call."""
        if self._id is not None:
            self._seen.wait(timeout)
        return self.stats

    def close(self) -> None:
        if self._id is not None:
            try:
                self._conn.domainEventDeregisterAny(self._id)
            except libvirt.libvirtError:
                pass
            self._id = None
