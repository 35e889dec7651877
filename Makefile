# The two commands of the contract: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build (local wheel on our machines). A user with a GPU either has torch in the venv
# already (kept as is) or runs `make TORCH_SPEC=torch ...`.
TORCH_SPEC ?= torch==2.13.0
export PROBE_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: setup test demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/probe data check --dataset mnist
	$(VENV)/bin/probe models zoo
	$(VENV)/bin/probe evaluate --model trained_models/mnist-resnet20 --split test

clean:
	rm -rf $(VENV) .pytest_cache
