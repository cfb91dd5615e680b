# Two entry points for a fresh machine: `make demo` and `make test` (style
# checks, then the test suite).
# Both create .venv/ at the project root when it is missing and install the
# pinned dependencies (requirements/pinned.txt) plus mmcc itself, editable.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmcc-installed

.PHONY: setup demo lint test

setup: $(STAMP)

$(STAMP): requirements/pinned.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/pinned.txt
	# A development install (an egg-link to the checkout, which setup.py's
	# `develop` gives mmcc/.mim links to the tools and configs): mim looks
	# for them under the distribution's location, which for a PEP 660
	# editable install is site-packages, where mmcc has no folder.
	$(PY) -m pip install -q --no-deps --no-build-isolation --no-use-pep517 -e .
	touch $(STAMP)

demo: $(STAMP)
	bash tools/demo.sh

# style first (flake8, isort, yapf: .pre-commit-config.yaml), then the tests
lint: $(STAMP)
	$(VENV)/bin/pre-commit run --all-files

test: lint
	$(PY) -m pytest -q tests
