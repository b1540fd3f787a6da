"""docs/DEPLOY.md documents every template parameter, with the template's default."""

from __future__ import annotations

import re

from cfnmodel import REPO_ROOT

DEPLOY = REPO_ROOT / "docs" / "DEPLOY.md"


def parameter_table() -> dict[str, str]:
    """Parameter name -> default cell of the table under '## Parameters'."""
    text = DEPLOY.read_text(encoding="utf-8")
    section = text.split("\n## Parameters\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Za-z0-9]+)` \| ([^|]*) \| ([^|]+) \|$", line)
        if match:
            name, default, description = match.groups()
            assert name not in rows, f"{name} documented twice"
            assert description.strip(), f"{name} has no description"
            rows[name] = default.strip()
    return rows


def test_every_parameter_is_documented_and_nothing_else(template):
    documented = parameter_table()
    parameters = set(template["Parameters"])
    assert set(documented) - parameters == set(), "documented but not in the template"
    assert parameters - set(documented) == set(), "in the template but not in docs/DEPLOY.md"


def test_documented_defaults_are_the_template_defaults(template):
    for name, cell in parameter_table().items():
        default = str(template["Parameters"][name].get("Default", ""))
        expected = f"`{default}`" if default != "" else "(empty)"
        assert cell == expected, f"{name}: DEPLOY.md says {cell}, the template {expected}"


def test_parameter_groups_list_every_parameter_once(template):
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    listed = [p for group in groups for p in group["Parameters"]]
    assert sorted(listed) == sorted(template["Parameters"])
