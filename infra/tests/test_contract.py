"""The template uses only names the code has: env variables, metrics and dimensions, the table schema.

Each test runs against the contract the built code prints (TOKENWATCH_BIN, or TOKENWATCH_CONTRACT_JSON)
and against the fixture copy of DESIGN.md's contract.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from cfnmodel import Stack

# Variables the template may set that are not the code's own contract.
STANDARD_ENV = {"RUST_LOG"}

# SELECT FUNC(Metric) FROM SCHEMA("ns", Dim, ...) | FROM "ns" [WHERE ...] [GROUP BY ...] [ORDER BY ...] [LIMIT n]
_QUERY = re.compile(
    r"""^SELECT\s+(?P<function>AVG|SUM|MIN|MAX|COUNT)\((?P<metric>[A-Za-z0-9_]+)\)\s+
        FROM\s+(?:SCHEMA\((?P<schema>[^)]*)\)|"(?P<namespace>[^"]+)")
        (?:\s+WHERE\s+(?P<where>.+?))?
        (?:\s+GROUP\s+BY\s+(?P<group>[A-Za-z0-9_,\s]+?))?
        (?:\s+ORDER\s+BY\s+(?P<order>(?:AVG|SUM|MIN|MAX|COUNT)\(\)(?:\s+(?:ASC|DESC))?))?
        (?:\s+LIMIT\s+(?P<limit>\d+))?\s*$""",
    re.VERBOSE,
)
_WHERE_TERM = re.compile(r"([A-Za-z0-9_]+)\s*(?:=|!=|\bIN\b|\bLIKE\b)")


@dataclass(frozen=True)
class MetricUse:
    """One place the template reads a metric of the code's namespace."""

    where: str
    name: str
    # The exact dimension set, or None when the query may span several sets (FROM "namespace").
    dimensions: frozenset[str] | None
    # Dimensions that must belong to the set (GROUP BY / WHERE keys).
    keys: frozenset[str]
    values: tuple[tuple[str, str], ...] = ()


def parse_insights_query(query: str, where: str) -> tuple[str, MetricUse]:
    """(namespace, use) of a Metrics Insights query; fails the test when the query is not understood."""
    match = _QUERY.match(query.strip())
    assert match, f"{where}: Metrics Insights query not understood: {query!r}"
    keys = set()
    if match["group"]:
        keys |= {k.strip() for k in match["group"].split(",")}
    if match["where"]:
        keys |= set(_WHERE_TERM.findall(match["where"]))
    if match["schema"] is not None:
        parts = [p.strip() for p in match["schema"].split(",")]
        namespace = parts[0]
        assert namespace.startswith('"') and namespace.endswith('"'), f"{where}: SCHEMA namespace not quoted"
        dimensions: frozenset[str] | None = frozenset(p for p in parts[1:] if p)
        assert keys <= dimensions, f"{where}: {sorted(keys - dimensions)} not in SCHEMA({', '.join(parts)})"
        return namespace.strip('"'), MetricUse(where, match["metric"], dimensions, frozenset(keys))
    return match["namespace"], MetricUse(where, match["metric"], None, frozenset(keys))


def dashboard_uses(stack: Stack, namespace: str) -> list[MetricUse]:
    uses = []
    for name, resource in stack.resources_of_type("AWS::CloudWatch::Dashboard").items():
        body = json.loads(resource["Properties"]["DashboardBody"])
        for w, widget in enumerate(body["widgets"]):
            if widget["type"] != "metric":
                continue
            previous: list = []
            for m, row in enumerate(widget["properties"]["metrics"]):
                where = f"{name} widget {w} ({widget['properties'].get('title')}) metric {m}"
                if isinstance(row[0], dict):
                    expression = row[0].get("expression", "")
                    assert expression.upper().startswith("SELECT"), f"{where}: only Metrics Insights expressions are checked"
                    query_namespace, use = parse_insights_query(expression, where)
                    if query_namespace == namespace:
                        uses.append(use)
                    continue
                fields = [x for x in row if not isinstance(x, dict)]
                # "." repeats the field of the row above.
                fields = [previous[i] if f == "." else f for i, f in enumerate(fields)]
                previous = fields
                if fields[0] != namespace:
                    continue
                pairs = tuple(zip(fields[2::2], fields[3::2]))
                uses.append(
                    MetricUse(where, fields[1], frozenset(k for k, _ in pairs), frozenset(k for k, _ in pairs), pairs)
                )
    return uses


