"""Output to a libvirt storage pool, on this host or any other libvirt host.

The converted image is uploaded into a volume of the pool through the
libvirt stream API (``vmshift.volumes``), so a remote host needs neither a
shared filesystem nor SSH: only the libvirt connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from vmshift.errors import BadInput
from vmshift.libvirtconn import connect


@dataclass
class PoolTarget:
    conn: libvirt.virConnect
    pool: libvirt.virStoragePool
    uri: str

    @property
    def name(self) -> str:
        return str(self.pool.name())

    def available(self) -> int:
        return int(self.pool.info()[3])

    def exists(self, volume: str) -> bool:
        try:
            self.pool.storageVolLookupByName(volume)
        except libvirt.libvirtError:
            return False
        return True


def open_pool(uri: str, name: str) -> PoolTarget:
    conn = connect(uri)
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        raise BadInput(f"--pool: no storage pool {name!r} on {uri}") from None
    if not pool.isActive():
        raise BadInput(f"--pool: storage pool {name!r} on {uri} is not active")
    pool.refresh(0)
    return PoolTarget(conn, pool, uri)
