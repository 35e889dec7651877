"""How many CPU threads an analysis takes: the cores other processes leave free, measured from
/proc over a short sample with this process's own work left out (not the load average, which
counts this process and lags a minute behind)."""
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from probe.device import _cpu_ticks, _own_ticks, analysis_threads, busy_elsewhere

linux = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc")


def test_tick_parsing_leaves_out_idle_and_iowait_and_names_with_spaces():
    stat = "cpu  100 5 50 9000 40 1 2 3 0 0\ncpu0 50 2 25 4500 20 0 1 1 0 0\n"
    assert _cpu_ticks(stat) == 100 + 5 + 50 + 1 + 2 + 3  # user nice system (idle iowait) irq softirq steal
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


@linux
def test_this_process_own_work_is_left_out(monkeypatch):
    """The measurement subtracts this process's ticks: a thread of ours spinning through the
    sample adds (almost) nothing, though the machine's busy ticks grow by a core."""
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        ours_and_others, others = [], []
        real_open = open

        def recording_open(path, *a, **k):  # what the sample read, to compare with what it said
            f = real_open(path, *a, **k)
            if path == "/proc/stat":
                ours_and_others.append(_cpu_ticks(f.read()))
                f.seek(0)
            return f
        monkeypatch.setattr("builtins.open", recording_open)
        others.append(busy_elsewhere(0.5))
    finally:
        stop.set()
        worker.join()
    machine_cores = (ours_and_others[1] - ours_and_others[0]) / os.sysconf("SC_CLK_TCK") / 0.5
    assert others[0] <= machine_cores - 0.5  # at least half a core of the machine's work was ours


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: nothing to choose")
def test_threads_follow_the_cores_left_free(monkeypatch):
    cores = os.cpu_count()
    monkeypatch.setattr("probe.device.busy_elsewhere", lambda: float(cores))
    with analysis_threads(None, "cpu") as info:
        assert info["threads"] == torch.get_num_threads() == 1
        assert info["why"] == f"other processes keep {float(cores):.1f} of {cores} cores busy"
    monkeypatch.setattr("probe.device.busy_elsewhere", lambda: 0.1)
    default = torch.get_num_threads()
    with analysis_threads(None, "cpu") as info:
        assert info["threads"] == default and "why" not in info
    with analysis_threads(3, "cpu") as info:  # --threads is taken as given
        assert info["threads"] == 3 and "why" not in info
    assert torch.get_num_threads() == default
