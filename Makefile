# The two commands a newcomer needs: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help demo test lint bench bench-api bench-sim bench-failover bench-false-failovers bench-dr bench-state-hash dr-sweep mutants mmc-coverage loadtest-day loadtest-failover loadtest-upgrade loadtest-stress fuzz clean system-deps

help:
	@echo "make demo            start a local cluster, drive traffic, fail over, show it working (DEMO_ARGS=--keep: leave it running)"
	@echo "make test            install what is needed into .venv and run the whole suite"
	@echo "make lint            ruff, and mypy on the acd and replication packages"
	@echo "make bench           routing-core benchmark (commands/s, cost per command at scale)"
	@echo "make bench-api       HTTP write throughput and latency against a bare Hypercorn endpoint"
	@echo "make bench-sim       simulator speed and the full Erlang C/A agreement sweep"
	@echo "make bench-failover  failover and rejoin times over 20 kills, 20 SIGSTOPs and 20 isolations of the primary (N=5: fewer)"
	@echo "make bench-false-failovers  failovers per hour of a healthy cluster, cores saturated, an fsync writer beside"
	@echo "make bench-state-hash  what the divergence alarm's state hash costs (in the process, forked)"
	@echo "make dr-sweep        every disaster-recovery scenario over 100 seeds, swarm over 1,000"
	@echo "make mmc-coverage    sim mmc's 95 % interval over a long grid of Erlang C and A points, 20 seeds each (several minutes)"
	@echo "make mutants         plant each catalogued replication bug in a scratch copy; the simulator must catch every one"
	@echo "make loadtest-day|loadtest-failover|loadtest-stress   Locust against a real cluster"
	@echo "make loadtest-upgrade   the day with a rolling upgrade of the core version at its morning peak"

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian packages some tests need (installed only when missing; needs root or sudo).
system-deps:
	@bash scripts/system-deps.sh

# The demo needs only the runtime packages (no test, lint or load-test tools), at the pinned
# versions. `make demo DEMO_ARGS=--keep` leaves the cluster running until Ctrl-C.
DEMO_STAMP := $(VENV)/.installed-demo
DEMO_ARGS ?=

$(DEMO_STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/acd demo $(DEMO_ARGS)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check acd replication sim loadtest tests
	$(BIN)/mypy -p acd -p replication

bench: $(STAMP)
	$(BIN)/python -m bench.core

bench-api: $(STAMP)
	$(BIN)/python -m bench.api

bench-sim: $(STAMP)
	$(BIN)/python -m bench.sim

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# N faults of each kind (kill -9, SIGSTOP, isolation of the primary): make bench-failover N=5
bench-failover: $(STAMP)
	$(BIN)/python -m bench.failover $(or $(N),20)

# A healthy cluster under stress (every core saturated, an fsync writer beside): failovers per hour.
# make bench-false-failovers SOAK_SECONDS=3600 TIMEOUTS=0.5,0.8,1.5
bench-false-failovers: $(STAMP)
	$(BIN)/python -m bench.false_failovers --seconds $(or $(SOAK_SECONDS),600) $(if $(TIMEOUTS),--failover-timeout $(TIMEOUTS))

# Locust load tests of a real two-node cluster (loadtest/; see `python -m loadtest run --help`).
loadtest-day: $(STAMP)
	$(BIN)/python -m loadtest run day --minutes 10

loadtest-failover: $(STAMP)
	$(BIN)/python -m loadtest run day --minutes 10 --failover-at 300

loadtest-stress: $(STAMP)
	$(BIN)/python -m loadtest run stress

# The day with a rolling upgrade to the test-only next core version (loadtest/upgrade.py).
loadtest-upgrade: $(STAMP)
	$(BIN)/python -m loadtest run day --minutes 10 --upgrade-at 150

# Every named disaster-recovery scenario over 100 seeds, and swarm over 1,000 (long).
dr-sweep: $(STAMP)
	$(BIN)/python -m sim dr --scenario all --seeds 1..100 --jobs 2
	$(BIN)/python -m sim dr --scenario swarm --seeds 1..1000 --jobs 2

bench-dr: $(STAMP)
	$(BIN)/python -m bench.dr

bench-state-hash: $(STAMP)
	$(BIN)/python -m bench.state_hash

# The long version of tests/test_mmc_coverage.py: default run lengths, the README's point among them.
mmc-coverage: $(STAMP)
	ACD_MMC_COVERAGE=long $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/test_mmc_coverage.py

# sim/dr/mutants.py: one planted bug at a time, in a scratch copy of the source (never this tree).
mutants: $(STAMP)
	$(BIN)/python -m sim.dr.mutants --jobs 2

# Schemathesis at length, every phase (stateful included), against a two-node cluster with tokens
# and a standalone node without; extreme values in every command over HTTP against a cluster
# (the short runs are part of `make test`).
fuzz: $(STAMP)
	ACD_FUZZ_EXAMPLES=$${ACD_FUZZ_EXAMPLES:-500} ACD_EXTREME_EXAMPLES=$${ACD_EXTREME_EXAMPLES:-2000} $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/test_schemathesis.py tests/test_http_extremes.py
