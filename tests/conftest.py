import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/fixtures.py

from fixtures import write_cifar_archive, write_cifar_folder, write_mnist, write_sfddd  # noqa: E402

import probe.parallel  # noqa: E402

REAL_DATA = os.environ.get("PROBE_DATA_DIR")  # read before any test changes the environment

# Where cores are free a report runs its per-model analyses in worker processes (probe.parallel),
# and what they draw or count (the figure checks, a monkeypatched counter) stays in those
# processes. Tests run them here, one after another, unless a test asks for workers
# (tests/test_parallel.py).
probe.parallel.DEFAULT_WORKERS = 1


@pytest.fixture(autouse=True)
def _user_cache(tmp_path_factory, monkeypatch):
    # The SFDDD loader falls back to the user's cache when a data folder is read-only: never ~ in tests.
    monkeypatch.setenv("PROBE_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    folder = Path(REAL_DATA or "data") / "mnist"
    if not any(folder.glob("train-images*")):
        pytest.skip(f"real MNIST not in {folder} (set PROBE_DATA_DIR)")
    return folder


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def cifar_archive_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cifar-tar")
    write_cifar_archive(folder)
    return folder


@pytest.fixture(scope="session")
def cifar_folder_dir(tmp_path_factory) -> Path:
    return write_cifar_folder(tmp_path_factory.mktemp("cifar-dir"))


@pytest.fixture(scope="session")
def sfddd_master(tmp_path_factory) -> Path:
    return write_sfddd(tmp_path_factory.mktemp("sfddd-master"))


@pytest.fixture
def sfddd_dir(sfddd_master, tmp_path) -> Path:
    """A private copy without the master's cache: tests add files, break files and fill caches."""
    return Path(shutil.copytree(sfddd_master, tmp_path / "sfddd",
                                ignore=shutil.ignore_patterns(".probe-cache")))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one thread: they gain nothing from a second, and on shared, busy cores two
    OpenMP threads wait on each other and small kernels take milliseconds instead of microseconds."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The longest modules first (seconds of a `make test` run on a 2-core machine): pytest-xdist's
# loadscope hands each worker a whole module at a time in collection order (the Makefile turns off
# its reordering by test count), so the long ones start at once and the many short ones fill in
# at the end, and the workers finish together instead of one waiting for a report test module
# that started last.
SLOW_FIRST = ["test_report.py", "test_saliency.py", "test_foreign_models.py", "test_fuzz.py", "test_attacks.py",
              "test_fooling.py", "test_hostile_files.py", "test_cli.py", "test_misclassified.py",
              "test_distributed.py", "test_windowed.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


if os.environ.get("PYTEST_XDIST_WORKER"):
    # One process per core: each worker and the processes its tests start use one thread.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)


# ---- a tiny model that has learnt the stamp digits (tests/stamp_model.py): attacks and fooling --
@pytest.fixture(scope="session")
def stamp_trained(tmp_path_factory) -> tuple[Path, Path]:
    """(model folder, data folder)."""
    from stamp_model import stamp_model
    return stamp_model(tmp_path_factory.getbasetemp() / "stamp-model")


@pytest.fixture(scope="session")
def stamp_net_and_data(stamp_trained):
    """(network, test images, test labels)."""
    from probe.data.mnist import load_mnist
    from probe.models.folder import load_model
    model_dir, data_dir = stamp_trained
    net, _ = load_model(model_dir, "cpu")
    test = load_mnist(data_dir)["test"]
    return net, test.images, test.labels


@pytest.fixture
def stamp_project(stamp_trained, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A working folder holding trained_models/tiny, as a user's project would; (folder, data)."""
    model_dir, data_dir = stamp_trained
    shutil.copytree(model_dir, tmp_path / "trained_models" / "tiny")
    monkeypatch.chdir(tmp_path)
    return tmp_path, data_dir


# Every figure a test draws is looked at for text run into text (titles, tick labels, legends,
# colour-bar numbers): found this way, a side-by-side saliency figure, a 40-class confusion matrix
# and a 3-class per-class figure. What a test draws in its own body is checked after it; a test
# that overlaps texts on purpose says so with @pytest.mark.overlapping_text.
def pytest_configure(config):
    config.addinivalue_line("markers", "overlapping_text: the test draws texts over each other on purpose")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    from figure_checks import overlaps_in_saved_figures
    if item.get_closest_marker("overlapping_text"):
        return (yield)
    with overlaps_in_saved_figures() as found:
        result = yield
    if found:
        raise AssertionError("texts drawn over each other: " + "; ".join(f"{title!r}: {pairs}" for title, pairs in found))
    return result
