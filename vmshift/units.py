"""Sizes and bandwidths: the one parser and the one formatter every command uses.

K, M, G and T are powers of 1024, as in qemu-img and libvirt; a trailing
``B``, ``iB`` or ``/s`` is accepted and ignored (``100MiB/s`` is ``100M``).
"""

from __future__ import annotations

import math
import re

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_FACTORS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str, *, bare: int = 1) -> int:
    """'64k' -> 65536, '1.5G' -> 1610612736; a number without a unit counts ``bare``
    bytes. Raise ValueError (saying what a size looks like) for anything else."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (e.g. 512K, 64M, 1.5G)")
    number, unit = match.groups()
    value = int(number) if number.isdigit() else float(number)  # integers stay exact
    return int(value * (_FACTORS[unit.lower()] if unit else bare))


def parse_bandwidth(text: str) -> int:
    """'100M', '1G', '512K' (per second) -> bytes per second; a bare number is MiB/s."""
    cleaned = text.strip()
    cleaned = cleaned[:-2] if cleaned.lower().endswith("/s") else cleaned
    try:
        rate = parse_size(cleaned, bare=MiB)
    except ValueError:
        raise ValueError(f"{text!r} is not a bandwidth (e.g. 100M, 1G, 512K per second; "
                         "a bare number is MiB/s)") from None
    if rate <= 0:
        raise ValueError(f"{text!r}: a bandwidth must be more than 0")
    return rate


def whole_mib(rate: int) -> int:
    """A bandwidth in the whole MiB/s libvirt's migration API counts in (rounded down,
    so the cap is never exceeded). Raise ValueError below 1 MiB/s."""
    if rate < MiB:
        raise ValueError(f"{human(rate)}/s is below 1 MiB/s, the least libvirt can cap at")
    return rate // MiB


def human(n: float | None) -> str:
    """Bytes for people: '512 B', '1.5 GiB'; None (unknown) is '?'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
