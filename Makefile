# housekeeper: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins versions that clash with the app's, so it gets a venv of its own.
TOOLS_VENV := .local/tools-venv
TOOLS_STAMP := $(TOOLS_VENV)/.installed
TERRAFORM ?= terraform
export PYTHONPATH := functions:.

.DEFAULT_GOAL := help

help: ## List the targets with what they do
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt functions/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install every dependency

$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r requirements-tools.txt
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP) ## Install checkov into its own venv (.local/tools-venv)

TRANSPORT ?= postgres

run: $(STAMP) ## Start the local stack, run cleanup-logs end to end (TRANSPORT=supabase: via the PostgREST stand-in)
	$(PY) -m devstack run --transport $(TRANSPORT)

run-media: $(STAMP) ## Migrate seeded CDN images and videos into local S3 (R2 stand-in); RESEED=1 starts over
	$(PY) -m devstack run-media $(if $(RESEED),--reseed)

serve: $(STAMP) ## Start the local stack and keep it running (Ctrl-C stops it)
	$(PY) -m devstack serve

test: $(STAMP) $(TOOLS_STAMP) ## Run the whole test suite with branch coverage
	$(PY) -m pytest --cov --cov-report=term

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP) ## Format and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

deploy-check: $(STAMP) $(TOOLS_STAMP) ## Only the offline deploy checks: Terraform, checkov, render.yaml, contracts
	$(PY) -m pytest tests/deploy

deploy: ## terraform init + apply in terraform/ (shows the plan, asks before applying)
	$(TERRAFORM) -chdir=terraform init -input=false
	$(TERRAFORM) -chdir=terraform apply

bench: $(STAMP) ## Measure the jobs against their peers and limits, side by side (~15 min)
	$(PY) -m bench

bench-quick: $(STAMP) ## A small make bench (under a minute); the test suite runs it once
	$(PY) -m bench --quick

clean: ## Remove the local stack's data (.local/) and caches
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov

.PHONY: help venv tools run run-media serve test deploy-check deploy lint fmt bench bench-quick clean
