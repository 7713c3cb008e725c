# The two commands of the README: `make demo` and `make test`. Each installs what it
# needs: a virtualenv in .venv, Debian's prometheus package, and (once, cached in
# ~/.cache/rollwise) kube-apiserver and etcd built from the upstream Go modules.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test files run on this many workers (pytest-xdist, --dist loadfile: a module's world is
# shared by its tests); the suite mostly waits on real servers.
PYTEST_WORKERS ?= 3

.PHONY: all demo test lint unit e2e chaos venv kfp-env system-deps control-plane schema bench clean

all: test

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

# The Kubeflow Pipelines SDK cannot share .venv (it pins kubernetes<31 and its own
# protobuf), so the test that compiles the hand-off component into a pipeline runs it in
# its own environment, named to the tests by KFP_PYTHON.
KFP_VENV := .venv-kfp
KFP_STAMP := $(KFP_VENV)/.installed
$(KFP_STAMP): constraints-kfp.txt
	@test -x $(KFP_VENV)/bin/python || $(PYTHON) -m venv $(KFP_VENV)
	$(KFP_VENV)/bin/python -m pip install -q -c constraints-kfp.txt kfp
	@touch $@

kfp-env: $(KFP_STAMP)

# Debian packages the tests start on loopback: prometheus (metrics) and mariadb-server
# (the MySQL backend of ML Metadata). Installed when missing and we are root, else we say
# what to install.
SYSTEM_PACKAGES := prometheus:/usr/bin/prometheus mariadb-server:/usr/sbin/mariadbd
system-deps:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
	  [ -x "$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing (apt-get)..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "Missing Debian packages:$$missing. Run 'sudo apt-get install$$missing' and try again." >&2; \
	    exit 1; \
	  fi; \
	fi

# kube-apiserver, etcd and kubectl, built once from upstream and cached outside the checkout.
control-plane: $(STAMP)
	$(BIN)/python -m simulations.kube.build

lint: $(STAMP)
	$(BIN)/ruff check controller simulations tests
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP) $(KFP_STAMP)
	KFP_PYTHON=$(KFP_VENV)/bin/python $(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

e2e: $(STAMP) system-deps control-plane
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

# The chaos suite at full size (`make test` runs a short variant): kill -9 over 20 rollouts;
# 3 replicas over 12 rollouts with 8 leader kills, 4 freezes and 3 API-server restarts.
chaos: $(STAMP) system-deps control-plane
	ROLLWISE_CHAOS_ROLLOUTS=20 ROLLWISE_CHAOS_KILLS=20 \
	ROLLWISE_REPLICAS_ROLLOUTS=12 ROLLWISE_REPLICAS_KILLS=8 ROLLWISE_REPLICAS_FREEZES=4 \
	ROLLWISE_REPLICAS_API_RESTARTS=3 $(BIN)/pytest -m chaos $(PYTEST_ARGS)

test: $(STAMP) $(KFP_STAMP) system-deps control-plane lint
	KFP_PYTHON=$(KFP_VENV)/bin/python $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

# The statistical benchmark behind the numbers in simulations/results/ (minutes on 2 cores).
bench: $(STAMP)
	$(BIN)/rollwise simulate --out simulations/results

schema: $(STAMP)
	$(BIN)/rollwise policy schema > policies/rolloutpolicy.schema.json

demo: $(STAMP) system-deps control-plane
	$(BIN)/rollwise policy validate policies
	$(BIN)/rollwise sim demo

clean:
	rm -rf $(VENV) $(KFP_VENV) .mypy_cache .ruff_cache .pytest_cache
