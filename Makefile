# The two commands of the README: `make run` (set up, then train the default experiment) and `make test`.
# Both create .venv on first use; pass overrides to run with ARGS, e.g. make run ARGS="network=blstm_framewise".
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch==2.13.0 is the CPU wheel on our dev machines; elsewhere pip picks the platform's build of a release >= 2.2.
TORCH ?= torch==2.13.0

.PHONY: setup run test lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q "$(TORCH)" || $(PIP) install -q "torch>=2.2"
	$(PIP) install -q -e ".[dev]"
	$(PY) -m seqtrain.ops build || echo "native kernels not built: seqtrain uses the pure-PyTorch reference"
	touch $@

run: setup
	$(PY) -m seqtrain $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q $(ARGS)

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
