"""template.yaml becomes valid CloudFormation: the SAM transform runs offline, then cfn-lint checks the result.

cfn-lint 1.54+ no longer runs the SAM transform itself (it checks the SAM resources against a schema), so
on its own it passes a SAM template whose CloudFormation would fail to deploy. Here aws-sam-translator
expands the template first, without AWS (no IAM, no credentials), the way `sam validate` does, and
cfn-lint then lints the CloudFormation it produced.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cfnlint.api import lint
from cfnlint.config import ManualArgs
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

REGION = "us-east-1"
HERE = Path(__file__).resolve().parent

# Properties that point at local paths, which the translator only accepts as S3 locations.
LOCAL_PATH_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::Api": "DefinitionUri",
    "AWS::Serverless::HttpApi": "DefinitionUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}

# Default cfn-lint rule set: every error (E) and warning (W) fails the test. Informational (I) rules
# are not run. No rule is ignored; add one here only with a comment that says why.
LINT_CONFIG = ManualArgs(regions=[REGION])


class OfflineManagedPolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader, which lists AWS managed policies through IAM.

    The template attaches no managed policy by name (test_template_promises forbids it), so the map is
    empty. The policies SAM adds itself (basic execution, X-Ray) are built as ARNs without this lookup.
    """

    def load(self) -> dict[str, str]:
        return {}


def with_s3_placeholders(sam_template: dict[str, Any]) -> dict[str, Any]:
    """A copy of the template whose local code paths are s3://placeholder-bucket/<name>.zip."""
    template = copy.deepcopy(sam_template)
    globals_function = template.get("Globals", {}).get("Function", {})
    if isinstance(globals_function.get("CodeUri"), str):
        globals_function["CodeUri"] = "s3://placeholder-bucket/globals.zip"
    for logical_id, resource in template["Resources"].items():
        prop = LOCAL_PATH_PROPERTIES.get(resource.get("Type"))
        properties = resource.get("Properties", {})
        value = properties.get(prop)
        if isinstance(value, str) and not value.startswith("s3://"):
            properties[prop] = f"s3://placeholder-bucket/{logical_id}.zip"
    return template


def translate_offline(sam_template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation that the SAM transform makes of the template; raises InvalidDocumentException."""
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    translator = Translator(
        managed_policy_map=None,
        sam_parser=Parser(),
        plugins=[],
        # The translator reads only the session's region_name (pseudo parameters, ARN partition). A stand-in
        # keeps AWS config and profiles (AWS_PROFILE) out of it; nothing calls AWS.
        boto_session=SimpleNamespace(region_name=REGION),
        metrics=metrics,
    )
    try:
        return translator.translate(
            sam_template=with_s3_placeholders(sam_template),
            parameter_values={"AWS::Region": REGION, "AWS::Partition": "aws"},
            get_managed_policy_map=OfflineManagedPolicyLoader().load,
        )
    finally:
        metrics.publish()  # to the dummy publisher; keeps samtranslator from warning at exit


def translate_and_lint(sam_template: dict[str, Any]) -> list[str]:
    """Every problem found: the translator's errors, or else cfn-lint's errors and warnings."""
    try:
        cloudformation = translate_offline(sam_template)
    except InvalidDocumentException as exc:
        return [f"SAM transform: {cause.message}" for cause in exc.causes]
    return [
        f"{match.rule.id} {'/'.join(map(str, match.path))}: {match.message}"
        for match in lint(json.dumps(cloudformation), config=LINT_CONFIG)
    ]


def test_template_translates_offline_and_lints_clean(template):
    # Given template.yaml, with its local code paths swapped for S3 placeholders
    # When the SAM transform expands it and cfn-lint checks the CloudFormation it becomes
    problems = translate_and_lint(template)

    # Then neither finds an error or a warning
    assert problems == []


def test_translation_really_expands_the_serverless_resources(template):
    # Given template.yaml
    # When the SAM transform expands it
    cloudformation = translate_offline(template)

    # Then no SAM resource type is left and the functions' event sources exist in plain CloudFormation,
    # so the clean lint above was run on what CloudFormation would deploy
    types = {resource["Type"] for resource in cloudformation["Resources"].values()}
    assert not {t for t in types if t.startswith("AWS::Serverless::")}
    assert {"AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping", "AWS::ApiGatewayV2::Api"} <= types


def test_a_function_with_a_bad_runtime_consuming_a_missing_queue_is_caught(template_loader):
    # Given a SAM template that cfn-lint alone passes: its function has a runtime that does not exist and
    # its SQS event reads from a queue the template never declares
    broken = template_loader(HERE / "broken_template.yaml")

    # When it is translated and linted
    problems = translate_and_lint(broken)

    # Then both mistakes are reported, on the CloudFormation resources they became
    assert any(p.startswith("E3030 Resources/Worker/Properties/Runtime") for p in problems), problems
    assert any(p.startswith("E1010 ") and "QueueThatDoesNotExist" in p for p in problems), problems


def test_an_sqs_event_without_a_queue_is_rejected_by_the_transform(template_loader):
    # Given a SAM template whose SQS event names no queue at all
    untranslatable = template_loader(HERE / "untranslatable_template.yaml")

    # When it is translated and linted
    problems = translate_and_lint(untranslatable)

    # Then the SAM transform itself rejects it, and says which property is missing
    assert len(problems) == 1, problems
    assert problems[0].startswith("SAM transform: Resource with id [WorkerWork] is invalid."), problems
    assert "Missing required property 'Queue'" in problems[0], problems
