"""A short seeded slice of the fuzz suite (issue 18; tests/fuzz/): for every format probe reads,
SLICE corrupted variants drawn by hypothesis (derandomized: the same ones every run), each loaded
by a worker process under a memory cap and a time bound, through the library and (every few)
the CLI. Each must end in a correct load or a ProbeError of one line (CLI: exit 2 and one
`error:` line); any other exception, a hang or a memory blow-up fails the test with the variant
that did it. The full run, ≥ 1,000 variants a format: benchmarks/fuzz.py."""
import sys
from pathlib import Path

import pytest

# tests/ first: test_benchmarks.py puts benchmarks/ in front, whose fuzz.py is the full run
sys.path.insert(0, str(Path(__file__).parent))
from fuzz.runner import ALL_FORMATS, Worker, fuzz_format  # noqa: E402

SLICE = {"hostile-names": 8, "report-cache": 20}  # the slower ones; every other format: DEFAULT
DEFAULT = 30


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_fuzz_slice(worker, fmt):
    counts = fuzz_format(worker, fmt, SLICE.get(fmt, DEFAULT), cli_every=5, draw_every=8)
    assert counts.variants == SLICE.get(fmt, DEFAULT)
    assert counts.failed == 0, "\n\n".join(" | ".join(map(str, f)) for f in counts.failures)
    assert counts.ok + counts.probe_error == counts.variants


def test_the_harness_tells_each_ending(worker):
    """A ProbeError of one line passes; of two lines, any other exception, an allocation past the
    cap and a resident one under it are counted as failures (a crash and a hang: benchmarks/fuzz.py
    checks them, each costs a new worker)."""
    from fuzz.runner import selftest
    results = selftest(worker)
    assert [(v, e) for v, e, got in results if got != e] == [], results
