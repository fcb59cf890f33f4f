# cmcl: install into ./.venv, then run the demo or the tests.
# torch is installed first, pinned to the local CPU build, so that nothing pulls a CUDA build.
# The cellpose extra (cellpose 3.1, CPU, local weights only) is installed too, so its tests run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cmcl-installed

.PHONY: install demo demo-quick test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,cellpose]"
	touch $(STAMP)

demo: install
	$(BIN)/cmcl demo

demo-quick: install
	$(BIN)/cmcl demo --quick

# Exit 5 (no test collected) is reported, never taken for a pass: a suite must exist.
test: install
	$(BIN)/python -m pytest -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is missing" >&2; exit 1; fi; exit $$rc

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) cmcl-store .pytest_cache
