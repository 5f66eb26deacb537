# Everything a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPEC   ?= examples/quickstart.yaml

.PHONY: run test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-install only when the packaging changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# torchattacks, the tests' reference implementation of the attacks, pins requests ~=2.25, which it
# never imports and which would pull the HTTP stack back by years: installed without dependencies
# (the ones it imports, torch, torchvision, numpy and scipy, are installed already).
TORCHATTACKS := torchattacks==3.5.1

$(VENV)/.installed-dev: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps '$(TORCHATTACKS)'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# A fresh run directory each time, so `make run` always runs the whole pipeline.
run: install
	$(BIN)/bionas run $(SPEC) --out runs/quickstart-$$(date +%Y%m%d-%H%M%S)

test: install-dev
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info runs
