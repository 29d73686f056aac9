"""Human-readable units shared by every renderer."""

from __future__ import annotations


def human_size(n: int | None, unknown: str = "-") -> str:
    """``1536`` → ``1.5 KiB``; ``None`` → ``unknown``."""
    if n is None:
        return unknown
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
