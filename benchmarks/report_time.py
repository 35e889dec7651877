"""The report's wall time and peak memory: one MNIST model, and the two-model demo, from nothing,
each beside its reference, the same report with the models' analyses one after another.

    .venv/bin/python benchmarks/report_time.py                       # the four cases once: ~5 min here
    .venv/bin/python benchmarks/report_time.py --repeats 3 --json out.json
    .venv/bin/python benchmarks/report_time.py --cases one one-serial

Each case runs `probe report` in a fresh process into an empty folder (no cache), with the report's
own budgets (the robustness curve on 1,000 test images at MNIST's 13 ε, PGD-20; see
probe/report/build.py REPORT_SETTINGS), as `make demo` runs it. "one" and "demo" run as a user
runs them (the per-model analyses side by side in worker processes where cores are free:
probe.parallel); "one-serial" and "demo-serial" add `--workers 1`, all in one process as before.
Recorded per run: the wall time of the process (start-up and imports included), the report's
own time per analysis (the "time:" line it prints), the largest process's peak RSS (wait4's
ru_maxrss) and the peak of all its processes' RSS summed (sampled twice a second; pages the
forked workers share with the parent count in each, so an upper bound). The goals of issue 16:
one model ≤ 60 s and the demo ≤ 90 s on a 2-core AVX2 machine. The cases alternate within
each repeat; the machine's CPU flags and the load average before and after each run go into the
JSON: a load above the core count means other work shared the cores and the times are an upper bound.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import flags_line, machine, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from probe.device import busy_elsewhere  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ONE = ["trained_models/mnist-resnet20"]
DEMO = ["trained_models/mnist-resnet20", "trained_models/mnist-plain20"]
CASES = {  # (models, more arguments of `probe report`)
    "one": (ONE, []),
    "demo": (DEMO, []),
    # make demo's report since the robust model was committed (no goal of its own)
    "demo3": ([*DEMO, "trained_models/mnist-resnet20-robust"], []),
    # the references: the models' analyses one after another in one process (as before probe.parallel)
    "one-serial": (ONE, ["--workers", "1"]),
    "demo-serial": (DEMO, ["--workers", "1"]),
}
GOALS = {"one": 60.0, "demo": 90.0}
REFERENCE = {"one": "one-serial", "demo": "demo-serial"}


def _rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants (VmRSS of /proc/PID/status, which reads
    counters: smaps_rollup's exact PSS walks the page tables under the process's memory lock, 23 ms a
    read here, and stalled the report it measured). Pages the forked workers share with the parent
    count in each: an upper bound. 0 where /proc cannot say."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _rss_kb(int(child))
    except (OSError, ValueError):
        pass
    return total


def _sample_rss(pid: int, peak: list[int], done: threading.Event) -> None:
    while not done.wait(0.5):
        peak[0] = max(peak[0], _rss_kb(pid))


def run_case(case: tuple[list[str], list[str]], data_dir: str) -> dict:
    """One report in a fresh process: wall seconds, peak memory (MB: the largest process's RSS,
    and all its processes' RSS summed, sampled), the report's time line."""
    models, more = case
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "probe", "report", *(a for m in models for a in ("--model", m)),
                "--data-dir", data_dir, "--out", str(Path(tmp) / "report"), *more]
        load_before = os.getloadavg()[0]
        busy_before = busy_elsewhere(1.0)  # cores other processes keep busy (the load average lags)
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak, done = [0], threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(child.pid, peak, done), daemon=True)
        sampler.start()
        out = child.stdout.read()
        done.set()
        sampler.join()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"probe report failed: {out[-500:]}")
    times = re.search(r"^time: (.*)$", out, re.M)
    spent = dict((name, float(t)) for name, t in re.findall(r"([\w-]+(?: \([^)]*\))?) (\d+) s", times.group(1))) \
        if times else {}
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "peak_rss_mb_all_processes": round(peak[0] / 1024), "analysis_seconds": spent,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "cores_busy_elsewhere_before": None if busy_before is None else round(busy_before, 2),
            "summary": out.strip().splitlines()[:2]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=CASES, default=["one", "one-serial", "demo", "demo-serial"])
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
            print(f"{case:11s} run {r + 1}: {run['seconds']:6.1f} s  peak RSS {run['peak_rss_mb']:,} MB  "
                  f"load {run['load_before']:.1f}→{run['load_after']:.1f}, cores busy elsewhere before "
                  f"{run['cores_busy_elsewhere_before']}  | {run['summary'][-1] if run['summary'] else ''}", flush=True)
            print("      " + next((line for line in run["summary"] if line.startswith("time:")), ""), flush=True)
    median = {case: statistics.median(r["seconds"] for r in rs) for case, rs in runs.items()}
    table = {case: {"median_seconds": median[case],
                    "goal_seconds": GOALS.get(case),
                    "goal_met": None if case not in GOALS else median[case] <= GOALS[case],
                    "reference": REFERENCE.get(case) if REFERENCE.get(case) in median else None,
                    "speedup_over_reference": (median[REFERENCE[case]] / median[case]
                                               if REFERENCE.get(case) in median else None),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                    "peak_rss_mb_all_processes": max(r["peak_rss_mb_all_processes"] for r in rs)}
             for case, rs in runs.items()}
    for case, row in table.items():
        goal = ("no goal" if row["goal_met"] is None
                else f"goal ≤ {row['goal_seconds']:.0f} s: {'met' if row['goal_met'] else 'not met'}")
        ref = (f", {row['speedup_over_reference']:.2f}× {row['reference']}" if row["reference"] else "")
        print(f"{case:11s} median {row['median_seconds']:.1f} s ({goal}{ref}), peak RSS {row['peak_rss_mb']:,} MB "
              f"(largest process), {row['peak_rss_mb_all_processes']:,} MB (all processes, shared pages in each)")
    write_json(Path(args.json) if args.json else None,
               {"benchmark": "report_time", "machine": machine(), "table": table, "runs": runs})


if __name__ == "__main__":
    main()
