"""The names the Rust code and the template share, as `tokenwatch contract --json` prints them.

Where it comes from, first match wins:
  TOKENWATCH_CONTRACT_JSON  a file with the JSON (for running the infra tests before the binary exists)
  TOKENWATCH_BIN            the built `tokenwatch` binary (default target/debug/tokenwatch, from the repo root)
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnmodel import REPO_ROOT

FIXTURE_PATH = Path(__file__).resolve().parent / "fixtures" / "contract.json"
DEFAULT_BIN = "target/debug/tokenwatch"


class ContractError(ValueError):
    pass


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    dimension_sets: tuple[frozenset[str], ...]


@dataclass(frozen=True)
class Contract:
    namespace: str
    env: tuple[str, ...]
    metrics: dict[str, Metric]
    sources: tuple[str, ...]
    partition_key: str
    sort_key: str
    ttl_attribute: str


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _string(value: Any, where: str) -> str:
    _expect(isinstance(value, str) and value != "", f"{where}: expected a non-empty string, got {value!r}")
    return value


def _strings(value: Any, where: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    _expect(isinstance(value, list), f"{where}: expected a list, got {type(value).__name__}")
    _expect(allow_empty or len(value) > 0, f"{where}: expected at least one entry")
    items = tuple(_string(x, f"{where}[{i}]") for i, x in enumerate(value))
    _expect(len(set(items)) == len(items), f"{where}: duplicate entries in {list(items)}")
    return items


def parse_contract(text: str) -> Contract:
    """Parse and check the shape of the contract JSON; extra fields are allowed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ContractError(f"not JSON: {e}") from e
    _expect(isinstance(data, dict), "top level: expected an object")
    for key in ("namespace", "env", "metrics", "sources", "state_table"):
        _expect(key in data, f"missing key {key!r}")

    metrics: dict[str, Metric] = {}
    _expect(isinstance(data["metrics"], list) and data["metrics"], "metrics: expected a non-empty list")
    for i, entry in enumerate(data["metrics"]):
        where = f"metrics[{i}]"
        _expect(isinstance(entry, dict), f"{where}: expected an object")
        for key in ("name", "unit", "dimension_sets"):
            _expect(key in entry, f"{where}: missing key {key!r}")
        name = _string(entry["name"], f"{where}.name")
        _expect(name not in metrics, f"{where}: metric {name} listed twice")
        sets = entry["dimension_sets"]
        _expect(isinstance(sets, list) and sets, f"{where}.dimension_sets: expected a non-empty list")
        parsed_sets = tuple(
            frozenset(_strings(s, f"{where}.dimension_sets[{j}]", allow_empty=True)) for j, s in enumerate(sets)
        )
        _expect(len(set(parsed_sets)) == len(parsed_sets), f"{where}.dimension_sets: duplicate sets")
        metrics[name] = Metric(name, _string(entry["unit"], f"{where}.unit"), parsed_sets)

    table = data["state_table"]
    _expect(isinstance(table, dict), "state_table: expected an object")
    for key in ("partition_key", "sort_key", "ttl_attribute"):
        _expect(key in table, f"state_table: missing key {key!r}")

    return Contract(
        namespace=_string(data["namespace"], "namespace"),
        env=_strings(data["env"], "env"),
        metrics=metrics,
        sources=_strings(data["sources"], "sources"),
        partition_key=_string(table["partition_key"], "state_table.partition_key"),
        sort_key=_string(table["sort_key"], "state_table.sort_key"),
        ttl_attribute=_string(table["ttl_attribute"], "state_table.ttl_attribute"),
    )


def contract_source() -> tuple[str, str]:
    """(description, JSON text) of the contract the environment points at."""
    override = os.environ.get("TOKENWATCH_CONTRACT_JSON")
    if override:
        path = Path(override)
        if not path.is_absolute():
            path = REPO_ROOT / path
        return f"TOKENWATCH_CONTRACT_JSON={path}", path.read_text(encoding="utf-8")

    binary = Path(os.environ.get("TOKENWATCH_BIN") or DEFAULT_BIN)
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.is_file():
        raise ContractError(
            f"{binary} does not exist: build the tokenwatch CLI first (the root Makefile's TOKENWATCH_BIN target), "
            "or set TOKENWATCH_CONTRACT_JSON to a file with the contract JSON"
        )
    done = subprocess.run(
        [str(binary), "contract", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ContractError(f"{binary} contract --json exited {done.returncode}: {done.stderr.strip()}")
    return f"{binary} contract --json", done.stdout
