"""Tasks side by side in processes: this one and forked workers of one CPU thread each (a report's work).

The report's analyses of a model (saliency, fooling, the misclassified grids and their figures)
run many small kernels on a few images and draw figures in Python, which scale badly over
OpenMP threads: on 2 AVX2 cores the two-model demo's took 42 s one after another on 2 threads
and 24 s as tasks in 2 processes of one thread. A model's robustness attack scales better (its
500-image batches run 1.7× faster on 2 threads than on 1), and two attacks alone side by side
gained nothing: one ends first and its core waits. In one pool with the analyses, the attacks
first, no core waits (the demo: 102.0 s before, 89.5 s, measured back to back).

This process is one of them: it takes the first task (the report's first attack) on one thread,
and on the cores the forked workers leave as they end (a forked worker cannot use more than one
thread: GNU OpenMP hangs in a child of a process that used its thread pool). So a one-model
report's attack, which outlasts the model's other analyses, has both cores once they are done.

Workers are forked (Linux), so they start at once and inherit what is loaded (the models, the
splits and the class probabilities on them) without copying it in; only each task's result
comes back, pickled. Tasks run here, one after another, where forking does not serve: on a GPU
(CUDA does not survive a fork), with one task or one free core, inside a worker, or where fork
is not the platform's way (macOS, Windows).
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import traceback
from typing import Callable, Iterator, Sequence, TypeVar

import torch

from probe.device import free_cores, one_thread_for_now, one_thread_here
from probe.errors import ConfigError, ProbeError

T = TypeVar("T")
Report = Callable[[str, float, "float | None"], None]  # progress: (what, done, total)

DEFAULT_WORKERS: int | None = None  # without --workers: None, one process per free core
_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("probe_workers", default=None)


def can_fork() -> bool:
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


@contextlib.contextmanager
def workers_limit(workers: int | None) -> Iterator[None]:
    """At most `workers` processes for the tasks run inside (--workers); None: one per free core."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers {workers!r}: give 1 or more (1: the models one after another)")
    token = _LIMIT.set(workers)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def workers_and_why(tasks: int, device: torch.device | str = "cpu") -> tuple[int, str | None]:
    """How many processes `tasks` tasks get on `device`: the --workers limit or, without one, the
    cores other processes leave free; 1 where the tasks run here (see the module's words). And
    why they run here one after another where several could not."""
    if tasks < 2:
        return 1, None
    if torch.device(device).type != "cpu":
        return 1, f"on {device}"
    if not can_fork():
        return 1, "worker processes are forked, on Linux only"
    limit = _LIMIT.get()
    limit = limit if limit is not None else DEFAULT_WORKERS
    if limit is not None:
        return min(tasks, limit), "--workers 1" if limit == 1 else None
    free, why = free_cores()
    return min(tasks, free), why if free < 2 else None


def run_tasks(tasks: Sequence[Callable[[Report], T]], workers: int,
              report: Report | None = None) -> list[T]:
    """Each task's result, in order: task(report), where report(what, done, total) shows its
    progress (forwarded from the workers). workers > 1: the tasks are shared out among that many
    processes, the next task to the first free one: this one, which takes the first (the
    longest: put the one that gains most from threads there), and workers − 1 forked ones. This
    process computes on one thread while the others work and on the cores they leave as they end
    (a forked worker cannot: GNU OpenMP hangs in a child of a process that used its threads). An
    exception in a task is raised here; a task whose worker died without a word (killed, out of
    memory) runs here afterwards."""
    if workers <= 1 or len(tasks) <= 1 or not can_fork():
        return [task(report or _quiet) for task in tasks]
    fork = multiprocessing.get_context("fork")
    for stream in (sys.stdout, sys.stderr):  # else a worker's exit writes what is buffered a second time
        with contextlib.suppress(Exception):
            stream.flush()
    workers = min(workers, len(tasks))
    next_task = fork.Value("i", 1)  # the first is this process's
    processes, collector = [], _Collector(report)
    try:
        for _ in range(workers - 1):
            receive, send = fork.Pipe(duplex=False)
            process = fork.Process(target=_work, args=(tasks, next_task, send, workers, os.getpid()), daemon=True)
            process.start()
            send.close()
            collector.pipes.append(receive)
            processes.append(process)
        collector.start()
        results = _work_here(tasks, next_task, collector, workers, report or _quiet)
    finally:  # done, or an error or Ctrl-C here: a worker still at work stops (its files left whole)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        if collector.ident is not None:
            collector.join()
    for i in range(len(tasks)):
        if i not in results:
            results[i] = tasks[i](report or _quiet)
    return [results[i] for i in range(len(tasks))]


def _quiet(what: str, done: float, total: float | None = None) -> None:
    pass


