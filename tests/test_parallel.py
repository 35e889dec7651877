"""Tasks in worker processes side by side (probe.parallel), and the report's per-model analyses
run that way: the same results as one after another, in the same cache."""
import json
import os
import time

import pytest
import torch

from test_model_folder import write_tiny_model
from test_report import small_plan, write_history

from probe.errors import ConfigError, DataError
from probe.parallel import run_tasks, workers_and_why, workers_limit
from probe.report.build import run_report

PARENT = os.getpid()


def where(i):
    def task(report):
        report(f"task {i}", i, 5)
        return i, os.getpid(), torch.get_num_threads(), torch.full((2,), float(i))
    return task


def slowly(task, seconds=1.0):
    def later(report):
        time.sleep(seconds)
        return task(report)
    return later


def test_results_come_back_in_order_from_this_process_and_workers_of_one_thread():
    heard = []
    results = run_tasks([slowly(where(0)), *(where(i) for i in range(1, 5))], 2, lambda *said: heard.append(said))
    assert [r[0] for r in results] == list(range(5))
    assert results[0][1] == PARENT  # the first task is this process's; meanwhile the worker takes the others
    assert any(pid != PARENT for _, pid, _, _ in results[1:])
    assert {threads for _, pid, threads, _ in results if pid != PARENT} == {1}
    assert [r[3].tolist() for r in results] == [[i, i] for i in range(5)]
    assert sorted(heard) == [(f"task {i}", i, 5) for i in range(5)]  # progress forwarded, from either process


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def threads_until_two(report) -> list[int]:
    """A first task (this process's): the threads it has, looked at every 20 ms until two (20 s at most)."""
    seen = [torch.get_num_threads()]
    deadline = time.monotonic() + 20
    while seen[-1] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        report("waiting", 0, None)
        seen.append(torch.get_num_threads())
    return seen


def test_this_process_works_on_one_thread_then_on_the_cores_the_workers_leave(two_threads):
    """Beside a busy worker this process computes on one thread; once the worker has ended, on
    the threads it had (here two), and it has them again afterwards."""
    def second(report):
        time.sleep(0.3)  # the first task sees one thread meanwhile
        return torch.get_num_threads()
    seen, worker_threads = run_tasks([threads_until_two, second], 2)
    assert seen[0] == 1 and seen[-1] == 2 and worker_threads == 1
    assert torch.get_num_threads() == 2


def test_one_worker_runs_the_tasks_here():
    results = run_tasks([where(i) for i in range(3)], 1)
    assert [pid for _, pid, _, _ in results] == [PARENT] * 3


def failing(error):
    def task(report):
        raise error
    return task


def waits(seconds):
    """A first task (this process's) that takes a while, so that the workers take the others."""
    return slowly(lambda report: os.getpid(), seconds)


def test_a_task_s_error_is_raised_here_a_user_error_as_itself():
    with pytest.raises(DataError, match="^no such folder: x$"):
        run_tasks([waits(1), failing(DataError("no such folder: x"))], 2)
    with pytest.raises(ZeroDivisionError) as raised:
        run_tasks([waits(1), failing(ZeroDivisionError("a fault"))], 2)
    assert "in a worker process" in raised.value.__notes__[0]  # with the worker's traceback
    with pytest.raises(ZeroDivisionError) as raised:  # this process's own
        run_tasks([failing(ZeroDivisionError("here")), where(1)], 2)
    assert not getattr(raised.value, "__notes__", None)


def _not_here():
    if os.getpid() == PARENT:
        raise ValueError("cannot be rebuilt in this process")
    return "rebuilt"


class RebuiltOnlyInAWorker:
    def __reduce__(self):
        return _not_here, ()


def test_a_result_that_cannot_come_back_is_an_error_not_a_hang():
    """A worker's result whose unpickling fails here (so the thread reading the workers fails):
    raised here, where waiting for the thread would wait forever."""
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        run_tasks([waits(0.5), lambda report: RebuiltOnlyInAWorker()], 2)


def test_a_worker_s_error_stops_this_process_s_task_at_its_next_report():
    def long_first(report):
        for _ in range(300):  # 30 s unless stopped
            time.sleep(0.1)
            report("long", 0, None)
        return "finished"
    started = time.perf_counter()
    with pytest.raises(DataError, match="a worker's mistake"):
        run_tasks([long_first, failing(DataError("a worker's mistake"))], 2)
    assert time.perf_counter() - started < 10


