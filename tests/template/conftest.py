"""The one loader of template.yaml that every template test shares."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any, Callable

import pytest

from local.template import load_template as load_cloudformation_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

Template = dict[str, Any]


@cache
def _load(path: Path) -> Template:
    # The local stack's loader (one loader for the project) turns short-form tags into their long
    # form. The JSON round trip keeps an unquoted YAML date (AWSTemplateFormatVersion: 2010-09-09)
    # a string, as CloudFormation reads it.
    return json.loads(json.dumps(load_cloudformation_yaml(path), default=str))


def load_template(path: Path = TEMPLATE_PATH) -> Template:
    """A fresh copy of the template at `path`; callers may change it freely."""
    return copy.deepcopy(_load(Path(path)))


def _function_properties(template: Template) -> dict[str, dict[str, Any]]:
    """Each AWS::Serverless::Function's properties with Globals.Function beneath them (top level only)."""
    globals_ = template.get("Globals", {}).get("Function", {})
    return {
        logical_id: {**globals_, **resource.get("Properties", {})}
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def template_loader() -> Callable[[Path], Template]:
    """The loader itself, for tests that read a template other than template.yaml (fixtures)."""
    return load_template


@pytest.fixture
def template() -> Template:
    return load_template()


@pytest.fixture
def functions(template: Template) -> dict[str, dict[str, Any]]:
    """Logical id -> effective properties (the function's own, over Globals.Function)."""
    return _function_properties(template)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test that asks for `function_logical_id` runs once per function in template.yaml.
    if "function_logical_id" in metafunc.fixturenames:
        metafunc.parametrize("function_logical_id", sorted(_function_properties(load_template())))
