# The two commands of the contract: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build (local wheel on our machines). A user with a GPU either has torch in the venv
# already (kept as is) or runs `make TORCH_SPEC=torch ...`.
TORCH_SPEC ?= torch==2.13.0
# Our machines keep the data beside the project; elsewhere ./data (filled by `probe data fetch`).
export PROBE_DATA_DIR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),$(abspath data))

.PHONY: setup test demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# One pytest worker per core (at most 4), each a module at a time so a module's fixtures are made once.
test: setup
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadscope

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
