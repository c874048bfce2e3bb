# Two commands for a new user: `make reproduce` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
# CPU build of torch where the package index offers it; a GPU user sets TORCH_SPEC=torch
# (or a CUDA-specific pin) on the command line. If the pinned build is not offered, the
# fallback takes whatever torch the index serves.
TORCH_SPEC ?= torch==2.13.0+cpu
TORCH_FALLBACK ?= torch>=2.2
EXTRAS ?= test
CORES ?= all
comma := ,
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst $(comma),_,$(EXTRAS))

.PHONY: venv reproduce test lint bench clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" || $(BIN)/pip install --quiet "$(TORCH_FALLBACK)"
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

venv: $(STAMP)

# Rules call `python -m ntk_repro...`: put the venv first on PATH so that is our python.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

# The claims gate comes last: the summary of results/checks.csv is the run's last output,
# and `make reproduce` fails when any evaluated claim fails (after every figure is drawn).
reproduce: $(STAMP)
	@$(RUN) snakemake --cores $(CORES); status=$$?; \
	$(RUN) snakemake --report results/report.html > /dev/null 2>&1 || status=1; \
	echo; echo "== claims (results/checks.csv)"; \
	$(RUN) python -m ntk_repro.claims gate results/checks.csv || status=1; \
	exit $$status

test: $(STAMP)
	$(RUN) python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) snakefmt --check Snakefile workflow
	$(RUN) snakemake --lint

bench: $(STAMP)
	$(RUN) python -m benchmarks --out results/bench

clean-results:
	rm -rf results .snakemake
