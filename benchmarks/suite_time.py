"""How long the test suite takes: `make test`'s way (one pytest-xdist worker per core) against
the whole suite in one process, in one run, on the same checkout.

    PROBE_DATA_DIR=../shared/datasets .venv/bin/python benchmarks/suite_time.py
    .venv/bin/python benchmarks/suite_time.py --rounds 3 --json out.json

Each round runs both, alternating which goes first; every run is timed from start to exit, as a
user waits for it (interpreter start, collection, the tests, the summary). Reported: the median
seconds of each, their ratio, and pytest's own summary line of each run. Both run in the
environment the Makefile's `test` target gives pytest (`make -s test-env`: the bytecode cache
and temporary files in RAM), so the ratio compares the two ways and not two environments.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_file import flags_line, machine, write_json

ROOT = Path(__file__).resolve().parent.parent
MAKE_TEST = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadscope"]  # as in the Makefile's `test`


def makefile_options() -> list[str]:
    """The pytest options of the Makefile's test target, so the benchmark times what it runs."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^test:.*\n\t(?:\$\(TEST_ENV\) )?\$\(PY\) -m pytest (.*)$", text, re.MULTILINE)
    return [a for a in shlex.split(match.group(1)) if a != "-q"] if match else MAKE_TEST


def makefile_env() -> dict[str, str]:
    """What the Makefile's test target adds to pytest's environment (none without make)."""
    try:
        done = subprocess.run(["make", "-s", "--no-print-directory", "test-env"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    if done.returncode != 0:
        return {}
    return dict(a.split("=", 1) for a in shlex.split(done.stdout) if "=" in a)


def run(options: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env})
    seconds = time.perf_counter() - start
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode != 0:
        raise SystemExit(f"the suite failed ({' '.join(options) or 'one process'}): {summary}")
    return seconds, summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="rounds of both runs (default 2)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "suite-time.json")
    args = p.parse_args(argv)
    print(flags_line(), flush=True)
    env = makefile_env()
    print(f"environment of make test: {' '.join(f'{k}={v}' for k, v in env.items()) or '(as is)'}", flush=True)
    sides = {"one process": [], "make test (xdist)": makefile_options()}
    seconds = {name: [] for name in sides}
    summaries = {name: [] for name in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            s, summary = run(sides[name], env)
            seconds[name].append(s)
            summaries[name].append(summary)
            print(f"round {round_ + 1}, {name}: {s:.1f} s  ({summary})", flush=True)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    ratio = medians["one process"] / medians["make test (xdist)"]
    print(f"median: one process {medians['one process']:.1f} s, make test {medians['make test (xdist)']:.1f} s "
          f"({ratio:.2f}× faster)")
    doc = {"benchmark": "suite_time", "options": sides, "seconds": seconds, "median_seconds": medians,
           "ratio_of_medians": ratio, "summaries": summaries,
           "machine": machine(), "environment": env,
           "data_dir": os.environ.get("PROBE_DATA_DIR")}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
