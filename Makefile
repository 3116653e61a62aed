# provisioner: the two commands the README starts with.
#   sudo make demo   set up, build/reuse the mirror, bring up the lab, create and validate a cluster
#   sudo make test   set up and run every test (lint, unit, lab, end-to-end)
SHELL := /bin/bash
# Go's own installer puts it in /usr/local/go/bin, which a login PATH (sudo, env -i, CI) lacks.
export PATH := $(PATH):/usr/local/go/bin
VENV ?= .venv
PY := $(VENV)/bin/python
PROV := $(VENV)/bin/provisioner
LAB ?= lab
NODES ?= 3
CONTROL_PLANES ?= 1

.PHONY: setup host-packages demo demo-down test lint unit lab-test e2e bench

host-packages:
	@bash .ci/host-packages

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

setup: host-packages $(VENV)/.installed

demo: setup
	$(PROV) mirror build
	$(PROV) lab up --name $(LAB) --nodes $(NODES) --control-planes $(CONTROL_PLANES)
	$(PROV) cluster create -f clusters/$(LAB)/cluster.yaml
	$(PROV) cluster validate -f clusters/$(LAB)/cluster.yaml
	@echo
	@echo "The cluster is up. Try:"
	@echo "  $$(ls -d /var/cache/provisioner/mirror/kubernetes/*/linux/amd64/kubectl | tail -n 1) \\"
	@echo "    --kubeconfig clusters/$(LAB)/admin.kubeconfig get nodes -o wide"
	@echo "Tear it down with: sudo make demo-down"

demo-down: setup
	$(PROV) lab down --name $(LAB)

lint: setup
	$(VENV)/bin/ruff check provisioner tests bench
	$(VENV)/bin/ruff format --check provisioner tests bench
	$(VENV)/bin/ansible-lint -q provisioner/playbooks/*.yml provisioner/playbooks/roles bench/floor/floor.yml  # a directory alone lints nothing

unit: setup
	$(VENV)/bin/pytest -q tests/unit

lab-test: setup
	$(VENV)/bin/pytest -q tests/lab

e2e: setup
	$(PROV) mirror build
	$(VENV)/bin/pytest -q -n 2 tests/e2e

# The mirror build (Go, CPU-bound) runs beside lint and the unit and lab tests, which need
# no mirror and wait on I/O much of the time (debootstrap, subprocesses); the end-to-end
# tests start once both are done. Its log: build/mirror-build.log (shown when it ends).
# The e2e tests run in two pytest-xdist workers, one lab cluster's tests per worker at a time
# (tests/e2e/conftest.py: pytest_xdist_make_scheduler).
test: setup
	@mkdir -p build; \
	$(PROV) mirror build > build/mirror-build.log 2>&1 & mirror=$$!; \
	$(MAKE) --no-print-directory lint && $(VENV)/bin/pytest -q --durations=8 tests/unit tests/lab; early=$$?; \
	echo "waiting for the mirror build (build/mirror-build.log) ..."; \
	if ! wait $$mirror; then cat build/mirror-build.log; echo "error: the mirror build failed"; exit 1; fi; \
	tail -n 20 build/mirror-build.log; \
	if [ $$early -ne 0 ]; then exit $$early; fi; \
	$(VENV)/bin/pytest -q -n 2 --durations=12 tests/e2e

bench: setup
	$(PY) bench/plan.py
	$(PY) bench/lab.py
