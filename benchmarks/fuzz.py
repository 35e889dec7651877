"""The fuzz suite's full run (issue 18): for every format probe reads, N corrupted variants drawn
by hypothesis (seeded: the same variants every run), each loaded by a worker process under an
address-space cap (RLIMIT_AS: its footprint + 1.5 GiB) and a 30 s time bound, through the library
and, every --cli-every variants, the CLI. Prints and records per format: variants, correct loads,
ProbeErrors, other exceptions, hangs, memory blow-ups, and the CLI's exit codes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz.py                  # 1,000 a format
    .venv/bin/python benchmarks/fuzz.py --n 200 --formats meta.json,history.json --json ''

The formats and mutations: tests/fuzz/ (formats.py, mutators.py, names.py); the short slice
that runs with the tests: tests/test_fuzz.py. Exit status 1 when anything but a correct load or
a ProbeError happened.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from fuzz.runner import ALL_FORMATS, HANG_SECONDS, Worker, fuzz_format, selftest  # noqa: E402
from fuzz.worker import MEM_GROWTH, MEM_HEADROOM  # noqa: E402
from results_file import flags_line, machine, write_json  # noqa: E402

COLUMNS = ("variants", "correct_loads", "probe_errors", "other_exceptions", "hangs", "memory_blowups",
           "cli_runs", "cli_exit_0", "cli_exit_2_one_line", "cli_other", "seconds")
SHORT = {"correct_loads": "correct", "probe_errors": "ProbeError", "other_exceptions": "other exc",
         "memory_blowups": "memory", "cli_exit_0": "CLI exit 0", "cli_exit_2_one_line": "CLI exit 2",
         "cli_other": "CLI other", "cli_runs": "CLI runs"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="variants a format (default 1000)")
    ap.add_argument("--formats", default=",".join(ALL_FORMATS), help="comma-separated (default: all)")
    ap.add_argument("--cli-every", type=int, default=10, help="every k-th variant also through the CLI")
    ap.add_argument("--draw-every", type=int, default=100, help="every k-th variant also draws its figures")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "fuzz.json"),
                    help="where to write the counts ('' for nowhere)")
    args = ap.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    unknown = set(formats) - set(ALL_FORMATS)
    if unknown:
        ap.error(f"unknown formats {sorted(unknown)}; known: {', '.join(ALL_FORMATS)}")
    print(flags_line())
    started = time.perf_counter()
    worker = Worker()
    print(f"worker ready in {time.perf_counter() - started:.1f} s (address space capped at "
          f"{worker.cap / 2 ** 30:.2f} GiB, {HANG_SECONDS:.0f} s a variant)", flush=True)
    check = selftest(worker, restarting=True)
    wrong = [(v, e, g) for v, e, g in check if g != e]
    print(f"harness check: {len(check) - len(wrong)} of {len(check)} endings told right "
          f"(ProbeError of one line and of two, other exception, memory past the cap and under it, "
          f"a crash, a hang){'' if not wrong else f'; WRONG: {wrong}'}", flush=True)
    if wrong:
        worker.close()
        return 2
    worker.restarts = 0
    results = {}
    header = f"{'format':22s}" + "".join(f"{SHORT.get(c, c):>11s}" for c in COLUMNS)
    print(header)
    try:
        for fmt in formats:
            counts = fuzz_format(worker, fmt, args.n, cli_every=args.cli_every, draw_every=args.draw_every)
            d = counts.as_dict()
            results[fmt] = d
            print(f"{fmt:22s}" + "".join(f"{d[c]:>11}" for c in COLUMNS), flush=True)
            for f in d["failures"][:5]:
                print("    FAILED " + " | ".join(f)[:1500])
    finally:
        restarts = worker.restarts
        worker.close()
    total = {c: round(sum(r[c] for r in results.values()), 1) for c in COLUMNS}
    total["cli_memory_blowups"] = sum(r["cli_memory_blowups"] for r in results.values())
    print(f"{'all':22s}" + "".join(f"{total[c]:>11}" for c in COLUMNS))
    seconds = time.perf_counter() - started
    failed = (total["other_exceptions"] + total["hangs"] + total["memory_blowups"] + total["cli_other"]
              + total["cli_memory_blowups"])
    print(f"{seconds:.0f} s in all; worker restarts {restarts}; "
          f"{'no failures' if not failed else f'{failed} FAILURES'}")
    write_json(Path(args.json) if args.json else None, {
        "benchmark": "fuzz", "machine": machine(), "n_per_format": args.n, "cli_every": args.cli_every,
        "draw_every": args.draw_every, "hang_seconds": HANG_SECONDS, "memory_headroom_bytes": MEM_HEADROOM,
        "memory_growth_bytes": MEM_GROWTH, "harness_check": [list(map(str, c)) for c in check],
        "seconds": round(seconds, 1), "worker_restarts": restarts, "total": total, "formats": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
