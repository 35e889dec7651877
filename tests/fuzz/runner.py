"""The parent side: hypothesis draws each format's variants (seeded: derandomize), a worker
process loads them (worker.py), and every outcome is counted:

    ok            a correct load (and the CLI's exit 0)
    probe_error   a ProbeError of one line (and the CLI's exit 2 with one `error:` line)
    other         any other exception, a failed check, or a CLI exit that is neither
    hang          no answer within HANG_SECONDS: the worker is killed and started again
    memory        MemoryError under the worker's address-space cap, or the worker killed
                  (a crash is counted here too, with its signal)

A format's variants come from `Format.strategy()` (formats.py) or names.STRATEGY.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from fuzz import names
from fuzz.formats import FORMATS
from fuzz.worker import MEM_GROWTH

HERE = Path(__file__).resolve().parent
HANG_SECONDS = 30.0  # per variant; the slowest honest load takes well under a second
STARTUP_SECONDS = 300.0  # importing torch and building the honest files (a tiny training run)
ALL_FORMATS = [*FORMATS, "hostile-names"]
FAILURES = ("other", "hang", "memory")


class Worker:
    """One worker process; started again after a hang or a crash (the honest files are kept)."""

    def __init__(self, base: Path | None = None):
        self._tmp = None
        if base is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="probe-fuzz-", dir=_ram_dir())
            base = Path(self._tmp.name) / "base"
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.restarts = 0
        self.start()

    def start(self) -> None:
        r_req, w_req = os.pipe()
        r_res, w_res = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_ARENA_MAX="2",
                   MPLBACKEND="Agg", PROBE_CACHE_DIR=str(self.base.parent / "user-cache"),
                   PYTHONHASHSEED="0")
        log = open(self.base.parent / "worker.log", "ab")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "worker.py"), str(self.base), str(r_req), str(w_res)],
                                     pass_fds=(r_req, w_res), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=env, cwd=str(self.base.parent))
        log.close()
        os.close(r_req)
        os.close(w_res)
        self.send_conn, self.recv_conn = Connection(w_req, readable=False), Connection(r_res, writable=False)
        if not self.recv_conn.poll(STARTUP_SECONDS):
            self.kill()
            raise RuntimeError(f"the fuzz worker did not start in {STARTUP_SECONDS:.0f} s; see {self.base.parent / 'worker.log'}")
        try:
            msg = self.recv_conn.recv()
        except EOFError:
            raise RuntimeError(f"the fuzz worker died while starting; see {self.base.parent / 'worker.log'}:\n"
                               + (self.base.parent / "worker.log").read_text()[-3000:]) from None
        assert msg[0] == "ready", msg
        self.cap = msg[1]["cap"]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for c in (getattr(self, "send_conn", None), getattr(self, "recv_conn", None)):
            if c is not None:
                c.close()

    def run(self, fmt: str, variant, cli: bool, draw: bool, timeout: float = HANG_SECONDS) -> dict:
        try:
            self.send_conn.send(("run", fmt, variant, cli, draw))
            if self.recv_conn.poll(timeout):
                outcome = self.recv_conn.recv()
                if outcome.get("peak_rss_growth", 0) < MEM_GROWTH // 2:
                    return outcome
                self.kill()  # a fresh worker: its high-water mark of memory is the one measured
                self.restarts += 1
                self.start()
                return outcome
            outcome = {"library": ("hang", f"no answer in {timeout:.0f} s"), "cli": None, "seconds": timeout}
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self.proc.wait()
            why = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            kind = "memory" if code == -signal.SIGKILL else "other"
            outcome = {"library": (kind, f"the worker died ({why})"), "cli": None, "seconds": 0.0}
        self.kill()
        self.restarts += 1
        self.start()
        return outcome

    def close(self) -> None:
        try:
            self.send_conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()


def _ram_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@dataclass
class Counts:
    variants: int = 0
    ok: int = 0
    probe_error: int = 0
    other: int = 0
    hang: int = 0
    memory: int = 0
    cli_runs: int = 0
    cli_ok: int = 0
    cli_exit2: int = 0
    cli_other: int = 0  # a traceback, an exit code other than 0 or 2, or more than one error line
    cli_memory: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    failures: list = field(default_factory=list)  # (variant, where, kind, detail), the first few
    kinds: Counter = field(default_factory=Counter)  # variant kinds drawn

    def add(self, variant, outcome: dict, keep: int = 20) -> None:
        self.variants += 1
        self.kinds[variant[0]] += 1
        kind, detail = outcome["library"]
        setattr(self, kind, getattr(self, kind) + 1)
        self.seconds += outcome["seconds"]
        self.slowest = max(self.slowest, outcome["seconds"])
        if kind in FAILURES and len(self.failures) < keep:
            self.failures.append((_short(variant), "library", kind, detail))
        for ckind, cdetail in outcome.get("cli") or ():
            self.cli_runs += 1
            if ckind == "ok":
                self.cli_ok += 1
            elif ckind == "exit2":
                self.cli_exit2 += 1
            else:
                if ckind == "memory":
                    self.cli_memory += 1
                else:
                    self.cli_other += 1
                if len(self.failures) < keep:
                    self.failures.append((_short(variant), "cli", ckind, cdetail))

    @property
    def failed(self) -> int:
        return self.other + self.hang + self.memory + self.cli_other + self.cli_memory

    def as_dict(self) -> dict:
        return {"variants": self.variants, "correct_loads": self.ok, "probe_errors": self.probe_error,
                "other_exceptions": self.other, "hangs": self.hang, "memory_blowups": self.memory,
                "cli_runs": self.cli_runs, "cli_exit_0": self.cli_ok, "cli_exit_2_one_line": self.cli_exit2,
                "cli_other": self.cli_other, "cli_memory_blowups": self.cli_memory,
                "seconds": round(self.seconds, 1), "slowest_variant_seconds": round(self.slowest, 2),
                "variant_kinds": dict(self.kinds),
                "failures": [list(map(str, f)) for f in self.failures]}


def _short(variant) -> str:
    text = repr(variant)
    return text if len(text) < 400 else text[:400] + "..."


def fuzz_format(worker: Worker, fmt: str, n: int, *, cli_every: int = 10, draw_every: int = 25,
                seed_name: str = "") -> Counts:
    """n variants of one format, drawn by hypothesis (seeded), each loaded by the worker."""
    counts = Counts()
    strategy = names.STRATEGY if fmt == "hostile-names" else FORMATS[fmt].strategy()
    if fmt in FORMATS and FORMATS[fmt].draw_every:
        draw_every = FORMATS[fmt].draw_every
    counter = itertools.count()

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(strategy)
    def one(variant):
        i = next(counter)
        if i >= n:
            return
        counts.add(variant, worker.run(fmt, variant, cli=i % cli_every == 0, draw=i % draw_every == 0))

    one()
    # hypothesis may stop short of n (a small space, or examples it judged the same): top up
    # with more rounds of the same, still seeded, strategy
    rounds = 0
    while counts.variants < n and rounds < 20:
        rounds += 1
        before = counts.variants
        _again(one, strategy, n - counts.variants, rounds, lambda v, i: counts.add(
            v, worker.run(fmt, v, cli=i % cli_every == 0, draw=i % draw_every == 0)))
        if counts.variants == before:
            break
    return counts


def _again(_, strategy, n: int, round_: int, record) -> None:
    from hypothesis import seed
    counter = itertools.count()

    @seed(round_)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def more(variant):
        i = next(counter)
        if i < n:
            record(variant, i)

    more()


SELFTEST = [  # (variant, how it must be counted): the harness sees each kind of ending
    (("raise", "DataError", "a bad file"), "probe_error"),
    (("raise", "DataError", "two\nlines"), "other"),
    (("raise", "ValueError", "not a ProbeError"), "other"),
    (("alloc", 4 * 2 ** 30), "memory"),  # past the address-space cap: MemoryError
    (("alloc", 800 * 2 ** 20), "memory"),  # under the cap, but resident: the peak's growth
    (("alloc", 10 * 2 ** 20), "ok"),
]
RESTARTING = [  # each costs a new worker (a few seconds): the benchmark's check, not the tests'
    (("crash",), "memory"),  # killed, as the kernel's OOM killer does
    (("sleep", 60), "hang"),
]


def selftest(worker: Worker, restarting: bool = False) -> list[tuple]:
    """[(variant, expected, got)] of SELFTEST (and of RESTARTING: a crash and a hang)."""
    cases = SELFTEST + (RESTARTING if restarting else [])
    out = []
    for variant, expected in cases:
        got = worker.run("selftest", variant, cli=False, draw=False, timeout=3 if variant[0] == "sleep" else HANG_SECONDS)
        out.append((variant, expected, got["library"][0]))
    return out
