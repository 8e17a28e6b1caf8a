"""vSphere disk download: vmshift's resumable /folder fetch vs curl, side by side.

Both fetch the same 256 MiB -flat extent from the vCenter simulator over
verified TLS on loopback, alternating three times each, with the datastore
file already in the page cache for both (it was just uploaded), into a fresh
file. Prints the median times and the ratio (vmshift / curl).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = 256 * 1024 * 1024
ROUNDS = 3


def main() -> None:
    from vmshift.convert.vsphere.connection import connect, parse_url
    from vmshift.convert.vsphere.datastore import DatastoreFile, Throttle, fetch, folder_url
    from vmshift.testbed import vcsim

    if shutil.which("curl") is None:
        raise SystemExit("bench_vsphere_download: needs curl (Debian package curl)")
    vc = vcsim.start()
    try:
        with tempfile.TemporaryDirectory(prefix="vmshift-bench-") as tmp:
            work = Path(tmp)
            image = work / "payload.raw"
            with image.open("wb") as out:
                for _ in range(SIZE // 2**20):
                    out.write(os.urandom(2**20))
            vcsim.create_vm(vc, "bench-vm")
            vcsim.attach_disk(vc, "bench-vm", image)
            image.unlink()
            session = connect(parse_url(vc.url, vc.user, str(vc.ca_path), False), vc.password)
            remote = DatastoreFile("LocalDS_0", "bench-vm/uploaded-flat.vmdk")
            url = f"https://{vc.host}:{vc.port}{folder_url(remote, 'DC0')}"
            ours, theirs = [], []
            for n in range(ROUNDS):
                dest = work / f"vmshift{n}"
                dest.mkdir()
                start = time.perf_counter()
                fetch(session, remote, "DC0", dest, lambda _n: None, Throttle(None))
                ours.append(time.perf_counter() - start)
                (dest / "uploaded-flat.vmdk").unlink()
                target = work / f"curl{n}.vmdk"
                start = time.perf_counter()
                subprocess.run(["curl", "-sSf", "--cacert", str(vc.ca_path), "-o", str(target),
                                "-H", f"Cookie: {session.cookie()}", url], check=True)
                theirs.append(time.perf_counter() - start)
                target.unlink()
            session.close()
    finally:
        vcsim.stop(vc)
    a, b = statistics.median(ours), statistics.median(theirs)
    mib = SIZE / 2**20
    print(f"vsphere download of {mib:.0f} MiB over TLS (median of {ROUNDS}):")
    print(f"  vmshift fetch  {a:6.2f} s  {mib / a:7.1f} MiB/s")
    print(f"  curl           {b:6.2f} s  {mib / b:7.1f} MiB/s")
    print(f"  ratio vmshift/curl: {a / b:.2f}")


if __name__ == "__main__":
    sys.exit(main())
