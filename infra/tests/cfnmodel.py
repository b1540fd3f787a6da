"""Load infra/template.yaml and evaluate it for one set of parameter values.

Only what the template uses is supported: Ref, Fn::Sub, Fn::Join, Fn::Split, Fn::Select,
Fn::FindInMap, Fn::If, Fn::GetAtt and the condition functions. Values that only exist after a
deployment (a resource's Ref or attribute) evaluate to placeholders such as "<Function>" or
"<Key.Arn>", so a test can still tell which resource a property points at.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "infra" / "template.yaml"

PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "111122223333",
    "AWS::Partition": "aws",
    "AWS::StackName": "tokenwatch",
    "AWS::URLSuffix": "amazonaws.com",
}

_SHORT_FUNCTIONS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "GetAtt": "Fn::GetAtt",
}


class CfnLoader(yaml.SafeLoader):
    """PyYAML loader that turns CloudFormation short forms (!Ref, !Sub, ...) into long forms."""


def _construct_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    key = _SHORT_FUNCTIONS.get(suffix, f"Fn::{suffix}")
    if key == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {key: value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


class Unresolved(Exception):
    pass


class Stack:
    """The template as CloudFormation would see it for one set of parameter values."""

    def __init__(self, template: dict[str, Any], **overrides: Any) -> None:
        self.template = template
        params = template.get("Parameters", {})
        unknown = set(overrides) - set(params)
        if unknown:
            raise KeyError(f"not template parameters: {sorted(unknown)}")
        self.params: dict[str, str] = {}
        for name, spec in params.items():
            value = overrides.get(name, spec.get("Default"))
            if value is None:
                raise Unresolved(f"parameter {name} has no default and no value")
            self.params[name] = _as_parameter_string(value)
        self._conditions: dict[str, bool] = {}

    # -- conditions -------------------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self._condition_value(self.template["Conditions"][name]))
        return self._conditions[name]

    def _condition_value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Equals":
                a, b = (self.evaluate(x) for x in arg)
                return _as_parameter_string(a) == _as_parameter_string(b)
            if key == "Fn::Not":
                return not self._condition_value(arg[0])
            if key == "Fn::And":
                return all(self._condition_value(x) for x in arg)
            if key == "Fn::Or":
                return any(self._condition_value(x) for x in arg)
        return self.evaluate(node)

    # -- values -----------------------------------------------------------------------------
    def evaluate(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.evaluate(x) for x in node]
            return [x for x in items if x is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            handler = _FUNCTIONS.get(key)
            if handler is not None:
                return handler(self, arg)
            if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
                return self._condition_value(node)
        out = {}
        for key, value in node.items():
            value = self.evaluate(value)
            if value is not NO_VALUE:
                out[key] = value
        return out

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params:
            spec = self.template["Parameters"][name]
            if spec.get("Type") == "CommaDelimitedList":
                return self.params[name].split(",")
            return self.params[name]
        if name in self.template["Resources"]:
            return f"<{name}>"
        raise Unresolved(f"Ref to unknown name {name}")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, str):
            text, variables = arg, {}
        else:
            text, variables = arg[0], {k: self.evaluate(v) for k, v in arg[1].items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                resource, attribute = name.split(".", 1)
                return str(self._get_att([resource, attribute]))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def _get_att(self, arg: Any) -> str:
        resource, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
        if resource not in self.template["Resources"]:
            raise Unresolved(f"GetAtt of unknown resource {resource}")
        return f"<{resource}.{attribute}>"

    def _find_in_map(self, arg: Any) -> Any:
        name, top, second = (self.evaluate(x) for x in arg[:3])
        return self.template["Mappings"][name][top][second]

    def _if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.evaluate(when_true if self.condition(name) else when_false)

    def _join(self, arg: Any) -> str:
        separator, items = arg
        items = self.evaluate(items)
        return separator.join(str(x) for x in items)

    def _split(self, arg: Any) -> list[str]:
        separator, text = arg
        return str(self.evaluate(text)).split(separator)

    def _select(self, arg: Any) -> Any:
        index, items = arg
        return self.evaluate(items)[int(self.evaluate(index))]

    # -- resources --------------------------------------------------------------------------
    def resources(self) -> dict[str, dict[str, Any]]:
        """Resources that exist for these parameter values, their properties evaluated."""
        out = {}
        for name, resource in self.template["Resources"].items():
            condition = resource.get("Condition")
            if condition and not self.condition(condition):
                continue
            evaluated = dict(resource)
            evaluated["Properties"] = self.evaluate(resource.get("Properties", {}))
            out[name] = evaluated
        return out

    def resources_of_type(self, type_name: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources().items() if v["Type"] == type_name}


_FUNCTIONS = {
    "Ref": Stack.ref,
    "Fn::Sub": Stack._sub,
    "Fn::GetAtt": Stack._get_att,
    "Fn::FindInMap": Stack._find_in_map,
    "Fn::If": Stack._if,
    "Fn::Join": Stack._join,
    "Fn::Split": Stack._split,
    "Fn::Select": Stack._select,
}


def _as_parameter_string(value: Any) -> str:
    """CloudFormation passes every parameter value as a string ("128", "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(x) for x in value)
    return str(value)


def statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy_document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
