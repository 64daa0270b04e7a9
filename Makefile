# pycorosync: the two commands are `make demo` and `make test`; both bootstrap what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck pytest bench sim-long warm clean sysdeps

$(STAMP): pyproject.toml setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

warm: $(STAMP)
	$(VENV)/bin/pycorosync warm-cache

demo: warm
	$(VENV)/bin/pycorosync demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy cannot follow the folder-to-namespace mapping, so it reads a tree of links shaped like the installed package
typecheck: $(STAMP)
	rm -rf $(VENV)/typing && mkdir -p $(VENV)/typing/pycorosync
	for d in pycorosync/*.py engine ipc transports services monitoring; do ln -s $$PWD/$$d $(VENV)/typing/pycorosync/; done
	cd $(VENV)/typing && MYPYPATH=. ../bin/mypy --config-file $(CURDIR)/pyproject.toml -p pycorosync.engine -p pycorosync.ipc

# Without PYTEST_ARGS: the in-process suites (unit, sim, fuzz) on PYTEST_WORKERS xdist workers, then the suites
# that run whole nodes (cluster, netns) one test at a time, so their timing sees the machine to themselves.
# With PYTEST_ARGS: one plain pytest run of those arguments. Exit status 5 (no test collected) never passes.
PYTEST_WORKERS ?= 2
PARALLEL_SUITES := tests/unit tests/sim tests/fuzz
SERIAL_SUITES := tests/cluster tests/netns
pytest: warm
	@set -u; fail=0; \
	run() { $(VPY) -m pytest "$$@"; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: $$*" >&2; rc=1; fi; \
	  if [ $$rc -ne 0 ]; then fail=$$rc; fi; }; \
	if [ -n "$(PYTEST_ARGS)" ]; then run $(PYTEST_ARGS); \
	else run -n $(PYTEST_WORKERS) $(PARALLEL_SUITES); run $(SERIAL_SUITES); fi; \
	exit $$fail

# Prometheus and nftables for the monitoring and network-fault tests (as root with apt; otherwise they skip)
sysdeps:
	bash tools/sysdeps.sh

test: sysdeps lint typecheck pytest

bench: warm
	for b in bench/[!_]*.py; do echo "# $$b" >&2; $(VPY) $$b || exit 1; done

sim-long: warm
	$(VPY) -m tests.sim --seeds 20000 --json

clean:
	rm -rf $(VENV) build *.egg-info