def test_with_more_workers_than_threads_this_process_stays_on_one_while_others_work(two_threads):
    """--workers 3 with 2 threads: when one worker ends the other still works, so this process
    keeps one thread; two once both have ended."""
    seen, *_ = run_tasks([threads_until_two, where(1), slowly(where(2), 1.5)], 3)
    assert seen[-1] == 2 and seen.count(1) * 0.02 > 1.0  # one thread until the slow worker was done


def dies_in_a_worker(report):
    if os.getpid() != PARENT:
        os._exit(3)  # killed without a word (out of memory, say)
    return "made here"


def test_a_task_whose_worker_died_runs_here():
    here, made = run_tasks([waits(1), dies_in_a_worker], 2)
    assert here == PARENT and made == "made here"


def test_a_worker_stopped_mid_write_leaves_no_file_behind(tmp_path):
    """One task fails; the parent stops the other worker while it writes: its file is removed,
    as on any interruption (probe.io.atomic_writer), not left half-written."""
    from probe.io import atomic_writer

    def fails_soon(report):
        time.sleep(0.5)
        raise DataError("a missing folder")

    def writes_slowly(report):
        with atomic_writer(tmp_path / "figure.png") as f:
            f.write(b"half")
            time.sleep(60)
    started = time.perf_counter()
    with pytest.raises(DataError):
        run_tasks([fails_soon, writes_slowly], 2)
    assert time.perf_counter() - started < 30  # stopped, not waited for
    assert list(tmp_path.iterdir()) == []


def test_how_many_workers():
    with workers_limit(3):
        assert workers_and_why(5, "cpu") == (3, None)
        assert workers_and_why(2, "cpu") == (2, None)
        assert workers_and_why(1, "cpu") == (1, None)  # one task runs here
        assert workers_and_why(5, "cuda") == (1, "on cuda")  # CUDA does not survive a fork: the models take turns
    with workers_limit(1):
        assert workers_and_why(5, "cpu") == (1, "--workers 1")
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="--workers"):
            with workers_limit(bad):
                pass


def analyses_results(out):
    """Each per-model analysis's results.json, less what depends on the run's timing and threads."""
    found = {}
    for path in sorted([*(out / "analyses").glob("*/*/results.json"), *(out / "joint-analyses").glob("*/results.json")]):
        doc = json.loads(path.read_text())

        def strip(x):
            if isinstance(x, dict):
                return {k: strip(v) for k, v in x.items()
                        if k not in ("seconds", "created", "threads", "images_per_second")}
            return [strip(v) for v in x] if isinstance(x, list) else x
        found[str(path.relative_to(out))] = strip(doc)
    return found


def test_the_report_side_by_side_equals_one_after_another(tmp_path, mnist_dir):
    models = tmp_path / "trained_models"
    for seed, name in enumerate(("tiny-a", "tiny-b")):
        write_tiny_model(models / name, seed=seed)
        write_history(models / name)
    plan = small_plan(models)
    plan.steps = [s for s in plan.steps if s.analysis in ("misclassified", "fool-noise", "robustness")]
    for step in plan.steps:  # each model's attack in 3 chunks (8, 8 and 4 of its 20 images), spread over the processes
        if step.analysis == "robustness":
            step.settings = step.settings.replace(batch_size=8)
    pair = [models / "tiny-a", models / "tiny-b"]
    serial = run_report(pair, data_dir=mnist_dir, out=tmp_path / "serial", plan=plan, formats=("html",), workers=1)
    side = run_report(pair, data_dir=mnist_dir, out=tmp_path / "side", plan=plan, formats=("html",), workers=2)
    assert serial.result["reused"] == side.result["reused"] == 0
    # by the workers: 2 analyses of each model, and the joint robustness curve of both attacks
    assert side.result["side_by_side"]["made"] == 5 and serial.result["side_by_side"] is None
    assert "the per-model analyses ran side by side in 2 processes" in side.lines[1]
    assert "(the per-model analyses in one process: --workers 1)" in serial.lines[1]
    assert side.result["figures"] == serial.result["figures"]
    assert len(analyses_results(side.folder)) == 5  # 2 analyses × 2 models, and the joint one
    robustness = json.loads((side.folder / "joint-analyses" / "robustness" / "results.json").read_text())
    assert "processes beside the report's other analyses" in robustness["results"]["threads"]["why"]
    assert analyses_results(side.folder) == analyses_results(serial.folder)
    again = run_report(pair, data_dir=mnist_dir, out=tmp_path / "side", plan=plan, formats=("html",), workers=2)
    assert again.result["reused"] == 5
