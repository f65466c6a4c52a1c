# MSSanté operator appliance. `make test` and `make lab` work on a fresh Debian 12 machine:
# they install the system packages and the Python environment they need (idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
# The host runtime: Debian's own python3 and python3-* packages (docs/runtime.md).
HOSTPY    := /usr/bin/python3
PYTEST_ARGS ?=
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help deps system-packages venv lint test test-dev test-host lab lab-down bench clean

help:
	@echo "make test      install what is needed, lint, run every test (dev venv and host runtime)"
	@echo "make lab       build the built-in lab and show the trust space at work"
	@echo "make lab-down  stop and remove the lab"
	@echo "make bench     benchmarks (writes docs/benchmarks.md)"
	@echo "make lint      ruff, mypy --strict, yamllint, ansible-lint"

system-packages:
	@./scripts/install-system-packages.sh

$(VENV)/.installed: requirements.txt milters/pyproject.toml scripts/make-venv.sh
	./scripts/make-venv.sh $(VENV)
	@touch $@

venv: $(VENV)/.installed

deps: system-packages venv

lint: deps
	$(VENV)/bin/ruff check milters tests
	$(VENV)/bin/ruff format --check milters tests
	cd milters && ../$(VENV)/bin/mypy src/mssante
	$(VENV)/bin/yamllint -s .
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ANSIBLE_LINT_OFFLINE=1 $(VENV)/bin/ansible-lint --offline

# Every Python test in the development venv (current library releases).
test-dev: deps
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The Python tests again in the host runtime (Debian 12's python3 and python3-* packages),
# so code written against a newer library than a hospital host has fails here.
test-host: deps
	PYTHONPATH=$(CURDIR)/milters/src $(HOSTPY) -m pytest -p no:cacheprovider -m "not devonly" tests/unit tests/milter tests/render $(PYTEST_ARGS)

test: lint test-dev test-host

lab: deps
	$(VENV)/bin/ansible-playbook -i inventories/lab playbooks/lab.yml

lab-down: deps
	$(VENV)/bin/ansible-playbook -i inventories/lab playbooks/lab.yml -e lab_state=absent --limit localhost

bench: deps
	$(PY) -m tests.bench

clean: lab-down
	rm -rf $(VENV)