class _Collector(threading.Thread):
    """A thread of the parent's that reads what the workers send while the parent works: progress
    (passed on to `report`), results, and the first error. `ended` counts the workers gone."""

    def __init__(self, report: Report | None):
        super().__init__(daemon=True, name="probe-workers")
        self.report, self.pipes, self.results, self.error, self.ended = report, [], {}, None, 0
        self.finished = threading.Event()  # every worker gone, or one sent an error

    def run(self) -> None:
        try:
            self._read()
        except BaseException as e:  # noqa: BLE001 - a result that will not unpickle, a failing report
            self.error = self.error or e
        finally:
            self.finished.set()

    def _read(self) -> None:
        pipes = list(self.pipes)
        while pipes:
            for conn in multiprocessing.connection.wait(pipes):
                try:
                    kind, payload = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):  # the worker is done, or died (mid-message: OSError)
                    pipes.remove(conn)
                    conn.close()
                    self.ended += 1
                    continue
                if kind == "progress":
                    if self.report is not None:
                        self.report(*payload)
                elif kind == "done":
                    self.results[payload[0]] = payload[1]
                elif self.error is None:
                    self.error = payload
                    self.finished.set()


class _WorkerFailed(BaseException):
    """Raised in this process's task at its next progress report when a worker has failed: the
    task stops at once, and no `except ProbeError` in it can take the worker's error for its own."""


def _work_here(tasks, next_task, collector: _Collector, workers: int, report: Report) -> dict[int, object]:
    """This process's share of the tasks, the first among them, then what the workers made. On one
    thread while they work (two OpenMP threads beside another busy process wait on each other at
    every kernel), and on the threads of the cores that ended workers leave, up to the threads it
    had. A worker's error stops its task at the next progress report."""
    had = torch.get_num_threads()
    with one_thread_for_now(f"one of {workers} processes, one thread each while the others work") as choice:

        def more_threads_as_workers_end() -> None:
            if collector.error is not None:
                raise _WorkerFailed
            threads = max(1, min(had, workers) - (workers - 1 - collector.ended))  # the workers at work keep theirs
            if threads > torch.get_num_threads():
                torch.set_num_threads(threads)
                choice.update(threads=threads, why=f"{collector.ended} of {workers - 1} worker processes done")

        def report_here(what: str, done: float, total: float | None = None) -> None:
            more_threads_as_workers_end()
            report(what, done, total)
        results, index = {}, 0
        try:
            while index < len(tasks):
                results[index] = tasks[index](report_here)
                more_threads_as_workers_end()
                with next_task.get_lock():
                    index = next_task.value
                    next_task.value += 1
            collector.finished.wait()
        except _WorkerFailed:
            pass
    if collector.error is not None:
        raise collector.error
    return results | collector.results


class _Stopped(BaseException):
    """SIGTERM in a worker (the parent stops it): raised where the task is, so that files being
    written are removed (probe.io's atomic writers) and nothing more is sent."""


def _stop(signum, frame) -> None:
    raise _Stopped


def _as_worker(parent: int) -> None:
    """A forked worker's set-up: SIGTERM stops it cleanly, and so does its parent's death (Linux's
    parent-death signal), which would otherwise leave it working for no one; its output goes to the
    terminal itself, not through the parent's progress bar (a copy whose lock may have been
    held at the fork); one CPU thread."""
    signal.signal(signal.SIGTERM, _stop)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was asked for
        raise _Stopped
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__


def _work(tasks, next_task, conn, workers: int, parent: int) -> None:
    """A worker: the next task not taken, until none is left; each result (or the exception) sent back."""
    try:
        _as_worker(parent)
    except _Stopped:
        return
    one_thread_here(f"one of {workers} worker processes, one thread each")

    def send(message) -> None:
        conn.send_bytes(pickle.dumps(message))

    def report(what: str, done: float, total: float | None = None) -> None:
        send(("progress", (what, done, total)))
    while True:
        with next_task.get_lock():
            index = next_task.value
            next_task.value += 1
        if index >= len(tasks):
            break
        try:
            send(("done", (index, tasks[index](report))))
        except (_Stopped, KeyboardInterrupt):  # stopped, or Ctrl-C, which the parent has too: nothing to say
            break
        except BaseException as e:  # noqa: BLE001 - raised in the parent, which decides
            send(("error", _picklable(e)))
            break
    conn.close()


def _picklable(e: BaseException) -> BaseException:
    """The exception as it can cross to the parent: itself where it pickles (a ProbeError's one
    line), else a RuntimeError with its type, words and the worker's traceback."""
    if not isinstance(e, ProbeError) and hasattr(e, "add_note"):  # a fault of probe's: where, for the traceback
        e.add_note("in a worker process:\n" + "".join(traceback.format_exception(e)).rstrip())
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any exception may fail to pickle, in any way
        where = "".join(traceback.format_exception(e))
        return RuntimeError(f"{type(e).__name__} in a worker process: {e}\n{where}")
