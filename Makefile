# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv/ at the project root when it is missing and install the
# pinned dependencies (requirements/pinned.txt) plus mmcc itself, editable.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmcc-installed

.PHONY: setup demo test

setup: $(STAMP)

$(STAMP): requirements/pinned.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/pinned.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# `mim train mmcc` looks for site-packages/mmcc/.mim/tools; an editable
	# (PEP 660) install has no such folder, so point it at the checkout.
	ln -sfn "$(CURDIR)/mmcc" "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mmcc"
	touch $(STAMP)

demo: $(STAMP)
	bash tools/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q tests
