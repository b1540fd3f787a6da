# tokenwatch: every entry point a person or CI needs. Tools install themselves on first use.
#   make demo   the pipeline end to end on local emulators (no AWS account)
#   make test   every test (unit, property, CLI, infra)
#   make lint   formatting, clippy, infra linters
#   make bench  the scan hot path against its bars (numbers, not tests)
#   make load   an organization trail's worth of traffic through the Lambda on the emulator (numbers)
#   make fuzz   every decoder that reads outside bytes under cargo fuzz, FUZZ_SECONDS each
#   make build  the Lambda for arm64 (cargo lambda);  make deploy  SAM deploy (guided the first time)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
PYTHON ?= python3
TOKENWATCH_BIN := target/debug/tokenwatch
TOKENWATCH_RELEASE_BIN := target/release/tokenwatch
TOOLS_VENV := .venv/tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

include infra/infra.mk

.PHONY: demo test lint bench load build deploy clean tools test-rust lint-rust $(TOKENWATCH_BIN) $(TOKENWATCH_RELEASE_BIN)

test: lint-rust test-rust infra-lint infra-test

# The local AWS emulator (moto) and cargo-lambda, from PyPI, rebuilt only when the pins change.
tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): tools/requirements.txt
	rm -rf $(TOOLS_VENV)
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

# The end-to-end tests run the real Lambda binary, so it is built first.
test-rust: $(TOOLS_STAMP)
	$(WORKSPACE_BUILD)
	PATH="$(CURDIR)/$(TOOLS_VENV)/bin:$$PATH" $(CARGO) test --workspace --locked

lint: lint-rust infra-lint

lint-rust:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# One build of every target with the features the tests unify, so the binaries the tests run (and the
# infra tests' CLI) do not rebuild the SDK with a different feature set.
WORKSPACE_BUILD := $(CARGO) build --workspace --all-targets --locked

$(TOKENWATCH_BIN):
	$(WORKSPACE_BUILD)

$(TOKENWATCH_RELEASE_BIN):
	$(CARGO) build --locked --release -p tokenwatch-cli

bench: $(TOKENWATCH_RELEASE_BIN) $(TOOLS_STAMP)
	TOKENWATCH_BIN=$(TOKENWATCH_RELEASE_BIN) PYTHON=$(PYTHON) bench/run.sh
	$(CARGO) build --locked --release -p tokenwatch-lambda -p tokenwatch-e2e
	TOKENWATCH_LAMBDA_BIN=target/release/tokenwatch-lambda target/release/tokenwatch-lambda-bench

# Every decoder of outside bytes under cargo fuzz, FUZZ_SECONDS each (fuzz/run.sh says what it runs and
# prints). Not part of `make test`: it is open-ended by nature and needs instrumented builds.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

# 200 files, ~1M records, 100k expired-token events, 4 function instances in parallel (LOAD_* to change).
load: $(TOOLS_STAMP)
	$(CARGO) build --locked --release -p tokenwatch-lambda -p tokenwatch-e2e
	TOKENWATCH_LAMBDA_BIN=target/release/tokenwatch-lambda target/release/tokenwatch-load

# The pipeline end to end on local emulators; everything it starts stops when it ends or is interrupted.
demo: $(TOOLS_STAMP)
	$(CARGO) build --locked -p tokenwatch-lambda -p tokenwatch-e2e
	target/debug/tokenwatch-demo

# The Lambda for arm64 (what SAM packages as bootstrap). Cross-compiling needs the aarch64 Rust target;
# cargo lambda brings the linker (zig) with it.
build: $(TOOLS_STAMP)
	PATH="$(CURDIR)/$(TOOLS_VENV)/bin:$$PATH" cargo lambda build --release --arm64 -p tokenwatch-lambda

# SAM builds the function itself (BuildMethod rust-cargolambda); --guided the first time, to create samconfig.toml.
deploy: $(TOOLS_STAMP) $(INFRA_SAM_STAMP)
	cd infra && PATH="$(CURDIR)/$(TOOLS_VENV)/bin:$$PATH" $(CURDIR)/$(INFRA_SAM_VENV)/bin/sam build
	cd infra && $(CURDIR)/$(INFRA_SAM_VENV)/bin/sam deploy $(if $(wildcard infra/samconfig.toml),,--guided)

clean: infra-clean
	rm -rf target bench-data .venv
