# reg2rg-kit: `make reproduce` runs the main job, `make test` the test suite. Both set everything up first.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PROFILE  ?= demo
OUT      ?= outputs/$(PROFILE)
FIGURES  ?= figures
DATA     ?=
LLM      ?=
STAMP    := $(VENV)/.setup-done
NB_ARGS  := $(if $(DATA),-p data_dir=$(DATA)) $(if $(LLM),-p llm_path=$(LLM))

.PHONY: setup reproduce test lint strip clean screenshot lock

setup: $(STAMP)  ## create ./.venv, install the kit with dev extras, register the kernel, fetch offline assets

$(STAMP): pyproject.toml Makefile constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,io,bertscore]'
	$(BIN)/python -m ipykernel install --sys-prefix --name reg2rg-kit --display-name "Python (reg2rg-kit)" >/dev/null
	$(BIN)/reg2rg assets fetch
	@touch $(STAMP)

reproduce: setup  ## every notebook in order with PROFILE (default demo) -> outputs/<profile>/, figures/
	$(BIN)/reg2rg run-notebooks --profile $(PROFILE) --out $(OUT) --figures $(FIGURES) $(NB_ARGS)

test: setup  ## the test suite (unit tests + a papermill smoke run of every notebook)
	$(BIN)/python -m pytest

lint: setup  ## ruff, plus: notebooks are committed without outputs and with one parameters cell; no prose drift
	$(BIN)/ruff check reg2rg_lib tests
	$(BIN)/python -m reg2rg_lib.nbtools.hygiene notebooks
	$(BIN)/python -m reg2rg_lib.nbtools.prose

screenshot: setup  ## (dev) the executed 07_explore notebook's HTML export in headless Chromium -> OUT/explorer_screenshot.png
	$(BIN)/python -m reg2rg_lib.explore.export --notebook $(OUT)/notebooks/07_explore.ipynb --png $(OUT)/explorer_screenshot.png

strip: setup  ## remove outputs and execution counts from notebooks/ (run before committing)
	$(BIN)/python -m reg2rg_lib.nbtools.hygiene --strip notebooks

lock: setup  ## (dev) rewrite constraints.txt: the exact versions `make setup` installs (pyproject.toml keeps the ranges)
	@echo "# Exact versions \`make setup\` installs (pip -c). Written by \`make lock\`; pyproject.toml keeps the ranges." > constraints.txt.tmp
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check | sed -E 's/^([^=]+==[^+]+)\+.*$$/\1/' | LC_ALL=C sort >> constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:  ## remove outputs, caches and the virtual environment
	rm -rf outputs .pytest_cache .ruff_cache $(VENV) build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
