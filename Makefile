# tokenwatch: every entry point a person or CI needs. Tools install themselves on first use.
#   make demo   the pipeline end to end on local emulators (no AWS account)
#   make test   every test (unit, property, CLI, infra)
#   make lint   formatting, clippy, infra linters
#   make bench  the scan hot path against its bars (numbers, not tests)
#   make build  the Lambda for arm64 (cargo lambda);  make deploy  SAM deploy (guided the first time)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
PYTHON ?= python3
TOKENWATCH_BIN := target/debug/tokenwatch
TOKENWATCH_RELEASE_BIN := target/release/tokenwatch
DEMO_DIR := demo-data
TOOLS_VENV := .venv/tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

include infra/infra.mk

.PHONY: demo test lint bench build deploy clean tools test-rust lint-rust $(TOKENWATCH_BIN) $(TOKENWATCH_RELEASE_BIN)

test: lint-rust test-rust infra-lint infra-test

# The local AWS emulator (moto) and cargo-lambda, from PyPI, rebuilt only when the pins change.
tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): tools/requirements.txt
	rm -rf $(TOOLS_VENV)
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

test-rust: $(TOOLS_STAMP)
	PATH="$(CURDIR)/$(TOOLS_VENV)/bin:$$PATH" $(CARGO) test --workspace --locked

lint: lint-rust infra-lint

lint-rust:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

$(TOKENWATCH_BIN):
	$(CARGO) build --locked -p tokenwatch-cli

$(TOKENWATCH_RELEASE_BIN):
	$(CARGO) build --locked --release -p tokenwatch-cli

bench: $(TOKENWATCH_RELEASE_BIN)
	TOKENWATCH_BIN=$(TOKENWATCH_RELEASE_BIN) PYTHON=$(PYTHON) bench/run.sh

demo: $(TOKENWATCH_RELEASE_BIN)
	rm -rf $(DEMO_DIR)
	$(TOKENWATCH_RELEASE_BIN) sample $(DEMO_DIR) --seed 7
	$(TOKENWATCH_RELEASE_BIN) scan $(DEMO_DIR)

clean: infra-clean
	rm -rf target $(DEMO_DIR) bench-data .venv
