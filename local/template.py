"""template.yaml as the local stack sees it: the one source of resources, functions and events.

The loader understands CloudFormation's short-form tags; the resolver evaluates the intrinsic
functions with local physical names, so the local stack and a deployed stack cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_REGION = "us-east-1"
LOCAL_STACK_NAME = "smsinvite-local"

_TAGS_WITH_LIST_ARGS = (
    "And", "Equals", "FindInMap", "If", "Join", "Not", "Or", "Select", "Split", "Cidr",
)
_TAGS_WITH_SCALAR_ARGS = ("Base64", "GetAZs", "ImportValue", "Sub", "Condition")


class _CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader plus the short-form intrinsic tags, turned into their long form."""


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _register_tags() -> None:
    def long_form(name: str):
        def constructor(loader, node):
            return {name: _construct(loader, node)}

        return constructor

    for tag in _TAGS_WITH_LIST_ARGS + _TAGS_WITH_SCALAR_ARGS:
        key = "Condition" if tag == "Condition" else f"Fn::{tag}"
        _CloudFormationLoader.add_constructor(f"!{tag}", long_form(key))
    _CloudFormationLoader.add_constructor("!Ref", long_form("Ref"))

    def get_att(loader, node):
        value = _construct(loader, node)
        if isinstance(value, str):
            value = value.split(".", 1)
        return {"Fn::GetAtt": value}

    _CloudFormationLoader.add_constructor("!GetAtt", get_att)


_register_tags()


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CloudFormationLoader)  # noqa: S506 - SafeLoader subclass


