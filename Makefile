# reg2rg-kit: `make reproduce` runs the main job, `make test` the test suite. Both set everything up first.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PROFILE  ?= demo
OUT      ?= outputs/$(PROFILE)
FIGURES  ?= figures
comma    := ,
DATA     ?=
LLM      ?=
STAMP    := $(VENV)/.setup-done
EXTRAS   := dev,io,bertscore
# `make lock` resolves with uv (pinned) from a tools venv of its own, against PyPI alone
LOCKTOOLS ?= .venv-lock
UV_PIN   := uv==0.13.8
PYPI     := https://pypi.org/simple
NB_ARGS  := $(if $(DATA),-p data_dir=$(DATA)) $(if $(LLM),-p llm_path=$(LLM))

.PHONY: setup reproduce test lint strip clean screenshot lock check-lock

setup: $(STAMP)  ## create ./.venv, install the kit with dev extras, register the kernel, fetch offline assets

$(STAMP): pyproject.toml Makefile constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	$(BIN)/python -m ipykernel install --sys-prefix --name reg2rg-kit --display-name "Python (reg2rg-kit)" >/dev/null
	$(BIN)/reg2rg assets fetch
	@touch $(STAMP)

reproduce: setup  ## every notebook in order with PROFILE (default demo) -> outputs/<profile>/, figures/
	$(BIN)/reg2rg run-notebooks --profile $(PROFILE) --out $(OUT) --figures $(FIGURES) $(NB_ARGS)

test: setup  ## the test suite (unit tests + a papermill smoke run of every notebook)
	$(BIN)/python -m pytest

lint: setup  ## ruff, plus: notebooks are committed without outputs and with one parameters cell; no prose drift
	$(BIN)/ruff check reg2rg_lib tests benchmarks
	$(BIN)/python -m reg2rg_lib.nbtools.hygiene notebooks
	$(BIN)/python -m reg2rg_lib.nbtools.prose

screenshot: setup  ## (dev) the executed 07_explore notebook's HTML export in headless Chromium -> OUT/explorer_screenshot.png
	$(BIN)/python -m reg2rg_lib.explore.export --notebook $(OUT)/notebooks/07_explore.ipynb --png $(OUT)/explorer_screenshot.png

strip: setup  ## remove outputs and execution counts from notebooks/ (run before committing)
	$(BIN)/python -m reg2rg_lib.nbtools.hygiene --strip notebooks

lock: setup $(LOCKTOOLS)/bin/uv  ## (dev) re-resolve requirements.lock from pyproject.toml on PyPI (UPGRADE=1: newest allowed), write constraints.txt and environment.yml from it
	$(LOCKTOOLS)/bin/uv pip compile --quiet --no-config --default-index $(PYPI) --universal --python-version 3.11 \
	  $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) --generate-hashes --custom-compile-command 'make lock' \
	  $(if $(UPGRADE),--upgrade) pyproject.toml -o requirements.lock
	$(BIN)/python -m reg2rg_lib.env.lockfile sync

$(LOCKTOOLS)/bin/uv:
	$(PYTHON) -m venv $(LOCKTOOLS)
	$(LOCKTOOLS)/bin/python -m pip install -q --disable-pip-version-check $(UV_PIN)

# pip with no config file and no PIP_* variables: no local wheel folder, extra index or global constraint
PIP_PYPI := PIP_CONFIG_FILE=/dev/null $(BIN)/python -m pip --isolated install -q --disable-pip-version-check --dry-run --ignore-installed --index-url $(PYPI)

check-lock: setup  ## (dev) the lock and `make setup`'s install resolve on PyPI alone, hashes checked (downloads the wheels; run before committing a lock)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(PIP_PYPI) --cache-dir "$$tmp" --require-hashes -r requirements.lock && \
	  $(PIP_PYPI) --cache-dir "$$tmp" -c constraints.txt '.[$(EXTRAS)]' && \
	  echo "check-lock: requirements.lock and make setup's install resolve on $(PYPI) alone"

clean:  ## remove outputs, caches and the virtual environment
	rm -rf outputs .pytest_cache .ruff_cache $(VENV) $(LOCKTOOLS) build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
