"""The report's wall time and peak memory: one MNIST model, and the two-model demo, from nothing.

    .venv/bin/python benchmarks/report_time.py                       # both cases once: ~3 min here
    .venv/bin/python benchmarks/report_time.py --repeats 3 --json out.json
    .venv/bin/python benchmarks/report_time.py --cases one

Each case runs `probe report` in a fresh process into an empty folder (no cache), with the report's
own budgets (the robustness curve on 1,000 test images at MNIST's 13 ε, PGD-20 by bisection; see
probe/report/build.py REPORT_SETTINGS), as `make demo` runs it. Recorded per run: the wall time
of the process (start-up and imports included), the report's own time per analysis (the
"time:" line it prints), and the process's peak RSS (wait4's ru_maxrss). The goals of issue 16:
one model ≤ 60 s and the demo ≤ 90 s on a 2-core AVX2 machine. The machine's CPU flags and the
load average before and after each run go into the JSON: a load above the core count means
other work shared the cores and the times are an upper bound.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import flags_line, machine, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from probe.device import busy_elsewhere  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "one": ["trained_models/mnist-resnet20"],
    "demo": ["trained_models/mnist-resnet20", "trained_models/mnist-plain20"],
    # make demo's report since the robust model was committed (no goal of its own)
    "demo3": ["trained_models/mnist-resnet20", "trained_models/mnist-plain20", "trained_models/mnist-resnet20-robust"],
}
GOALS = {"one": 60.0, "demo": 90.0, "demo3": None}


def run_case(models: list[str], data_dir: str) -> dict:
    """One report in a fresh process: wall seconds, peak RSS (MB), the report's time line."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "probe", "report", *(a for m in models for a in ("--model", m)),
                "--data-dir", data_dir, "--out", str(Path(tmp) / "report")]
        load_before = os.getloadavg()[0]
        busy_before = busy_elsewhere(1.0)  # cores other processes keep busy (the load average lags)
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"probe report failed: {out[-500:]}")
    times = re.search(r"^time: (.*)$", out, re.M)
    spent = dict((name, float(t)) for name, t in re.findall(r"([\w-]+(?: \([^)]*\))?) (\d+) s", times.group(1))) \
        if times else {}
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "analysis_seconds": spent,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "cores_busy_elsewhere_before": None if busy_before is None else round(busy_before, 2),
            "summary": out.strip().splitlines()[:2]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=CASES, default=["one", "demo"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--data-dir", default=os.environ.get("PROBE_DATA_DIR", str(ROOT.parent / "shared" / "datasets")) + "/mnist")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "report-time.json"))
    args = p.parse_args(argv)
    print(flags_line())
    runs = {case: [] for case in args.cases}
    for r in range(args.repeats):
        for case in args.cases:
            run = run_case(CASES[case], args.data_dir)
            runs[case].append(run)
            print(f"{case:5s} run {r + 1}: {run['seconds']:6.1f} s  peak RSS {run['peak_rss_mb']:,} MB  "
                  f"load {run['load_before']:.1f}→{run['load_after']:.1f}, cores busy elsewhere before "
                  f"{run['cores_busy_elsewhere_before']}  | {run['summary'][-1] if run['summary'] else ''}", flush=True)
            print("      " + next((line for line in run["summary"] if line.startswith("time:")), ""), flush=True)
    table = {case: {"median_seconds": statistics.median(r["seconds"] for r in rs),
                    "goal_seconds": GOALS[case],
                    "goal_met": None if GOALS[case] is None else statistics.median(r["seconds"] for r in rs) <= GOALS[case],
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)} for case, rs in runs.items()}
    for case, row in table.items():
        goal = ("no goal" if row["goal_met"] is None
                else f"goal ≤ {row['goal_seconds']:.0f} s: {'met' if row['goal_met'] else 'not met'}")
        print(f"{case:5s} median {row['median_seconds']:.1f} s ({goal}), peak RSS {row['peak_rss_mb']:,} MB")
    write_json(Path(args.json) if args.json else None,
               {"benchmark": "report_time", "machine": machine(), "table": table, "runs": runs})


if __name__ == "__main__":
    main()