@dataclass(frozen=True)
class EventSpec:
    """One entry of a function's `Events`, with its properties resolved."""

    logical_id: str
    type: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    code_dir: Path
    handler: str
    timeout: int
    memory_mb: int
    environment: dict[str, str]
    events: tuple[EventSpec, ...] = field(default_factory=tuple)

    @property
    def handler_file(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return self.code_dir / (module.replace(".", "/") + ".py")

    @property
    def handler_attr(self) -> str:
        return self.handler.rpartition(".")[2]


class LocalStackTemplate:
    """The template, resolved against local physical names and parameter values.

    `endpoints` maps a service ("sqs") to its local base URL; queue URLs are built from it the way
    moto builds them.
    """

    def __init__(
        self,
        parameters: dict[str, str] | None = None,
        *,
        sqs_endpoint: str = "http://127.0.0.1:5000",
        template: dict[str, Any] | None = None,
        stack_name: str = LOCAL_STACK_NAME,
    ) -> None:
        self.raw = template if template is not None else load_template()
        self.stack_name = stack_name
        self.sqs_endpoint = sqs_endpoint.rstrip("/")
        self.resources: dict[str, dict[str, Any]] = self.raw.get("Resources", {})
        self.parameters = self._parameter_values(parameters or {})
        self.conditions = {
            name: self.resolve(expression) for name, expression in self.raw.get("Conditions", {}).items()
        }

    # ------------------------------------------------------------------ parameters and names
    def _parameter_values(self, overrides: dict[str, str]) -> dict[str, str]:
        declared = self.raw.get("Parameters", {})
        unknown = set(overrides) - set(declared)
        if unknown:
            raise ValueError(f"unknown template parameters: {sorted(unknown)}")
        values = {}
        for name, spec in declared.items():
            if name in overrides:
                values[name] = str(overrides[name])
            elif "Default" in spec:
                values[name] = str(spec["Default"])
            else:
                raise ValueError(f"template parameter {name} has no default; the local stack must set it")
        return values

    def physical_name(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::S3::Bucket" and "BucketName" in props:
            return self.resolve(props["BucketName"])
        return f"{self.stack_name}-{logical_id}"

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: res for lid, res in self.resources.items() if res.get("Type") == kind}

    def queue_url(self, logical_id: str) -> str:
        return f"{self.sqs_endpoint}/{LOCAL_ACCOUNT_ID}/{self.physical_name(logical_id)}"

    def arn(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        service = {
            "AWS::SQS::Queue": f"sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{name}",
            "AWS::S3::Bucket": f"s3:::{name}",
            "AWS::DynamoDB::Table": f"dynamodb:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:table/{name}",
            "AWS::Serverless::Function": f"lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{name}",
            "AWS::SNS::Topic": f"sns:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{name}",
            "AWS::Logs::LogGroup": f"logs:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:log-group:{name}",
        }.get(kind, f"local:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{name}")
        return f"arn:aws:{service}"

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": LOCAL_ACCOUNT_ID,
            "AWS::Region": LOCAL_REGION,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.resources:
            raise KeyError(f"!Ref to unknown name {name}")
        kind = self.resources[name]["Type"]
        if kind == "AWS::SQS::Queue":
            return self.queue_url(name)
        if kind in ("AWS::Serverless::LayerVersion", "AWS::SNS::Topic"):
            return self.arn(name)
        return self.physical_name(name)

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        if logical_id not in self.resources:
            raise KeyError(f"!GetAtt to unknown resource {logical_id}")
        if attribute == "Arn":
            return self.arn(logical_id)
        if attribute in ("QueueName", "TopicName"):
            return self.physical_name(logical_id)
        if attribute == "QueueUrl":
            return self.queue_url(logical_id)
        raise KeyError(f"!GetAtt {logical_id}.{attribute} is not known to the local stack")

    # ------------------------------------------------------------------ intrinsic functions
    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                return self._get_att(*arg)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                delimiter, items = arg
                return delimiter.join(str(item) for item in self.resolve(items))
            if key == "Fn::Select":
                index, items = self.resolve(arg)
                return items[int(index)]
            if key == "Fn::Split":
                delimiter, text = self.resolve(arg)
                return text.split(delimiter)
            if key == "Fn::Equals":
                left, right = self.resolve(arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(arg))
            if key == "Fn::Or":
                return any(self.resolve(arg))
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(when_true if self.conditions[condition] else when_false)
            if key == "Condition":
                return self.conditions[arg]
        return {key: self.resolve(value) for key, value in node.items()}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match: re.Match) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"
            if expression in variables:
                return str(variables[expression])
            if "." in expression and not expression.startswith("AWS::"):
                return str(self._get_att(*expression.split(".", 1)))
            return str(self._ref(expression))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def output(self, name: str) -> Any:
        """An output's value, as the stack deployed with these parameters would show it."""
        return self.resolve(self.raw["Outputs"][name]["Value"])

    # ------------------------------------------------------------------ functions
    def functions(self) -> list[FunctionSpec]:
        defaults = self.raw.get("Globals", {}).get("Function", {})
        global_env = self.resolve(defaults.get("Environment", {}).get("Variables", {}))
        specs = []
        for logical_id, resource in self.of_type("AWS::Serverless::Function").items():
            props = resource.get("Properties", {})
            environment = {**global_env, **self.resolve(props.get("Environment", {}).get("Variables", {}))}
            events = tuple(
                EventSpec(event_id, event["Type"], self.resolve(event.get("Properties", {})))
                for event_id, event in props.get("Events", {}).items()
            )
            specs.append(
                FunctionSpec(
                    logical_id=logical_id,
                    name=self.physical_name(logical_id),
                    code_dir=REPO_ROOT / props["CodeUri"],
                    handler=props.get("Handler", defaults.get("Handler")),
                    timeout=int(props.get("Timeout", defaults.get("Timeout", 3))),
                    memory_mb=int(props.get("MemorySize", defaults.get("MemorySize", 128))),
                    environment={k: "" if v is None else str(v) for k, v in environment.items()},
                    events=events,
                )
            )
        return specs

    def function(self, logical_id: str) -> FunctionSpec:
        for spec in self.functions():
            if spec.logical_id == logical_id:
                return spec
        raise KeyError(logical_id)
