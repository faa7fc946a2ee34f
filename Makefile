# mmcrossformer: `make test` and `make demo` set everything up on first use.
# Bring your own environment with `make test PYTHON=/path/to/python`.
PYTHON ?=
PY := $(if $(PYTHON),$(PYTHON),$(CURDIR)/.venv/bin/python)
PYTEST_ARGS ?=
DEMO_ITERS ?=
# What `make lint` checks (settings in setup.cfg).
LINT_PATHS := mmcrossformer tools tests setup.py

.PHONY: setup test demo lint clean-venv

setup:
	@PYTHON="$(PYTHON)" bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo/run_demo.py $(if $(DEMO_ITERS),--iters $(DEMO_ITERS),)

lint: setup
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only --diff $(LINT_PATHS)

clean-venv:
	rm -rf .venv
