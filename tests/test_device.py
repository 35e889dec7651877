"""How many CPU threads an analysis takes: the cores other processes leave free, measured from
/proc over a short sample with this process's own work left out (not the load average, which
counts this process and lags a minute behind)."""
import dataclasses
import os
import subprocess
import sys
import time

import pytest
import torch

from probe.device import _cpu_ticks, _own_ticks, analysis_threads, busy_elsewhere

linux = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc")


def test_tick_parsing_leaves_out_idle_and_iowait_and_names_with_spaces():
    stat = "cpu  100 5 50 9000 40 1 2 3 7 9\ncpu0 50 2 25 4500 20 0 1 1 0 0\n"
    assert _cpu_ticks(stat) == 100 + 5 + 50 + 1 + 2 + 3  # user nice system (idle iowait) irq softirq steal; guest (7, 9) is in user/nice already
    own = "4242 (python3 my (odd) name) R 1 2 3 4 5 6 7 8 9 10 123 45 0 0 20 0 3 0 99\n"
    assert _own_ticks(own) == 123 + 45  # utime + stime, counted after the last ')'


@linux
def test_a_busy_process_elsewhere_is_counted():
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        assert busy_elsewhere(0.5) >= 0.6
    finally:
        spin.kill()
        spin.wait()


def test_this_process_own_work_is_left_out(monkeypatch):
    """Other processes' cores are the machine's busy ticks less this process's own, per second:
    checked on made-up /proc files and a made-up clock."""
    import io
    import probe.device as device

    machine = iter(["cpu  1000 0 500 9000 0 0 0 0 0 0\n", "cpu  1200 0 600 9100 0 0 0 0 0 0\n"])
    own = iter(["1 (probe) R " + " ".join(["0"] * 10) + " 50 10 0 0\n",
                "1 (probe) R " + " ".join(["0"] * 10) + " 120 40 0 0\n"])
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: io.StringIO(next(machine)) if path == "/proc/stat"
                        else io.StringIO(next(own)) if path == "/proc/self/stat" else real_open(path, *a, **k))
    clock = iter([10.0, 12.0])
    monkeypatch.setattr(device.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(device.time, "sleep", lambda s: None)
    monkeypatch.setattr(device.os, "sysconf", lambda name: 100)
    # the machine: 300 busy ticks (user 200 + system 100), ours: 100 (utime 70 + stime 30), over 2 s
    assert busy_elsewhere() == pytest.approx((300 - 100) / 100 / 2.0)


def test_a_reading_is_reused_until_it_is_max_age_old(monkeypatch):
    """A report's analyses follow each other: one 0.2 s sample serves those that start within
    READING_MAX_AGE of it, and the next one after that samples again."""
    import probe.device as device

    readings = iter([1.5, 0.0, 0.7])
    samples = []
    monkeypatch.setattr(device, "busy_elsewhere", lambda: samples.append(1) or next(readings))
    monkeypatch.setattr(device, "_last_reading", None)
    clock = [100.0]
    monkeypatch.setattr(device.time, "monotonic", lambda: clock[0])
    assert device.recent_busy_elsewhere() == 1.5
    clock[0] += device.READING_MAX_AGE - 0.5
    assert device.recent_busy_elsewhere() == 1.5 and len(samples) == 1
    clock[0] += 1.0  # the reading is now older than READING_MAX_AGE
    assert device.recent_busy_elsewhere() == 0.0 and len(samples) == 2
    assert device.recent_busy_elsewhere(max_age=0) == 0.7 and len(samples) == 3  # no reuse asked


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: nothing to choose")
def test_threads_follow_the_cores_left_free(monkeypatch):
    cores = os.cpu_count()
    monkeypatch.setattr("probe.device.recent_busy_elsewhere", lambda: float(cores))
    with analysis_threads(None, "cpu") as info:
        assert info["threads"] == torch.get_num_threads() == 1
        assert info["why"] == f"other processes keep {float(cores):.1f} of {cores} cores busy"
    monkeypatch.setattr("probe.device.recent_busy_elsewhere", lambda: 0.1)
    default = torch.get_num_threads()
    with analysis_threads(None, "cpu") as info:
        assert info["threads"] == default and "why" not in info
    with analysis_threads(3, "cpu") as info:  # --threads is taken as given
        assert info["threads"] == 3 and "why" not in info
    assert torch.get_num_threads() == default


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: nothing to choose")
def test_an_analysis_runs_on_the_free_cores_and_inner_blocks_keep_the_choice(monkeypatch):
    """Every analysis runs under analysis_threads (Analysis.execute), not only the attacks: the
    report's saliency took 64 s instead of 8 on two threads beside one busy process. An attack's
    own analysis_threads inside keeps the choice and its reason."""
    from probe.analysis.base import Context
    from probe.analysis.misclassified import ANALYSIS

    cores = os.cpu_count()
    monkeypatch.setattr("probe.device.recent_busy_elsewhere", lambda: float(cores))
    seen = {}

    def run(ctx, settings):
        seen["threads"] = torch.get_num_threads()
        with analysis_threads(None, "cpu") as inner:
            seen["inner"] = dict(inner)
        return "result"
    entry = dataclasses.replace(ANALYSIS, run=run)
    default = torch.get_num_threads()
    ctx = Context.of(torch.nn.Linear(4, 2), classes=2)
    assert entry.execute(ctx, entry.settings()) == "result"
    assert seen["threads"] == 1 and seen["inner"]["threads"] == 1
    assert seen["inner"]["why"].startswith("other processes keep")
    assert torch.get_num_threads() == default
