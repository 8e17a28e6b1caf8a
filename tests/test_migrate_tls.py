"""`vmshift migrate live --tls`: QEMU encrypts the stream (VIR_MIGRATE_TLS)
with the bed's migration PKI (vmshift/testbed/migtls.py).

That TLS is really in the path is shown by breaking it for real: QEMU loads
the credentials at each migration, so certificates swapped into a host act on
the very next migration. Each swap keeps the host's own set consistent (QEMU
checks its own certificate against its own CA when it loads them), so what
fails is the handshake: the source checking the destination's certificate
(issuer and name), the destination checking the source's client certificate
(migrate_tls_x509_verify = 1). The VM stays where it was each time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.migrate_support import daemon_logs, migrate_args, state_on, vmshift
from vmshift.testbed import lifecycle, migtls, pki, state
from vmshift.testbed.hosts import TestBed, TestHost
from vmshift.testbed.tinyguest import TinyGuest
from vmshift.testbed.tinyguest import tiny_guest as make_tiny_guest

TLS = ("--tls", "--bandwidth", "64")


@contextmanager
def swapped(bed: TestBed, host: TestHost, files: dict[str, Path]) -> Iterator[None]:
    """HOST's certificate files (name -> replacement) swapped in, restored after.
    write_bytes keeps each file's owner and mode (QEMU's group reads the keys)."""
    target = migtls.cert_dir_of(bed.name, host.name)
    saved = {name: (target / name).read_bytes() for name in files}
    for name, source in files.items():
        (target / name).write_bytes(source.read_bytes())
    try:
        yield
    finally:
        for name, content in saved.items():
            (target / name).write_bytes(content)


def bed_ca(bed: TestBed) -> tuple[Path, Path]:
    st = state.read_state(bed.name)
    assert st is not None
    return migtls.ca_dir(st) / "ca.pem", migtls.ca_dir(st) / "ca.key"


def server_set(tmp: Path, ca: tuple[Path, Path], name: str, address: str) -> dict[str, Path]:
    cert, key = pki.sign_cert(tmp / name, "server", ca, cn=name,
                              sans=[f"IP:{address}", f"DNS:{name}"])
    return {"server-cert.pem": cert, "server-key.pem": key}


def assert_refused_and_still_on(g: TinyGuest, a: TestHost, b: TestHost) -> str:
    run = vmshift(*migrate_args("live", g.name, a, b, *TLS))
    assert run.rc == 1, (run.rc, run.out, run.err)
    assert run.doc is not None and run.doc["kind"] == "error"
    detail = run.doc["error"]["detail"]
    assert detail["ok"] is False and detail["where"] == "VM running on the source"
    assert detail["category"] == "tls", detail
    assert state_on(a, g.name) == (True, True)
    assert state_on(b, g.name) is None
    assert "PONG" in g.console("ping", host=a)
    return str(detail["error"])


def test_tls_migration_moves_a_running_guest(two_hosts: TestBed,
                                             tiny_guest: Callable[..., TinyGuest]) -> None:
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a)
    g.wait_ready()
    run = vmshift(*migrate_args("live", g.name, a, b, *TLS))
    assert run.rc == 0, (run.out, run.err)
    assert run.doc is not None and run.doc["ok"] is True
    assert state_on(b, g.name) == (True, True)
    assert state_on(a, g.name) is None
    assert "PONG" in g.console("ping", host=b)


def test_tls_verifies_each_side_for_real(two_hosts: TestBed,
                                        tiny_guest: Callable[..., TinyGuest],
                                        tmp_path: Path) -> None:
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a)
    g.wait_ready()
    other = pki.generate_ca(tmp_path / "other-ca", "not the bed's CA")
    # hostb entirely from another CA: the source refuses its server certificate.
    outsider = {"ca-cert.pem": other[0], **server_set(tmp_path, other, b.name, b.address)}
    with swapped(two_hosts, b, outsider):
        error = assert_refused_and_still_on(g, a, b)
    assert "known issuer" in error, error
    # The bed's CA, but a certificate naming another host: the source checks
    # the name it connected to (the address in tcp://ADDRESS).
    with swapped(two_hosts, b, server_set(tmp_path, bed_ca(two_hosts), "elsewhere",
                                          "10.241.255.1")):
        assert "TLS" in assert_refused_and_still_on(g, a, b)
    # hosta presents a client certificate of another CA (and trusts both, so
    # its own set loads): hostb refuses it (migrate_tls_x509_verify = 1).
    client = pki.sign_cert(tmp_path / "client", "client", other, cn=a.name,
                           sans=[f"DNS:{a.name}"], purpose=pki.CLIENT_AUTH)
    both = tmp_path / "both-cas.pem"
    both.write_bytes(bed_ca(two_hosts)[0].read_bytes() + other[0].read_bytes())
    with swapped(two_hosts, a, {"ca-cert.pem": both, "client-cert.pem": client[0],
                                "client-key.pem": client[1]}):
        assert "TLS" in assert_refused_and_still_on(g, a, b)
    # Control: the two-CA file with the bed's own client certificate is fine.
    with swapped(two_hosts, a, {"ca-cert.pem": both}):
        run = vmshift(*migrate_args("live", g.name, a, b, *TLS))
    assert run.rc == 0, (run.out, run.err)
    assert "PONG" in g.console("ping", host=b)


def san_of(cert: Path) -> str:
    done = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           str(cert)], capture_output=True, text=True, check=True)
    return done.stdout


def test_bed_pki_is_made_kept_and_applied_to_a_running_bed() -> None:
    """On a bed of its own: certificates at up, the same ones at re-up, and a
    bed from before the PKI (stale libvirtd, no certificates) brought up to
    date by `up` with its guest still running; all gone at down."""
    if os.geteuid() != 0:
        pytest.skip("the libvirt test bed needs root")
    name = "tlspki"
    lifecycle.down(name)
    bed = lifecycle.up(name, 2)
    try:
        st = state.read_state(name)
        assert st is not None
        for h in bed.hosts:
            d = migtls.cert_dir_of(name, h.name)
            assert sorted(p.name for p in d.iterdir()) == sorted(migtls.FILES)
            assert f"IP Address:{h.address}" in san_of(d / "server-cert.pem")
            assert f"DNS:{h.name}" in san_of(d / "server-cert.pem")
            conf = (Path(st["data_dir"]) / h.name / "etc" / "qemu.conf").read_text()
            assert f'migrate_tls_x509_cert_dir = "{migtls.CERT_DIR}"' in conf
        before = migtls.cert_dir_of(name, "hostb").joinpath("server-cert.pem").read_bytes()
        lifecycle.up(name, 2)
        again = state.read_state(name)
        assert again is not None and again["hosts"] == st["hosts"]  # no restart
        assert migtls.cert_dir_of(name, "hostb").joinpath("server-cert.pem").read_bytes() == before

        g = make_tiny_guest(bed.hosta)  # down removes it with the bed
        g.wait_ready()
        # What a bed started before the PKI looks like: no record of the
        # running daemons' configuration, no certificates.
        for h in st["hosts"]:
            h.pop("config")
        state.write_state(st)
        shutil.rmtree(migtls.cert_dir_of(name, "hostb"))
        lifecycle.up(name, 2)
        after = state.read_state(name)
        assert after is not None
        assert all(n["libvirtd"] != o["libvirtd"] for n, o in zip(after["hosts"], st["hosts"],
                                                                  strict=True))
        assert all(h["config"] for h in after["hosts"])
        assert "PONG" in g.console("ping", host=bed.hosta)
        run = vmshift(*migrate_args("live", g.name, bed.hosta, bed.hostb, *TLS))
        assert run.rc == 0, "\n".join([run.err, run.out,
                                         daemon_logs(bed.hosta, bed.hostb)])
        assert "PONG" in g.console("ping", host=bed.hostb)
    finally:
        lifecycle.down(name)
    assert not state.data_dir(name).exists()
