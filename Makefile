# Two commands do all set-up on a fresh machine:
#   make run    set up, then run the default experiment on the embedded brokers
#   make test   set up, then run the whole test suite (.ci/run calls this); scripts/test.sh starts the
#               private Docker engine when none answers and stops it at the end
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: setup run test bench clean

setup:
	@bash scripts/setup.sh

run: setup
	@set -e; dir=results/make-run-$$(date +%Y%m%d-%H%M%S); \
	$(PY) -m testbed.run --broker inproc --duration 10 --out $$dir/inproc; \
	$(PY) -m testbed.run --broker zeromq --duration 10 --out $$dir/zeromq; \
	$(PY) -m testbed.compare $$dir --out $$dir/compare

test: setup
	@bash scripts/test.sh

bench: setup
	$(PY) benchmarks/embedded.py --write docs/core-benchmark.md

clean:
	rm -rf $(VENV) .pytest_cache
