# Two commands set everything up on a fresh clone: `make report` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH  := torch==2.13.0

.PHONY: report test lint bench clean browser docs

# torch first, pinned: the CPU wheel on local disk, never a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

# warmup: compile the numba kernels into their disk cache first (about a minute once, then
# seconds), so no experiment or test waits on a compilation
report: $(VENV)/.installed
	$(VENV)/bin/densitylab warmup
	$(VENV)/bin/densitylab reproduce --out report/

# Debian's chromium renders the report in a test; skipped (with a note) where it cannot be installed.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "note: chromium could not be installed; the report's browser test will be skipped"

# two test workers on two cores, one thread each: more threads than cores only make small
# models wait for each other (README, "Threads"). Bytecode is cached even where the environment
# sets PYTHONDONTWRITEBYTECODE: otherwise every worker and every shell test's interpreter compiles
# the package and pytest rewrites the test modules again (the fast subset, `-m "not slow"`: 75 s
# uncached, 57-60 s once cached, on the 2-core development machine)
test: $(VENV)/.installed-dev browser
	$(VENV)/bin/densitylab warmup
	PYTHONDONTWRITEBYTECODE= OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks docs

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) -e ".[docs]"
	touch $@

# API reference + executed tutorials into site/, warnings are errors (mkdocs.yml: strict),
# and each tutorial as a plain notebook, site/tutorials/NAME.ipynb, for Jupyter or Colab.
# DENSITYLAB_DOCS_QUICK=1 runs the tutorials with small budgets.
docs: $(VENV)/.installed-docs
	OMP_NUM_THREADS=1 $(VENV)/bin/mkdocs build --strict
	for f in docs/tutorials/*.py; do \
	  $(VENV)/bin/jupytext --quiet --to ipynb -o site/tutorials/$$(basename $$f .py).ipynb $$f; \
	done

bench: $(VENV)/.installed
	$(PIP) -e ".[bench]"
	$(PY) benchmarks/bench_kde.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_kde.py
	$(PY) benchmarks/bench_flows.py
	$(PY) benchmarks/bench_maf.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/anomaly.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/real_data.py

clean:
	rm -rf $(VENV) report site .cache
