# mmcrossformer: `make test` and `make demo` set everything up on first use.
# Bring your own environment with `make test PYTHON=/path/to/python`.
PYTHON ?=
PY := $(if $(PYTHON),$(PYTHON),$(CURDIR)/.venv/bin/python)
PYTEST_ARGS ?=
DEMO_ITERS ?=

.PHONY: setup test demo clean-venv

setup:
	@PYTHON="$(PYTHON)" bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo/run_demo.py $(if $(DEMO_ITERS),--iters $(DEMO_ITERS),)

clean-venv:
	rm -rf .venv
