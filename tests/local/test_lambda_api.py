"""The local Lambda Invoke API answers a plain boto3 lambda client the way Lambda does.

Small handlers in a temporary directory, behind a router that is never started: direct invocations
need no event sources.
"""

from __future__ import annotations

import json
import textwrap

import boto3
import pytest

from local.lambda_api import LambdaInvokeApi
from local.router import Router
from local.template import LocalStackTemplate

HANDLERS = {
    "echo": """
        def lambda_handler(event, context):
            return {"ok": True, "result": event, "function_name": context.function_name}
    """,
    "broken": """
        def lambda_handler(event, context):
            raise ValueError("no campaign field")
    """,
    "unencodable": """
        def lambda_handler(event, context):
            return {"when": object()}
    """,
}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    code_root = tmp_path_factory.mktemp("lambda-api-handlers")
    resources = {}
    for name, source in HANDLERS.items():
        (code_root / name).mkdir()
        (code_root / name / "app.py").write_text(textwrap.dedent(source))
        resources[f"{name.title()}Function"] = {
            "Type": "AWS::Serverless::Function",
            "Properties": {"CodeUri": str(code_root / name), "Handler": "app.lambda_handler"},
        }
    template = LocalStackTemplate(template={"Resources": resources}, stack_name="lambda-api-test")
    running = LambdaInvokeApi(Router(template, aws_endpoint="http://127.0.0.1:9")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def lambda_client(api):
    return boto3.client(
        "lambda",
        endpoint_url=api.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_a_function_named_by_its_logical_id_returns_its_json_result(lambda_client):
    # When a client invokes a function by the template's logical id
    response = lambda_client.invoke(FunctionName="EchoFunction", Payload=json.dumps({"command": "status"}))

    # Then the handler got the payload as its event, and its result is the reply
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {
        "ok": True, "result": {"command": "status"}, "function_name": "lambda-api-test-EchoFunction",
    }


def test_a_function_named_by_its_physical_name_is_the_same_function(lambda_client):
    response = lambda_client.invoke(FunctionName="lambda-api-test-EchoFunction", Payload=b"{}")

    assert json.loads(response["Payload"].read())["result"] == {}


def test_function_error_sets_x_amz_function_error(lambda_client):
    # When the handler raises
    response = lambda_client.invoke(FunctionName="BrokenFunction", Payload=b"{}")

    # Then Lambda's answer: 200, the error header, and the error as the payload
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read()) == {"errorMessage": "no campaign field", "errorType": "ValueError"}


def test_a_result_json_cannot_encode_is_a_marshal_error(lambda_client):
    response = lambda_client.invoke(FunctionName="UnencodableFunction", Payload=b"{}")

    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Runtime.MarshalError"


def test_unknown_function_raises_resource_not_found(lambda_client):
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as raised:
        lambda_client.invoke(FunctionName="NoSuchFunction", Payload=b"{}")

    assert raised.value.response["Error"]["Message"] == "Function not found: NoSuchFunction"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_a_payload_that_is_not_json_is_refused(lambda_client):
    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException):
        lambda_client.invoke(FunctionName="EchoFunction", Payload=b"{not json")


def test_only_request_response_invocations_are_served(lambda_client):
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException):
        lambda_client.invoke(FunctionName="EchoFunction", InvocationType="Event", Payload=b"{}")
