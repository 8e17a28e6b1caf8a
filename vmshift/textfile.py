"""Reading a small text file an admin wrote (a map, a plan): one reader, so
every such file is refused the same way, on one line naming it."""

from __future__ import annotations

from pathlib import Path

from vmshift.errors import bad_input


def read_text(path: Path, what: str, limit: int, hint: str = "") -> str:
    """PATH as UTF-8 text without its BOM. WHAT names the kind of file in the
    errors ("map file", "plan"); a binary file, one over LIMIT bytes or one
    that is not UTF-8 (HINT: how to fix that) is BadInput naming the file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise bad_input(path, f"cannot read the {what}: {exc.strerror}") from None
    if len(data) > limit or b"\x00" in data:
        raise bad_input(path, f"not a {what} (binary, or larger than {limit // 1024 ** 2} MiB)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise bad_input(path, "not UTF-8 text" + (f" ({hint})" if hint else ""), line) \
            from None
