# The two commands of the contract: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build (local wheel on our machines). A user with a GPU either has torch in the venv
# already (kept as is) or runs `make TORCH_SPEC=torch ...`.
TORCH_SPEC ?= torch==2.13.0
# Our machines keep the data beside the project; elsewhere ./data (filled by `probe data fetch`).
export PROBE_DATA_DIR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),$(abspath data))

.PHONY: setup test test-env demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# What a test run adds to the environment (benchmarks/suite_time.py times the suite with it too):
# - Python's bytecode cache: with PYTHONDONTWRITEBYTECODE=1 (set on our machines) every pytest
#   worker and every process the tests start compiled probe and the test modules again, and the
#   `python -O` child all of torch: ~3 s of CPU each. The caches are ignored by git.
# - temporary files in RAM where /dev/shm has room: each of the tests' ~1,100 atomic writes syncs
#   the file and its folder, ~3 ms a sync on our disks. A TMPDIR of your own is kept.
TEST_TMPDIR = $(or $(TMPDIR),$(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 2097152 {print "/dev/shm"}'))
TEST_ENV = PYTHONDONTWRITEBYTECODE= $(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR))

# One pytest worker per core (at most 4), each a module at a time so a module's fixtures are made once,
# the modules in the order tests/conftest.py gives them (the longest first: the workers end together).
test: setup
	$(TEST_ENV) $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadscope --no-loadscope-reorder

test-env:
	@echo $(TEST_ENV)

# The main job: the report of the committed MNIST models (ResNet-20, its plain twin, and the
# adversarially trained ResNet-20), compared, from the MNIST test set.
demo: setup
	@ls "$(PROBE_DATA_DIR)"/mnist/t10k-images-idx3-ubyte* >/dev/null 2>&1 || \
		$(VENV)/bin/probe data fetch mnist --data-dir "$(PROBE_DATA_DIR)/mnist"
	$(VENV)/bin/probe report --model trained_models/mnist-resnet20 --model trained_models/mnist-plain20 \
		--model trained_models/mnist-resnet20-robust \
		--data-dir "$(PROBE_DATA_DIR)/mnist" --out reports/mnist-resnet20-vs-plain20-vs-robust

clean:
	rm -rf $(VENV) .pytest_cache
