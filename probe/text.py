"""Plain text: tables for the terminal, and the control characters no output draws."""
from __future__ import annotations

import math

# C0 and C1 control characters and DEL: no output can draw them, and some act (a newline ends a
# TeX comment).
CONTROL_AS_SPACE = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], " ")


def text_table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Columns padded to their widest cell; the columns in `right` right-aligned (numbers)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def shown(value, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, for an error message about a bad value: never itself
    an error (repr of a 5,000-digit integer is a ValueError, of a deep list a RecursionError) and
    never a page long."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)):,} digits"
    if isinstance(value, (list, tuple)) and len(value) > limit:
        value = value[:limit]  # its repr is cut below anyway: not worth building in full
    elif isinstance(value, dict) and len(value) > limit:
        value = dict(list(value.items())[:limit])
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def count(n: int, noun: str) -> str:
    """"1 epoch", "2 epochs", "1,000 images": n with its noun, plural where n is not 1."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
