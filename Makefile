# The two commands that do everything on a fresh Debian 12 machine (as root): `make run` and `make test`.
# Every target is idempotent: a second run only checks what is already there.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-from-lock
DEB_PACKAGES := tshark tcpdump iproute2 gzip python3-venv
# the testbed (`mimir testbed`): the web tier first, so that WordPress's web-server dependency is nginx, not apache2
TESTBED_WEB := nginx-light php8.2-fpm
TESTBED_PACKAGES := nftables curl socat rsync mariadb-server mariadb-client galera-4 mariadb-backup redis-server \
	php8.2-cli php8.2-mysql php8.2-redis wordpress wordpress-theme-twentytwentythree dnsmasq-base
# the workflow on a scheduler (profiles/slurm): a single-node SLURM that the tests start and stop themselves
SCALE_PACKAGES := slurm-wlm munge
# `mimir live`'s tests replay captures onto a veth in a network namespace
LIVE_PACKAGES := tcpreplay

.PHONY: setup debian install-debian venv run test fuzz lint lock envs bench clean clean-results

setup: debian venv

debian:
	@$(MAKE) --no-print-directory install-debian PACKAGES="$(DEB_PACKAGES)"
	@$(MAKE) --no-print-directory install-debian PACKAGES="$(TESTBED_WEB)"
	@$(MAKE) --no-print-directory install-debian PACKAGES="$(TESTBED_PACKAGES)"
	@$(MAKE) --no-print-directory install-debian PACKAGES="$(SCALE_PACKAGES)"
	@$(MAKE) --no-print-directory install-debian PACKAGES="$(LIVE_PACKAGES)"

# Install what of PACKAGES is missing. Packages must not start their daemons on the host (the testbed starts its
# own, in network namespaces): a policy-rc.d says so for the time of the install, unless the machine has one.
install-debian:
	@missing=$$(for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    own_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1; fi; \
	    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	    status=$$?; if [ -n "$$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$status; \
	fi

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The main job: the whole workflow on the default config (config/config.yaml), then its HTML report.
run: setup
	$(BIN)/snakemake --cores all
	$(BIN)/snakemake --report results/report.html
	$(BIN)/python -m mimir.experiment results/tables/metrics.csv

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n auto

# The readers of untrusted files (captures, entity logs, legacy pickles, configs) under FUZZ_INPUTS hostile inputs
# each, in forked children on both cores: any exit 1, signal, hang over 20 s or peak over 1 GB fails it. The seed
# is printed (FUZZ_SEED=N re-makes a run); failing inputs are kept in tests/fuzz/failures/.
FUZZ_INPUTS ?= 10000
fuzz: setup
	$(BIN)/python -m tests.fuzz.run --inputs $(FUZZ_INPUTS) --reader all $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-resolve the pinned versions (needs the network), with every extra: the venv of `make setup` holds them all.
# Commit the result.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet '.[workflow,cluster,scale,live,provision,test]' 'setuptools>=75'
	.lock-venv/bin/pip freeze --all --exclude-editable | grep -vE '^(mimir|pip)( |==)' > requirements.lock
	rm -rf .lock-venv
	$(PYTHON) envs/from_lock.py

# The conda environment of the workflow's rules, from the lock file.
envs:
	$(PYTHON) envs/from_lock.py

bench: setup
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/synth.py
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .pytest_cache

# Everything the workflow made (runs, results, logs and its metadata); the venv stays.
clean-results:
	rm -rf data results logs .snakemake
