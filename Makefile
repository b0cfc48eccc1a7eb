# Two set-up-and-go targets for a fresh machine: `make test` and `make demo`.
# Both create .venv on first use (pinned stack + this package with its compiled
# extension) and reuse it afterwards.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# The CPU process settings (glibc allocator, oneDNN's ISA cap) are defined once, in
# anyup_neck/runtime.py, and applied by the processes themselves (tests/conftest.py, the
# benchmark's workers, the tools the tests start), so `make test` and a plain `pytest` run alike.

.PHONY: venv test demo build clean

venv: $(STAMP)

$(STAMP): requirements/pinned.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade-strategy only-if-needed -r requirements/pinned.txt
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $(STAMP)

# Rebuild the C++/CUDA extension in place after editing anyup_neck/ops/csrc.
build: $(STAMP)
	$(PY) setup.py build_ext --inplace

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/demo.py

clean:
	rm -rf $(VENV) build *.egg-info anyup_neck/ops/_C*.so work_dirs
