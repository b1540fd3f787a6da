from __future__ import annotations

import pytest

from cfnmodel import Stack, load_template
from contract import FIXTURE_PATH, Contract, contract_source, parse_contract
from variants import VARIANTS

SOURCES = ("eventbridge", "s3", "cloudwatch_logs")

# Parameter values that make every optional part of the template exist for a source.
SOURCE_PARAMETERS = {"eventbridge": {"Source": "eventbridge"}, **VARIANTS}


@pytest.fixture(scope="session")
def template() -> dict:
    return load_template()


@pytest.fixture(params=SOURCES)
def stack(request: pytest.FixtureRequest, template: dict) -> Stack:
    """The template evaluated for each delivery option, its optional parts switched on."""
    return Stack(template, **SOURCE_PARAMETERS[request.param])


_live_contract: list[Contract] = []


@pytest.fixture(scope="session", params=["fixture", "live"])
def contract(request: pytest.FixtureRequest) -> Contract:
    """The contract both as DESIGN.md states it (the fixture) and as the built code prints it."""
    if request.param == "fixture":
        return parse_contract(FIXTURE_PATH.read_text(encoding="utf-8"))
    if not _live_contract:
        where, text = contract_source()
        try:
            _live_contract.append(parse_contract(text))
        except ValueError as e:
            raise AssertionError(f"{where}: {e}") from e
    return _live_contract[0]
