"""One libguestfs appliance per inspection, every disk attached read-only.

Launching the appliance is the expensive step (about 15 s under TCG), so a
session launches exactly once and everything else reuses the handle. The
launch count is kept twice: by this wrapper, and from libguestfs' own
LAUNCH_DONE event, so a test can prove that no hidden second launch happens.
"""

from __future__ import annotations

from typing import Any

from vmshift.errors import OperationFailed
from vmshift.inspect.probe import ImageProbe


class ApplianceSession:
    # Every launch made through this class in this process (tests read it).
    total_launches = 0

    def __init__(self, images: list[ImageProbe], *, writable: bool = False) -> None:
        import guestfs

        from vmshift.host import new_guestfs

        self.images = images
        self.g: Any = new_guestfs()
        self.launch_calls = 0
        self.launch_events = 0  # counted by libguestfs itself
        self.g.set_event_callback(self._on_launch_done, guestfs.EVENT_LAUNCH_DONE)
        for image in images:
            # readonly=1: libguestfs puts a throw-away overlay in front of the
            # file, so even journal replay on mount never touches the source.
            # writable: the images are vmshift's own copy-on-write overlays over
            # the read-only sources, and the conversion's changes must persist.
            self.g.add_drive_opts(image.path, readonly=0 if writable else 1,
                                  format=image.format)

    def _on_launch_done(self, event: int, handle: int, buf: Any, array: Any) -> None:
        self.launch_events += 1

    def launch(self) -> None:
        if self.launch_calls:
            raise RuntimeError("the appliance is launched once per session")
        self.launch_calls += 1
        ApplianceSession.total_launches += 1
        try:
            self.g.launch()
        except RuntimeError as exc:
            raise OperationFailed(f"libguestfs appliance did not start: {exc}") from exc

    def devices(self) -> list[str]:
        """Appliance device names, in the order the images were added."""
        return list(self.g.list_devices())

    def close(self) -> None:
        try:
            self.g.shutdown()
        finally:
            self.g.close()

    def __enter__(self) -> ApplianceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
