# Lint and test infra/template.yaml. Included by the root Makefile; also runs on its own from the
# repository root:
#   make -f infra/infra.mk infra-lint
#   make -f infra/infra.mk infra-test TOKENWATCH_CONTRACT_JSON=infra/tests/fixtures/contract.json
#
# The tools install themselves on first use into .venv/infra (PyPI only), and again only when a
# requirements file changes. Everything runs offline: no AWS account or network is needed.

INFRA_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
INFRA_PYTHON ?= python3
INFRA_VENV ?= .venv/infra
# The `tokenwatch` CLI whose `contract --json` the tests compare the template with. The root
# Makefile sets it and has the rule that builds it.
TOKENWATCH_BIN ?= target/debug/tokenwatch
# A file with the contract JSON, used instead of running TOKENWATCH_BIN (then the binary is not built).
TOKENWATCH_CONTRACT_JSON ?=

INFRA_TEMPLATE := $(INFRA_DIR)/template.yaml
INFRA_SAM_VENV := $(INFRA_VENV)/sam
INFRA_CHECKOV_VENV := $(INFRA_VENV)/checkov
INFRA_SAM_STAMP := $(INFRA_SAM_VENV)/.installed
INFRA_CHECKOV_STAMP := $(INFRA_CHECKOV_VENV)/.installed
INFRA_VARIANTS := $(INFRA_VENV)/variants

# sam validate (without --lint) wants a region; nothing calls AWS, so fake credentials do.
infra-lint infra-test: export AWS_DEFAULT_REGION := us-east-1
infra-lint infra-test: export AWS_REGION := us-east-1
infra-lint infra-test: export AWS_ACCESS_KEY_ID := testing
infra-lint infra-test: export AWS_SECRET_ACCESS_KEY := testing
infra-lint infra-test: export AWS_SESSION_TOKEN := testing
infra-lint infra-test: export AWS_EC2_METADATA_DISABLED := true
infra-lint infra-test: export AWS_CONFIG_FILE := /dev/null
infra-lint infra-test: export AWS_SHARED_CREDENTIALS_FILE := /dev/null
infra-lint infra-test: export SAM_CLI_TELEMETRY := 0
infra-lint infra-test: export PYTHONDONTWRITEBYTECODE := 1

.PHONY: infra-lint infra-test infra-tools infra-clean

infra-tools: $(INFRA_SAM_STAMP) $(INFRA_CHECKOV_STAMP)

$(INFRA_SAM_STAMP): $(INFRA_DIR)/requirements.txt
	rm -rf $(INFRA_SAM_VENV)
	$(INFRA_PYTHON) -m venv $(INFRA_SAM_VENV)
	$(INFRA_SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(INFRA_CHECKOV_STAMP): $(INFRA_DIR)/requirements-checkov.txt
	rm -rf $(INFRA_CHECKOV_VENV)
	$(INFRA_PYTHON) -m venv $(INFRA_CHECKOV_VENV)
	$(INFRA_CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

infra-lint: $(INFRA_SAM_STAMP) $(INFRA_CHECKOV_STAMP)
	$(INFRA_SAM_VENV)/bin/cfn-lint $(INFRA_TEMPLATE)
	@echo "cfn-lint: no findings"
	$(INFRA_SAM_VENV)/bin/sam validate --lint --template-file $(INFRA_TEMPLATE)
	$(INFRA_SAM_VENV)/bin/sam validate --template-file $(INFRA_TEMPLATE)
	rm -rf $(INFRA_VARIANTS)
	$(INFRA_SAM_VENV)/bin/python $(INFRA_DIR)/tests/variants.py $(INFRA_VARIANTS)
	$(INFRA_CHECKOV_VENV)/bin/checkov --compact --quiet --skip-download \
		--framework cloudformation \
		-f $(INFRA_TEMPLATE) $(INFRA_VARIANTS)/template-s3.yaml $(INFRA_VARIANTS)/template-cloudwatch_logs.yaml

infra-test: $(INFRA_SAM_STAMP) $(if $(TOKENWATCH_CONTRACT_JSON),,$(TOKENWATCH_BIN))
	TOKENWATCH_BIN=$(TOKENWATCH_BIN) TOKENWATCH_CONTRACT_JSON=$(TOKENWATCH_CONTRACT_JSON) \
		$(INFRA_SAM_VENV)/bin/pytest -q $(INFRA_DIR)/tests

infra-clean:
	rm -rf $(INFRA_VENV)
