"""The contract parser itself, against the fixture copy of the expected JSON and broken variants."""

from __future__ import annotations

import json

import pytest

from contract import FIXTURE_PATH, ContractError, contract_source, parse_contract


def fixture_data() -> dict:
    return json.loads(FIXTURE_PATH.read_text(encoding="utf-8"))


def test_fixture_parses_to_the_design_contract():
    contract = parse_contract(FIXTURE_PATH.read_text(encoding="utf-8"))
    assert contract.namespace == "TokenWatch"
    assert len(contract.env) == 12 and all(name.startswith("TOKENWATCH_") for name in contract.env)
    assert contract.metrics["ExpiredTokenErrors"].unit == "Count"
    assert set(contract.metrics["ExpiredTokenErrors"].dimension_sets) == {
        frozenset(),
        frozenset({"AccountId"}),
        frozenset({"Principal"}),
        frozenset({"Principal", "SessionName"}),
    }
    assert contract.metrics["CredentialAgeSeconds"].unit == "Seconds"
    assert set(contract.sources) == {"eventbridge", "cloudwatch_logs", "s3"}
    assert (contract.partition_key, contract.sort_key, contract.ttl_attribute) == ("pk", "sk", "expires_at")


def test_extra_fields_are_allowed():
    data = fixture_data()
    data["version"] = "0.1.0"
    data["metrics"][0]["description"] = "expired-token failures"
    data["state_table"]["gsi"] = []
    parse_contract(json.dumps(data))


def _broken(mutate) -> str:
    data = fixture_data()
    mutate(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("env"), "missing key 'env'"),
        (lambda d: d.pop("state_table"), "missing key 'state_table'"),
        (lambda d: d["state_table"].pop("ttl_attribute"), "ttl_attribute"),
        (lambda d: d.update(namespace=""), "namespace"),
        (lambda d: d.update(env="TOKENWATCH_NAMESPACE"), "env: expected a list"),
        (lambda d: d["env"].append("TOKENWATCH_NAMESPACE"), "duplicate"),
        (lambda d: d["metrics"][0].pop("unit"), "missing key 'unit'"),
        (lambda d: d["metrics"][0].update(dimension_sets=[["Principal"], ["Principal"]]), "duplicate"),
        (lambda d: d["metrics"][1].update(dimension_sets="Principal"), "dimension_sets"),
        (lambda d: d["metrics"].append(dict(d["metrics"][0])), "listed twice"),
        (lambda d: d.update(sources=[]), "sources"),
    ],
)
def test_malformed_contract_is_rejected(mutate, message):
    with pytest.raises(ContractError, match=message):
        parse_contract(_broken(mutate))


def test_not_json_is_rejected():
    with pytest.raises(ContractError, match="not JSON"):
        parse_contract("tokenwatch 0.1.0\n")


def test_override_file_takes_precedence(monkeypatch, tmp_path):
    path = tmp_path / "contract.json"
    path.write_text('{"namespace": "X"}', encoding="utf-8")
    monkeypatch.setenv("TOKENWATCH_CONTRACT_JSON", str(path))
    monkeypatch.setenv("TOKENWATCH_BIN", str(tmp_path / "missing"))
    where, text = contract_source()
    assert "TOKENWATCH_CONTRACT_JSON" in where and text == '{"namespace": "X"}'


def test_missing_binary_is_reported_by_name(monkeypatch, tmp_path):
    monkeypatch.delenv("TOKENWATCH_CONTRACT_JSON", raising=False)
    monkeypatch.setenv("TOKENWATCH_BIN", str(tmp_path / "tokenwatch"))
    with pytest.raises(ContractError, match="does not exist"):
        contract_source()


def test_binary_is_run_with_contract_json(monkeypatch, tmp_path):
    fake = tmp_path / "tokenwatch"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "contract --json" ] || exit 3\nprintf \'{"namespace":"Y"}\'\n')
    fake.chmod(0o755)
    monkeypatch.delenv("TOKENWATCH_CONTRACT_JSON", raising=False)
    monkeypatch.setenv("TOKENWATCH_BIN", str(fake))
    assert contract_source()[1] == '{"namespace":"Y"}'