def alarm_uses(stack: Stack, namespace: str) -> list[MetricUse]:
    uses = []
    for name, resource in stack.resources_of_type("AWS::CloudWatch::Alarm").items():
        props = resource["Properties"]
        metrics = [props] if "MetricName" in props else [
            q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q
        ]
        for metric in metrics:
            if metric.get("Namespace") != namespace:
                continue
            pairs = tuple((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
            keys = frozenset(k for k, _ in pairs)
            uses.append(MetricUse(name, metric["MetricName"], keys, keys, pairs))
    return uses


def check_uses(uses: list[MetricUse], contract) -> None:
    for use in uses:
        assert use.name in contract.metrics, f"{use.where}: metric {use.name} is not one the code emits"
        sets = contract.metrics[use.name].dimension_sets
        if use.dimensions is not None:
            assert use.dimensions in sets, (
                f"{use.where}: {use.name} is not emitted with dimensions {sorted(use.dimensions)} "
                f"(emitted with {[sorted(s) for s in sets]})"
            )
        else:
            assert any(use.keys <= s for s in sets), f"{use.where}: no dimension set of {use.name} has {sorted(use.keys)}"
        for key, value in use.values:
            if key == "Source":
                assert value in contract.sources, f"{use.where}: Source={value} is not a source the code reports"


def test_namespace_default_is_the_code_default(template, contract):
    assert template["Parameters"]["MetricsNamespace"]["Default"] == contract.namespace


def test_function_sets_exactly_the_contract_env(stack, contract):
    (function,) = stack.resources_of_type("AWS::Serverless::Function").values()
    names = set(function["Properties"]["Environment"]["Variables"])
    assert names - STANDARD_ENV <= set(contract.env), f"not in the contract: {sorted(names - STANDARD_ENV - set(contract.env))}"
    assert set(contract.env) <= names, f"contract variables the template does not set: {sorted(set(contract.env) - names)}"


def test_dashboard_references_only_emitted_metrics(stack, contract):
    uses = dashboard_uses(stack, contract.namespace)
    check_uses(uses, contract)
    # The dashboard shows every metric the code emits.
    assert {u.name for u in uses} == set(contract.metrics)


def test_alarms_reference_only_emitted_metrics(stack, contract):
    uses = alarm_uses(stack, contract.namespace)
    check_uses(uses, contract)
    assert {"StaleCredentialIncidents", "ExpiredTokenErrors"} <= {u.name for u in uses}


def test_alarms_follow_a_custom_namespace(template, contract):
    stack = Stack(template, MetricsNamespace="Security/TokenWatch", Source="s3", TrailBucketName="b")
    assert len(alarm_uses(stack, "Security/TokenWatch")) == 3
    assert {u.name for u in dashboard_uses(stack, "Security/TokenWatch")} == set(contract.metrics)
    assert not alarm_uses(stack, contract.namespace)


def test_source_values_are_the_code_sources(template, contract):
    assert set(template["Parameters"]["Source"]["AllowedValues"]) == set(contract.sources)


def test_state_table_schema_matches(stack, contract):
    (table,) = stack.resources_of_type("AWS::DynamoDB::Table").values()
    props = table["Properties"]
    keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
    assert keys == {"HASH": contract.partition_key, "RANGE": contract.sort_key}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {contract.partition_key: "S", contract.sort_key: "S"}
    assert props["TimeToLiveSpecification"] == {"AttributeName": contract.ttl_attribute, "Enabled": True}


@pytest.mark.parametrize(
    ("query", "dimensions", "keys"),
    [
        ('SELECT SUM(ExpiredTokenErrors) FROM SCHEMA("TokenWatch", Principal) GROUP BY Principal '
         "ORDER BY SUM() DESC LIMIT 10", {"Principal"}, {"Principal"}),
        ('SELECT AVG(CredentialAgeSeconds) FROM SCHEMA("TokenWatch", Principal) '
         "WHERE Principal = 'arn:aws:iam::1:role/x'", {"Principal"}, {"Principal"}),
        ('SELECT SUM(ExpiredTokenErrors) FROM SCHEMA("TokenWatch")', set(), set()),
    ],
)
def test_query_parser_reads_schema_and_keys(query, dimensions, keys):
    namespace, use = parse_insights_query(query, "q")
    assert namespace == "TokenWatch" and use.dimensions == frozenset(dimensions) and use.keys == frozenset(keys)


def test_query_parser_rejects_what_it_cannot_check():
    with pytest.raises(AssertionError, match="not understood"):
        parse_insights_query("SELECT SUM(A) + SUM(B) FROM SCHEMA(\"TokenWatch\")", "q")
    with pytest.raises(AssertionError, match="not in SCHEMA"):
        parse_insights_query('SELECT SUM(ExpiredTokenErrors) FROM SCHEMA("TokenWatch", Principal) GROUP BY SessionName', "q")


def test_check_catches_a_wrong_dimension_set(contract):
    bad = MetricUse("alarm", "CredentialAgeSeconds", frozenset({"AccountId"}), frozenset({"AccountId"}))
    with pytest.raises(AssertionError, match="not emitted with dimensions"):
        check_uses([bad], contract)
    with pytest.raises(AssertionError, match="not one the code emits"):
        check_uses([MetricUse("alarm", "ExpiredTokens", frozenset(), frozenset())], contract)
