"""A guest's serial console over libvirt (virDomain.openConsole), from any host:
convert vm reads the converted guest's report on it, the test bed its tiny guests.

The console is a non-blocking libvirt stream on a connection of its own to
whichever host runs the domain, so it works over qemu+tcp after a migration
just as before it. Incoming data is delivered by libvirt's default event loop,
run in a daemon thread (a blocking recv in one thread and an abort in another
can deadlock the client). Commands follow the tiny guest's protocol: send
``vmshift:<id>:<cmd>``, read until ``vmshift-done:<id>:<rc>``.
"""

from __future__ import annotations

import itertools
import re
import threading
import time

import libvirt

from vmshift import libvirtconn
from vmshift.errors import OperationFailed

_ids = itertools.count(1)

STREAM_EVENTS = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                 | libvirt.VIR_STREAM_EVENT_HANGUP)


class Console:
    """An open console stream; output is collected by event callbacks."""

    def __init__(self, uri: str, domain_name: str) -> None:
        # Its stream callbacks run on the event loop connect() starts.
        self._conn = libvirtconn.connect(uri)
        self._buf = ""
        self.transcript: list[str] = []  # everything received, for a log on failure
        self._cond = threading.Condition()
        self._closed = False
        try:
            dom = self._conn.lookupByName(domain_name)
            self._stream = self._conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            # FORCE: take the console over from an earlier session (e.g. before a migration).
            dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            self._stream.eventAddCallback(STREAM_EVENTS, self._on_event, None)
        except libvirt.libvirtError:
            self._conn.close()
            raise

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(4096)
                except libvirt.libvirtError:
                    data = b""
                if data == -2:  # nothing more for now
                    return
                if not isinstance(data, bytes) or not data:
                    break
                with self._cond:
                    text = data.decode("utf-8", "replace").replace("\r", "")
                    self._buf += text
                    self.transcript.append(text)
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        try:
            stream.eventRemoveCallback()
        except libvirt.libvirtError:
            pass

    def send(self, text: str) -> None:
        data = text.encode()
        deadline = time.monotonic() + 10
        while data:
            sent = self._stream.send(data)
            if sent == -2:  # the stream's buffer is full: try again shortly
                if time.monotonic() > deadline:
                    raise OperationFailed("guest console: cannot send (stream blocked)")
                time.sleep(0.05)
                continue
            data = data[sent:]

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until PATTERN appears in the output; consume output up to it."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search(self._buf)
                if match:
                    self._buf = self._buf[match.end():]
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    tail = self._buf[-300:]
                    why = "console closed" if self._closed else f"no {pattern!r} in {timeout:.0f} s"
                    raise OperationFailed(f"guest console: {why}; last output: {tail!r}")
                self._cond.wait(min(left, 0.5))

    def command(self, cmd: str, timeout: float) -> tuple[int, str]:
        """Run CMD in the guest; return (exit status, output)."""
        cid = next(_ids)
        with self._cond:
            self._buf = ""
        self.send(f"vmshift:{cid}:{cmd}\n")
        match = self.wait_for(rf"^(?P<out>(?:.*\n)*?)vmshift-done:{cid}:(?P<rc>\d+)$", timeout)
        return int(match["rc"]), match["out"]

    def wait_ready(self, timeout: float) -> str:
        """Ping until the guest answers: lines typed before its command loop runs
        may be lost (the tty is reconfigured at boot), so ask again every few seconds."""
        deadline = time.monotonic() + timeout
        while True:
            cid = next(_ids)
            self.send(f"vmshift:{cid}:ping\n")
            try:
                match = self.wait_for(r"^(?P<out>PONG .*)\n(?:.*\n)*?vmshift-done:\d+:0$",
                                      min(3.0, max(deadline - time.monotonic(), 0.1)))
                return match["out"]
            except OperationFailed:
                if time.monotonic() >= deadline or self._closed:
                    raise

    def close(self) -> None:
        for action in (self._stream.eventRemoveCallback, self._stream.abort):
            try:
                action()
            except libvirt.libvirtError:
                pass
        self._conn.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
