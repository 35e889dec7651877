"""Reading dataset files safely: only regular files (a FIFO or a device named like a data file
would block or never end), and never more bytes than a file of that kind can hold."""
from __future__ import annotations

from probe.errors import ProbeWarning
from probe.io import check_regular, open_regular, read_regular  # noqa: F401  (one reader, in probe.io)


class DataWarning(ProbeWarning):
    """Something odd in a dataset folder that loading can work around."""


def one_line(text, limit: int = 200) -> str:
    """Text from a file (a name, a CSV field, a pickle's global, an exception's message about
    them) as part of a one-line message: line breaks and other characters that do not print
    escaped (\\n, \\u2028), bytes of a name that are not UTF-8 as \\xff; at most `limit` characters."""
    text = str(text)[:2 * limit]
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # os.fsdecode's escape of a byte that is not UTF-8
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    shown = "".join(out)
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"
