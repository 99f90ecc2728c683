"""The local router delivers template events to handlers with AWS's event shapes.

Runs a real moto server on 127.0.0.1 and small fake handlers written to a temporary directory.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote_plus

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from local.router import Router, RouterConfigError, encode_s3_event_key, schedule_interval_seconds
from local.template import LocalStackTemplate

AWS_SAMPLES = Path(__file__).resolve().parent.parent / "events" / "aws"
STACK = "router-test"
BUCKET = "router-test-imports-123456789012-us-east-1"

HANDLERS = {
    "importer": """
        EVENTS = []

        def lambda_handler(event, context):
            EVENTS.append(event)
            if "explode" in event["Records"][0]["s3"]["object"]["key"]:
                raise RuntimeError("this file cannot be imported")
            return {"imported": True}
    """,
    "worker": """
        import json

        EVENTS = []

        def lambda_handler(event, context):
            EVENTS.append(event)
            failures = []
            for record in event["Records"]:
                fail_times = json.loads(record["body"]).get("fail_times", 0)
                if int(record["attributes"]["ApproximateReceiveCount"]) <= fail_times:
                    failures.append({"itemIdentifier": record["messageId"]})
            return {"batchItemFailures": failures}
    """,
    "poison": """
        EVENTS = []

        def lambda_handler(event, context):
            EVENTS.append(event)
            raise ValueError("every record of this queue fails")
    """,
    "web": """
        import base64

        EVENTS = []

        def lambda_handler(event, context):
            EVENTS.append(event)
            route = event["routeKey"]
            if route == "GET /boom":
                raise RuntimeError("handler bug")
            if route == "GET /simple":
                return {"codes": ["abc"]}
            if route == "GET /text":
                return "plain words"
            if route == "GET /files/{proxy+}":
                return {
                    "statusCode": 200,
                    "headers": {"content-type": "application/octet-stream"},
                    "body": base64.b64encode(b"\\x00\\x01binary").decode(),
                    "isBase64Encoded": True,
                }
            return {
                "statusCode": 201,
                "headers": {"content-type": "text/xml"},
                "cookies": ["session=abc; HttpOnly", "seen=1"],
                "body": "<Response></Response>",
            }
    """,
    "tick": """
        EVENTS = []

        def lambda_handler(event, context):
            EVENTS.append(event)
    """,
    "logs": """
        import logging

        from aws_lambda_powertools import Logger

        logger = Logger(service="router-test-logs")

        def lambda_handler(event, context):
            logger.info("handled", extra={"step": 1})
            logging.getLogger("somelibrary").info("below the runtime's level")
            logging.getLogger("somelibrary").warning("a library warns")
            logging.getLogger("local.somepart").warning("the local stack's own record")
            raise ValueError("the handler gives up")
    """,
    "context": """
        import time

        def lambda_handler(event, context):
            first = context.get_remaining_time_in_millis()
            time.sleep(event["sleep"])
            return {
                "first": first,
                "second": context.get_remaining_time_in_millis(),
                "function_name": context.function_name,
                "function_version": context.function_version,
                "invoked_function_arn": context.invoked_function_arn,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "module": __name__,
            }
    """,
}


# ---------------------------------------------------------------------------------------- helpers
def write_handlers(root: Path) -> None:
    for name, source in HANDLERS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "app.py").write_text(textwrap.dedent(source))


def function(code_root: Path, directory: str, events: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "CodeUri": str(code_root / directory),
            "Handler": "app.lambda_handler",
            "Events": events,
            **properties,
        },
    }


def http_event(method: str, path: str) -> dict[str, Any]:
    return {"Type": "HttpApi", "Properties": {"ApiId": {"Ref": "Api"}, "Method": method, "Path": path}}


def queue(dead_letter: str | None = None, max_receive_count: int = 2) -> dict[str, Any]:
    properties: dict[str, Any] = {"VisibilityTimeout": 30}
    if dead_letter:
        properties["RedrivePolicy"] = {
            "deadLetterTargetArn": {"Fn::GetAtt": [dead_letter, "Arn"]},
            "maxReceiveCount": max_receive_count,
        }
    return {"Type": "AWS::SQS::Queue", "Properties": properties}


def router_template(code_root: Path) -> dict[str, Any]:
    return {
        "Globals": {
            "Function": {
                "Timeout": 30,
                "MemorySize": 256,
                "Environment": {
                    "Variables": {
                        "ROUTER_TEST_SHARED": "same-for-all",
                        "ROUTER_TEST_WORK_QUEUE": {"Ref": "WorkQueue"},
                        "PUBLIC_WEBHOOK_BASE_URL": "",
                    }
                },
            }
        },
        "Resources": {
            "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": BUCKET}},
            "WorkQueue": queue("WorkDeadLetterQueue", max_receive_count=5),
            "WorkDeadLetterQueue": queue(),
            "PoisonQueue": queue("PoisonDeadLetterQueue", max_receive_count=2),
            "PoisonDeadLetterQueue": queue(),
            "ImportDeadLetterQueue": queue(),
            "Api": {"Type": "AWS::Serverless::HttpApi"},
            "ImportFunction": function(
                code_root,
                "importer",
                {
                    "CsvUploaded": {
                        "Type": "S3",
                        "Properties": {
                            "Bucket": {"Ref": "Bucket"},
                            "Events": "s3:ObjectCreated:*",
                            "Filter": {
                                "S3Key": {
                                    "Rules": [
                                        {"Name": "prefix", "Value": "imports/"},
                                        {"Name": "suffix", "Value": ".csv"},
                                    ]
                                }
                            },
                        },
                    }
                },
                EventInvokeConfig={
                    "MaximumRetryAttempts": 1,
                    "DestinationConfig": {
                        "OnFailure": {
                            "Type": "SQS",
                            "Destination": {"Fn::GetAtt": ["ImportDeadLetterQueue", "Arn"]},
                        }
                    },
                },
            ),
            "WorkerFunction": function(
                code_root,
                "worker",
                {
                    "Work": {
                        "Type": "SQS",
                        "Properties": {
                            "Queue": {"Fn::GetAtt": ["WorkQueue", "Arn"]},
                            "BatchSize": 10,
                            "MaximumBatchingWindowInSeconds": 1,
                            "FunctionResponseTypes": ["ReportBatchItemFailures"],
                            # One poller, so that a batch holds every message sent together.
                            "ScalingConfig": {"MaximumConcurrency": 1},
                        },
                    }
                },
            ),
            "PoisonFunction": function(
                code_root,
                "poison",
                {"Poison": {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["PoisonQueue", "Arn"]}}}},
            ),
            "WebFunction": function(
                code_root,
                "web",
                {
                    "Status": http_event("POST", "/twilio/status"),
                    "Redeem": http_event("POST", "/codes/{code}/redeem"),
                    "Files": http_event("GET", "/files/{proxy+}"),
                    "Boom": http_event("GET", "/boom"),
                    "Simple": http_event("GET", "/simple"),
                    "Text": http_event("GET", "/text"),
                },
            ),
            "TickFunction": function(
                code_root,
                "tick",
                {"Tick": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}},
            ),
            "ContextFunction": function(code_root, "context", {}, Timeout=3),
            "LogsFunction": function(code_root, "logs", {}),
        },
    }


def create_resources(template: LocalStackTemplate, endpoint: str) -> None:
    """What resources.py does for the product; created directly so that this test stands alone."""
    kwargs = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    s3, sqs = boto3.client("s3", **kwargs), boto3.client("sqs", **kwargs)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    queues = template.of_type("AWS::SQS::Queue")
    for logical_id in sorted(queues, key=lambda lid: "RedrivePolicy" in queues[lid]["Properties"]):
        properties = template.resolve(queues[logical_id]["Properties"])
        attributes = {"VisibilityTimeout": str(properties["VisibilityTimeout"])}
        if "RedrivePolicy" in properties:
            attributes["RedrivePolicy"] = json.dumps(properties["RedrivePolicy"])
        sqs.create_queue(QueueName=template.physical_name(logical_id), Attributes=attributes)


def received(logical_id: str) -> list[Any]:
    """Events a fake handler has received (empty until the router has loaded it)."""
    module = sys.modules.get(f"smsinvite_fn_{logical_id}")
    return list(module.EVENTS) if module else []


def wait_until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def shape_problems(
    actual: Any, sample: Any, path: str = "", *, maps=frozenset(), optional=frozenset()
) -> list[str]:
    """Where `actual` differs from AWS's sample in keys or value types.

    `maps` are paths whose objects are free-form maps (headers...): their entries are compared with the
    sample's first entry. `optional` are paths AWS sends only in some cases.
    """
    here = path or "$"
    if isinstance(sample, dict):
        if not isinstance(actual, dict):
            return [f"{here}: {type(actual).__name__} where AWS has an object"]
        if path in maps:
            if not sample:
                return []
            prototype = next(iter(sample.values()))
            return [
                problem
                for value in actual.values()
                for problem in shape_problems(value, prototype, f"{path}.*", maps=maps, optional=optional)
            ]
        problems = []
        for key in [*sample, *(k for k in actual if k not in sample)]:
            child = f"{path}.{key}" if path else key
            if key not in actual:
                problems += [] if child in optional else [f"{child}: missing"]
            elif key not in sample:
                problems += [] if child in optional else [f"{child}: not in AWS's sample"]
            else:
                problems += shape_problems(actual[key], sample[key], child, maps=maps, optional=optional)
        return problems
    if isinstance(sample, list):
        if not isinstance(actual, list):
            return [f"{here}: {type(actual).__name__} where AWS has a list"]
        if not sample:
            return []
        return [
            problem
            for item in actual
            for problem in shape_problems(item, sample[0], f"{path}[]", maps=maps, optional=optional)
        ]
    if type(actual) is not type(sample):
        return [f"{here}: {type(actual).__name__} where AWS has {type(sample).__name__}"]
    return []


def aws_sample(name: str) -> Any:
    return json.loads((AWS_SAMPLES / name).read_text())


# --------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    yield f"http://{host}:{port}"
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def aws(moto_endpoint):
    kwargs = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    return {"s3": boto3.client("s3", **kwargs), "sqs": boto3.client("sqs", **kwargs)}


@pytest.fixture(scope="module")
def template(moto_endpoint, tmp_path_factory):
    code_root = tmp_path_factory.mktemp("functions")
    write_handlers(code_root)
    loaded = LocalStackTemplate(
        template=router_template(code_root), sqs_endpoint=moto_endpoint, stack_name=STACK
    )
    create_resources(loaded, moto_endpoint)
    return loaded


@pytest.fixture(scope="module")
def router(template, moto_endpoint):
    with Router(
        template,
        aws_endpoint=moto_endpoint,
        sqs_retry_delay=1,
        async_retry_delay=1,
        schedule_interval_override=0.3,
    ) as running:
        yield running


def queue_url(aws, template, logical_id: str) -> str:
    return aws["sqs"].get_queue_url(QueueName=template.physical_name(logical_id))["QueueUrl"]


def s3_keys_received() -> list[str]:
    return [event["Records"][0]["s3"]["object"]["key"] for event in received("ImportFunction")]


# ----------------------------------------------------------------------------------------------- S3
def test_s3_put_is_delivered_with_aws_shape_and_encoded_key(router, aws):
    key = "imports/c1/my list (1)+ä.csv"
    put = aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"phone\n+15005550006\n")

    router.drain(timeout=10)

    encoded = "imports/c1/my+list+%281%29%2B%C3%A4.csv"
    events = [e for e in received("ImportFunction") if e["Records"][0]["s3"]["object"]["key"] == encoded]
    assert len(events) == 1
    event = events[0]
    assert shape_problems(event, aws_sample("s3-put.json")) == []
    record = event["Records"][0]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["configurationId"] == "CsvUploaded"
    assert record["s3"]["bucket"] == {
        "name": BUCKET,
        "ownerIdentity": record["s3"]["bucket"]["ownerIdentity"],
        "arn": f"arn:aws:s3:::{BUCKET}",
    }
    s3_object = record["s3"]["object"]
    assert s3_object["size"] == len(b"phone\n+15005550006\n")
    assert s3_object["eTag"] == put["ETag"].strip('"')
    assert s3_object["versionId"] == put["VersionId"]
    # The handler gets the real key back the way AWS documents it.
    assert aws["s3"].get_object(Bucket=BUCKET, Key=unquote_plus(s3_object["key"]))["Body"].read()


def test_s3_key_encoding_keeps_slashes_and_form_encodes_the_rest():
    assert encode_s3_event_key("imports/c1/my list (1)+ä.csv") == "imports/c1/my+list+%281%29%2B%C3%A4.csv"
    assert encode_s3_event_key("imports/a=b&c.csv") == "imports/a%3Db%26c.csv"


def test_s3_prefix_and_suffix_filters_both_apply(router, aws):
    for key in ("imports/c2/list.csv", "imports/c2/list.txt", "panels/c2/list.csv"):
        aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"phone\n")

    router.drain(timeout=10)

    keys = s3_keys_received()
    assert "imports/c2/list.csv" in keys
    assert "imports/c2/list.txt" not in keys
    assert "panels/c2/list.csv" not in keys


def test_s3_test_event_is_never_delivered(router, aws):
    before = len(router.invocations_of("ImportFunction"))
    # Re-writing the configuration makes S3 (and moto) send another s3:TestEvent.
    configuration = aws["s3"].get_bucket_notification_configuration(Bucket=BUCKET)
    configuration.pop("ResponseMetadata")
    aws["s3"].put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=configuration)

    router.drain(timeout=10)

    assert len(router.invocations_of("ImportFunction")) == before
    assert all("Records" in event for event in received("ImportFunction"))


def test_failing_s3_event_is_retried_then_sent_to_the_on_failure_destination(router, aws, template):
    key = "imports/c3/explode.csv"
    aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"phone\n")

    router.drain(timeout=15)

    assert s3_keys_received().count(key) == 2  # the first attempt and MaximumRetryAttempts: 1
    messages = aws["sqs"].receive_message(
        QueueUrl=queue_url(aws, template, "ImportDeadLetterQueue"), WaitTimeSeconds=1
    )["Messages"]
    failure = json.loads(messages[0]["Body"])
    assert failure["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 2
    assert failure["requestPayload"]["Records"][0]["s3"]["object"]["key"] == key
    assert failure["responsePayload"]["errorType"] == "RuntimeError"


# ---------------------------------------------------------------------------------------------- SQS
def test_sqs_batch_has_aws_record_shape(router, aws, template):
    url = queue_url(aws, template, "WorkQueue")
    marker = str(uuid.uuid4())
    aws["sqs"].send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"marker": marker}),
        MessageAttributes={"myAttribute": {"DataType": "String", "StringValue": "myValue"}},
    )

    def record_with_marker():
        for event in received("WorkerFunction"):
            for record in event["Records"]:
                if marker in record["body"]:
                    return event, record
        return None

    event, record = wait_until(record_with_marker)
    sample = aws_sample("sqs-receive.json")
    problems = shape_problems(
        event,
        sample,
        maps={"Records[].messageAttributes"},
        optional={"Records[].md5OfMessageAttributes"},
    )
    assert problems == []
    documented = sample["Records"][0]["messageAttributes"]["myAttribute"]
    assert record["messageAttributes"]["myAttribute"] == documented
    assert record["eventSourceARN"] == template.arn("WorkQueue")
    assert record["eventSource"] == "aws:sqs"
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_partial_batch_failure_redelivers_only_the_failed_record(router, aws, template):
    url = queue_url(aws, template, "WorkQueue")
    run = str(uuid.uuid4())
    bodies = {
        "ok-1": {"run": run, "name": "ok-1"},
        "fails-once": {"run": run, "name": "fails-once", "fail_times": 1},
        "ok-2": {"run": run, "name": "ok-2"},
    }
    aws["sqs"].send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": name, "MessageBody": json.dumps(body)} for name, body in bodies.items()],
    )

    def deliveries() -> list[tuple[str, str, int]]:
        found = []
        for batch_index, event in enumerate(received("WorkerFunction")):
            for record in event["Records"]:
                body = json.loads(record["body"])
                if body.get("run") == run:
                    found.append((body["name"], record["attributes"]["ApproximateReceiveCount"], batch_index))
        return found

    wait_until(lambda: [d for d in deliveries() if d[0] == "fails-once" and d[1] == "2"])
    router.drain(timeout=10)

    names = [name for name, _, _ in deliveries()]
    assert sorted(names) == ["fails-once", "fails-once", "ok-1", "ok-2"]
    first_batch = [d for d in deliveries() if d[1] == "1"]
    assert len({batch for _, _, batch in first_batch}) == 1, "the three messages arrived in one batch"
    assert [d for d in deliveries() if d[1] == "2"][0][0] == "fails-once"
    assert aws["sqs"].receive_message(QueueUrl=queue_url(aws, template, "WorkDeadLetterQueue")).get(
        "Messages"
    ) is None


def test_record_that_always_fails_lands_in_the_dlq_after_max_receive_count(router, aws, template):
    marker = str(uuid.uuid4())
    aws["sqs"].send_message(QueueUrl=queue_url(aws, template, "PoisonQueue"), MessageBody=marker)
    dead_letters = queue_url(aws, template, "PoisonDeadLetterQueue")

    def in_dead_letter_queue():
        messages = aws["sqs"].receive_message(QueueUrl=dead_letters, WaitTimeSeconds=1).get("Messages", [])
        return [m for m in messages if m["Body"] == marker]

    assert wait_until(in_dead_letter_queue, timeout=15)
    attempts = [r for e in received("PoisonFunction") for r in e["Records"] if r["body"] == marker]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in attempts] == ["1", "2"]  # maxReceiveCount: 2
    assert all(i.error and i.error.startswith("ValueError") for i in router.invocations_of("PoisonFunction"))


# ----------------------------------------------------------------------------------------- HTTP API
def send(router: Router, method: str, target: str, body: bytes = b"", headers: list[tuple[str, str]] = ()):
    connection = http.client.HTTPConnection("127.0.0.1", router.http_port, timeout=5)
    connection.putrequest(method, target)
    for name, value in headers:
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response, payload


def test_form_post_becomes_a_v2_event_with_base64_body_and_raw_query(router):
    form = b"MessageSid=SM123&MessageStatus=delivered&To=%2B15005550006"
    target = "/codes/abc%20x/redeem?To=%2B15005550006&a=1&a=2&note=caf%C3%A9"
    response, payload = send(
        router,
        "POST",
        target,
        form,
        [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("User-Agent", "TwilioProxy/1.1"),
            ("X-Dup", "one"),
            ("X-Dup", "two"),
            ("Cookie", "session=abc; theme=dark"),
        ],
    )

    assert response.status == 201
    event = received("WebFunction")[-1]
    assert event["routeKey"] == "POST /codes/{code}/redeem"
    assert event["rawPath"] == "/codes/abc%20x/redeem"
    assert event["rawQueryString"] == "To=%2B15005550006&a=1&a=2&note=caf%C3%A9"
    assert event["queryStringParameters"] == {"To": "+15005550006", "a": "1,2", "note": "café"}
    assert event["pathParameters"] == {"code": "abc x"}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert event["headers"]["x-dup"] == "one,two"
    assert event["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert "cookie" not in event["headers"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == form
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/codes/abc%20x/redeem",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "TwilioProxy/1.1",
    }
    assert context["stage"] == "$default"
    assert context["routeKey"] == "POST /codes/{code}/redeem"
    problems = shape_problems(
        event,
        aws_sample("http-api-v2.json"),
        maps={"headers", "queryStringParameters", "pathParameters", "stageVariables"},
        optional={"requestContext.authentication", "requestContext.authorizer", "stageVariables"},
    )
    assert problems == []


def test_json_post_body_is_passed_as_text(router):
    send(router, "POST", "/twilio/status", b'{"a": 1}', [("Content-Type", "application/json")])

    event = received("WebFunction")[-1]
    assert event["routeKey"] == "POST /twilio/status"
    assert event["isBase64Encoded"] is False
    assert event["body"] == '{"a": 1}'
    assert "queryStringParameters" not in event and "pathParameters" not in event


def test_handler_response_is_mapped_to_http(router):
    session = requests.Session()
    session.trust_env = False
    base = router.base_url

    full = session.post(f"{base}/twilio/status", data={"MessageStatus": "sent"})
    assert full.status_code == 201
    assert full.headers["content-type"] == "text/xml"
    assert full.text == "<Response></Response>"
    assert full.raw.headers.getlist("Set-Cookie") == ["session=abc; HttpOnly", "seen=1"]
    assert full.headers["apigw-requestid"]

    binary = session.get(f"{base}/files/a/b/c.bin")
    assert binary.content == b"\x00\x01binary"
    assert received("WebFunction")[-1]["pathParameters"] == {"proxy": "a/b/c.bin"}

    simple = session.get(f"{base}/simple")
    assert (simple.status_code, simple.headers["content-type"], simple.json()) == (
        200,
        "application/json",
        {"codes": ["abc"]},
    )
    assert session.get(f"{base}/text").text == "plain words"


def test_unknown_route_is_404_and_handler_error_is_500(router):
    session = requests.Session()
    session.trust_env = False

    for method, path in (("GET", "/nope"), ("GET", "/twilio/status"), ("POST", "/twilio/status/")):
        response = session.request(method, f"{router.base_url}{path}")
        assert (response.status_code, response.json()) == (404, {"message": "Not Found"})

    boom = session.get(f"{router.base_url}/boom")
    assert (boom.status_code, boom.json()) == (500, {"message": "Internal Server Error"})
    assert router.invocations_of("WebFunction")[-1].error == "RuntimeError: handler bug"


# ---------------------------------------------------------------------------------------------- logs
def test_a_functions_log_holds_what_lambda_would_write_including_the_runtimes_error_record(router):
    mark = router.logs.mark()

    with pytest.raises(ValueError):
        router.invoke("LogsFunction", {})

    [invocation] = router.invocations_of("LogsFunction")
    lines, dropped = router.logs.since(mark)
    assert not dropped
    assert {(line.function, line.request_id) for line in lines} == {("LogsFunction", invocation.request_id)}
    powertools, library, runtime = (line.text for line in lines)
    # The Powertools Logger's JSON, as it writes it
    assert (json.loads(powertools)["message"], json.loads(powertools)["step"]) == ("handled", 1)
    # Another logger's record from WARNING up, in the runtime's format; INFO and the local stack's own are not
    assert library.startswith("[WARNING]\t") and library.endswith(f"\t{invocation.request_id}\ta library warns")
    # The runtime's record of what the handler raised: errorType, errorMessage (str()) and the stack trace
    assert runtime.startswith("[ERROR] ValueError: the handler gives up\rTraceback (most recent call last):\r")
    assert 'raise ValueError("the handler gives up")' in runtime
    assert invocation.error == "ValueError: the handler gives up"


# ----------------------------------------------------------------------------------------- schedule
def test_schedule_fires_on_its_timer_and_on_demand(router, template):
    wait_until(lambda: len(router.invocations_of("TickFunction", "Schedule")) >= 2, timeout=5)

    router.fire_schedule("TickFunction")

    event = received("TickFunction")[-1]
    assert shape_problems(event, aws_sample("eventbridge-scheduled.json"), maps={"detail"}) == []
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == [f"arn:aws:events:us-east-1:123456789012:rule/{STACK}-TickFunctionTick"]


def test_schedule_expressions_become_intervals():
    assert schedule_interval_seconds("rate(1 minute)") == 60
    assert schedule_interval_seconds("rate(5 minutes)") == 300
    assert schedule_interval_seconds("rate(2 hours)") == 7200
    assert schedule_interval_seconds("rate(1 day)") == 86400
    assert schedule_interval_seconds("cron(0/15 * * * ? *)") == 900
    assert schedule_interval_seconds("cron(0 9 * * ? *)") == 86400


# ------------------------------------------------------------------------------ context, environment
def test_context_remaining_time_counts_down_from_the_timeout(router):
    router.timeout_override["ContextFunction"] = 0.5
    try:
        result = router.invoke("ContextFunction", {"sleep": 0.2})
        expired = router.invoke("ContextFunction", {"sleep": 0.6})
    finally:
        router.timeout_override.pop("ContextFunction")

    assert 400 < result["first"] <= 500
    assert 0 < result["second"] <= result["first"] - 150
    assert expired["second"] == 0
    assert result["function_name"] == f"{STACK}-ContextFunction"
    assert result["function_version"] == "$LATEST"
    assert result["invoked_function_arn"] == (
        f"arn:aws:lambda:us-east-1:123456789012:function:{STACK}-ContextFunction"
    )
    assert result["memory_limit_in_mb"] == 256
    assert str(uuid.UUID(result["aws_request_id"])) == result["aws_request_id"]
    assert result["aws_request_id"] != expired["aws_request_id"]
    assert result["log_group_name"] == f"/aws/lambda/{STACK}-ContextFunction"
    assert "[$LATEST]" in result["log_stream_name"]
    assert result["module"] == expired["module"] == "smsinvite_fn_ContextFunction"
    direct = router.invocations_of("ContextFunction", "Direct")
    assert len(direct) == 2 and direct[0].duration >= 0.2 and direct[0].ok


def test_environment_is_applied_once_for_all_functions(router, template, moto_endpoint):
    assert os.environ["AWS_REGION"] == "us-east-1"
    assert os.environ["AWS_ENDPOINT_URL"] == moto_endpoint
    assert os.environ["ROUTER_TEST_SHARED"] == "same-for-all"
    assert os.environ["ROUTER_TEST_WORK_QUEUE"] == template.queue_url("WorkQueue")
    assert os.environ["PUBLIC_WEBHOOK_BASE_URL"] == router.base_url == f"http://127.0.0.1:{router.http_port}"


def test_conflicting_environment_fails_at_start(moto_endpoint, tmp_path):
    write_handlers(tmp_path)
    conflicting = {
        "Resources": {
            "One": function(tmp_path, "tick", {}, Environment={"Variables": {"ROUTER_TEST_MODE": "a"}}),
            "Two": function(tmp_path, "tick", {}, Environment={"Variables": {"ROUTER_TEST_MODE": "b"}}),
        }
    }
    router = Router(
        LocalStackTemplate(template=conflicting, stack_name="conflict"), aws_endpoint=moto_endpoint
    )

    with pytest.raises(RouterConfigError, match=r"ROUTER_TEST_MODE \(One and Two\)"):
        router.start()
    assert "ROUTER_TEST_MODE" not in os.environ


def test_stop_is_prompt_and_restores_the_environment(moto_endpoint, aws, tmp_path):
    write_handlers(tmp_path)
    aws["sqs"].create_queue(QueueName="stop-test-Idle")
    small = {
        "Resources": {
            "Idle": {"Type": "AWS::SQS::Queue"},
            "Poller": function(
                tmp_path,
                "worker",
                {"Work": {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["Idle", "Arn"]}}}},
                Environment={"Variables": {"ROUTER_TEST_STOP": "set"}},
            ),
            "Ticker": function(
                tmp_path, "tick", {"T": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 day)"}}}
            ),
        }
    }
    router = Router(LocalStackTemplate(template=small, stack_name="stop-test"), aws_endpoint=moto_endpoint)
    router.start()
    assert os.environ["ROUTER_TEST_STOP"] == "set"
    time.sleep(0.3)

    started = time.monotonic()
    router.stop()

    assert time.monotonic() - started < 2.5
    assert "ROUTER_TEST_STOP" not in os.environ
    threads = [t for p in router.sqs_pollers for t in p.threads] + [s.thread for s in router.schedules]
    assert not any(t is not None and t.is_alive() for t in threads)
