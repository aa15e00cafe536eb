# shipledger developer entry points. Every target installs what it needs first: `setup` is
# idempotent and cheap once done (stamp files), so a fresh clone needs only `make test`.
#
#   make setup      .venv (requirements-dev.lock + the package, editable) and node_modules (npm ci)
#   make build      compile contracts/*.sol into shipledger/artifacts/*.json
#   make test       the test suite (installs the Debian packages its end-to-end tests drive)
#   make engine     the consortium engine (geth v1.13.15, Clique) built once from tools/geth into .cache
#   make gas        gas report (scripts/gas.py)
#   make invariants the long forge invariant campaign (test/forge; `make test` runs a short one)
#   make model      a long campaign of the Hypothesis model of suite v2 (tests/contracts/test_model.py)
#   make lint       Slither over contracts/ with the build settings; fails on untriaged findings
#   make demo       the demo story (scripts/demo.py) on a devnet at PORT (default 8545); NETWORK=consortium
#                   plays it on the 4-validator geth Clique network instead (builds the engine first)
#   make ape-setup  optional Ape toolchain in .venv-ape (requirements-ape.lock); then use tools/ape
#   make clean      remove caches and build outputs (not the venvs: `make distclean` does that)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
PORT ?= 8545
NETWORK ?= anvil
VENV := .venv
APE_VENV := .venv-ape
NPM_STAMP := node_modules/.shipledger-npm-ci

.PHONY: setup system-deps engine build test gas invariants model lint demo ape-setup clean distclean

setup: $(VENV)/.installed $(VENV)/.bytecode $(NPM_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# editable_mode=compat: a plain .pth path entry instead of setuptools' import finder, whose imports
# (re, pathlib, importlib.util) every Python start in the venv pays; the gate counts milliseconds.
$(VENV)/.installed: requirements-dev.lock pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -r requirements-dev.lock
	$(VENV)/bin/pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	touch $@

# Where PYTHONDONTWRITEBYTECODE is set (these machines set it), Python never caches the editable tree's
# bytecode and every `shipledger gate` compiles its modules again (147 ms median against 111 ms, at load 2). It still
# reads .pyc files it did not write, so compile them here, again whenever a source is newer.
$(VENV)/.bytecode: $(shell find shipledger -name '*.py') | $(VENV)/.installed
	$(VENV)/bin/python -m compileall -q shipledger
	touch $@

# npm ci wipes node_modules, so run it only when node_modules is missing or older than the lock
# (npm writes node_modules/.package-lock.json on every install).
$(NPM_STAMP): package-lock.json
	if [[ ! -f node_modules/.package-lock.json || node_modules/.package-lock.json -ot package-lock.json ]]; then \
		npm ci --no-audit --no-fund; \
	fi
	touch $@

# Debian packages the end-to-end tests drive: headless Chromium renders `shipledger report`, and a
# real Prometheus feeds the rollout controller. Installed only when missing and only where apt can
# run; elsewhere the tests that need them skip and say why.
SYSTEM_PACKAGES := chromium prometheus docker-registry skopeo umoci
system-deps:
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do command -v $$pkg >/dev/null || missing="$$missing $$pkg"; done; \
	if [[ -n "$$missing" && $$(id -u) == 0 ]] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
			|| echo "warning: could not install$$missing; the tests that need them will skip"; \
	fi

build: setup
	$(VENV)/bin/python scripts/build.py

# The consortium engine: go-ethereum's cmd/geth at the version tools/geth/go.mod pins (go.sum pins the
# rest), built once into a git-ignored cache; the path carries the version, so a pin change rebuilds.
# -checklinkname=0 because fjl/memsize links runtime internals that Go 1.23+ refuses otherwise.
ENGINE_VERSION := v1.13.15
ENGINE := .cache/engine/geth-$(ENGINE_VERSION)/geth
engine:
	@if [[ ! -x $(ENGINE) ]]; then \
		echo "building the consortium engine (geth $(ENGINE_VERSION)); a cold build takes ~5 min on 2 cores" >&2; \
		mkdir -p $(dir $(ENGINE)) && cd tools/geth && CGO_ENABLED=1 go build -trimpath -ldflags=-checklinkname=0 \
			-o ../../$(ENGINE).tmp github.com/ethereum/go-ethereum/cmd/geth && mv ../../$(ENGINE).tmp ../../$(ENGINE); \
	fi
	@echo $(abspath $(ENGINE))

# Two workers, each taking whole test files (--dist loadfile: a file's fixtures, its devnet or its
# consortium network, stay in one process). Most tests wait on a node or a browser, so two workers on 2
# cores took the suite from 39 min 53 s to 20 min 26 s on a clean clone (2026-12-02).
test: setup system-deps engine
	$(VENV)/bin/pytest -n 2 --dist loadfile

gas: setup
	$(VENV)/bin/python scripts/gas.py

# Runs and depth per invariant; each invariant_* is its own campaign. 256 x 100 takes ~8 min on 2 cores.
INVARIANT_RUNS ?= 256
INVARIANT_DEPTH ?= 100
invariants: setup
	$(VENV)/bin/python scripts/forge_invariants.py --runs $(INVARIANT_RUNS) --depth $(INVARIANT_DEPTH) --random-seed

# Examples and steps of the Hypothesis model's campaign (random seed); `make test` runs 15 x 25, derandomized.
MODEL_EXAMPLES ?= 300
MODEL_STEPS ?= 50
model: setup
	SHIPLEDGER_MODEL_EXAMPLES=$(MODEL_EXAMPLES) SHIPLEDGER_MODEL_STEPS=$(MODEL_STEPS) \
		$(VENV)/bin/pytest -q -s -p no:cacheprovider tests/contracts/test_model.py

lint: setup
	$(VENV)/bin/python scripts/slither_check.py

# NETWORK=anvil (the devnet) or consortium (`network up`: needs the engine); demo.py refuses other names.
demo: setup $(if $(filter consortium,$(NETWORK)),engine)
	$(VENV)/bin/python scripts/demo.py --network $(NETWORK) --port $(PORT)

ape-setup: setup $(APE_VENV)/.installed

$(APE_VENV)/bin/python:
	$(PYTHON) -m venv $(APE_VENV)

$(APE_VENV)/.installed: requirements-ape.lock | $(APE_VENV)/bin/python
	$(APE_VENV)/bin/pip install --quiet -r requirements-ape.lock
	touch $@

clean:
	rm -rf .build .cache contracts/.cache .pytest_cache bench/out out cache
	find . -name __pycache__ -type d -not -path './node_modules/*' -not -path './.venv*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(APE_VENV) node_modules
