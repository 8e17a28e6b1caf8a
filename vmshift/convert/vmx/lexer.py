"""The VMX file format: ``key = "value"`` lines.

What VMware writes and what hand-edited files contain:
- keys are case-insensitive (``MEMSIZE`` and ``memsize`` are the same key);
- values are double-quoted; ``"`` and ``|`` inside them are written as ``|22``
  and ``|7C`` (any byte can appear as ``|XX``);
- ``.encoding = "..."`` names the character set of the whole file;
- CRLF line endings, ``#`` comments, blank lines;
- a key given twice: VMware keeps the last one. We do too, and say so.

Anything else is not a VMX file: the error names the file and line.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path

from vmshift.errors import bad_input

# Real VMX files are a few KiB; the largest annotations are a few KiB more.
# These bounds turn a multi-megabyte or binary file into a clear error instead
# of a slow parse.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024

_LINE = re.compile(
    r"""^\s*(?P<key>[^\s="#]+)\s*=\s*
        (?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"#]*))
        \s*(?:\#.*)?$""",
    re.VERBOSE,
)
_ESCAPE = re.compile(rb"\|([0-9A-Fa-f]{2})")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ENCODING = re.compile(rb'^\s*\.encoding\s*=\s*"([^"]*)"', re.IGNORECASE | re.MULTILINE)


@dataclass
class Entry:
    key: str  # as written, for messages
    value: str  # unescaped
    line: int


@dataclass
class VmxFile:
    """The parsed key/value pairs of one VMX file (lower-cased keys)."""

    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        entry = self.entries.get(key.lower())
        return entry.value if entry else None

    def line(self, key: str) -> int | None:
        entry = self.entries.get(key.lower())
        return entry.line if entry else None

    def keys_matching(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for k in self.entries if (m := pattern.match(k))]

    def get_bool(self, key: str, default: bool | None = None) -> bool | None:
        """VMX booleans: TRUE/FALSE in any case (also yes/no, 1/0 as VMware accepts)."""
        value = self.get(key)
        if value is None or value.strip() == "":
            return default
        word = value.strip().lower()
        if word in ("true", "yes", "1", "on"):
            return True
        if word in ("false", "no", "0", "off"):
            return False
        raise bad_input(self.path, f"{self.spelled(key)} = {value!r}: expected TRUE or FALSE",
                        self.line(key))

    def get_int(self, key: str, low: int, high: int) -> int | None:
        """An integer within [low, high]; out of range or not a number is bad input."""
        value = self.get(key)
        if value is None:
            return None
        try:
            number = int(value.strip(), 10)
        except ValueError:
            raise bad_input(self.path, f"{self.spelled(key)} = {value!r}: not an integer",
                            self.line(key)) from None
        if not low <= number <= high:
            raise bad_input(self.path, f"{self.spelled(key)} = {number}: out of range "
                                       f"({low}..{high})", self.line(key))
        return number

    def spelled(self, key: str) -> str:
        entry = self.entries.get(key.lower())
        return entry.key if entry else key


def unescape(value: str, encoding: str = "utf-8") -> str:
    """Undo VMware's ``|XX`` escapes.

    An escape stands for one byte of the file's encoding, so ``|C3|A9`` in a
    UTF-8 file is one character: unescape as bytes, then decode.
    """
    if "|" not in value:
        return value
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode(encoding))
    return raw.decode(encoding, errors="replace")


def _decode(path: Path, data: bytes) -> tuple[str, str]:
    if data.startswith(b"KDMV") or b"# Disk DescriptorFile" in data[:1024]:
        raise bad_input(path, "not a VMX file: this is a VMDK disk (descriptor or image)")
    if b"\x00" in data:
        raise bad_input(path, "not a VMX file: it contains binary data (NUL bytes)")
    encoding = "utf-8"
    match = _ENCODING.search(data)
    if match:
        name = match.group(1).decode("ascii", "replace")
        try:
            encoding = codecs.lookup(name).name
        except LookupError:
            line = data[: match.start(1)].count(b"\n") + 1
            raise bad_input(path, f".encoding: unknown character set {name!r}", line) from None
    try:
        # A byte-order mark (Windows editors add one) is not part of the first key.
        text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
        return text, encoding
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise bad_input(path, f"not valid {encoding} text (binary data?)", line) from None


def read_vmx_bytes(path: Path, data: bytes) -> VmxFile:
    """Parse VMX text; every malformed line is a BadInput naming it."""
    if len(data) > MAX_FILE_BYTES:
        raise bad_input(path, f"not a VMX file: {len(data)} bytes is far larger than any "
                              f"VMX (limit {MAX_FILE_BYTES})")
    text, encoding = _decode(path, data)
    vmx = VmxFile(path=path)
    for number, raw in enumerate(text.splitlines(), start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise bad_input(path, f"line is {len(raw)} characters long (limit "
                                  f"{MAX_LINE_BYTES}): not a VMX file", number)
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(raw)
        if not match:
            shown = stripped if len(stripped) <= 60 else stripped[:57] + "..."
            if not shown.isprintable():
                shown = shown.encode("unicode_escape").decode("ascii")
            raise bad_input(path, f'expected key = "value", found {shown!r}', number)
        key = match.group("key")
        value = match.group("quoted")
        if value is None:
            value = match.group("bare") or ""
        _store(vmx, key, _xml_safe(path, key, unescape(value, encoding), number), number)
    if not vmx.entries:
        raise bad_input(path, "not a VMX file: no key = \"value\" lines")
    return vmx


def _xml_safe(path: Path, key: str, value: str, line: int) -> str:
    """Control characters (from |XX escapes) cannot appear in XML. In the free-text
    annotation they are replaced; in any other value they are an error."""
    if not _CONTROL.search(value):
        return value
    if key.lower() == "annotation":
        return _CONTROL.sub("\ufffd", value)
    raise bad_input(path, f"{key}: control character in value", line)


def _store(vmx: VmxFile, key: str, value: str, line: int) -> None:
    lower = key.lower()
    previous = vmx.entries.get(lower)
    if previous is not None and previous.value != value:
        vmx.warnings.append(
            f"{vmx.path.name}:{line}: {key} given again (first at line {previous.line}); "
            f"the last value wins, as in VMware")
    vmx.entries[lower] = Entry(key=key, value=value, line=line)


def read_vmx_file(path: Path) -> VmxFile:
    """Read a VMX file (opened read-only, size-checked before reading)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise bad_input(path, "is a directory, not a VMX file") from None
    except OSError as exc:
        raise bad_input(path, f"cannot read: {exc.strerror}") from None
    return read_vmx_bytes(path, data)
