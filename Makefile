# Two commands set everything up on a fresh clone: `make report` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH  := torch==2.13.0

.PHONY: report test lint bench clean

# torch first, pinned: the CPU wheel on local disk, never a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

report: $(VENV)/.installed
	$(VENV)/bin/densitylab reproduce --out report/

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q -n 2

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.installed
	$(PIP) -e ".[bench]"
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) report
