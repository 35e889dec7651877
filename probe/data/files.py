"""Reading dataset files safely: only regular files (a FIFO or a device named like a data file
would block or never end), and never more bytes than a file of that kind can hold."""
from __future__ import annotations

from probe.errors import ProbeWarning
from probe.io import check_regular, open_regular, read_regular  # noqa: F401  (one reader, in probe.io)


class DataWarning(ProbeWarning):
    """Something odd in a dataset folder that loading can work around."""
