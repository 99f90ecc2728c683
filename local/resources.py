"""Create the template's tables, bucket, queues and the Twilio secret on the local services.

Every resource comes from template.yaml through `LocalStackTemplate`; nothing here lists a table,
a queue or a bucket by name. Running `create_resources` again is harmless: what exists is kept
and its settings are applied again.

Resource types that have no local counterpart are skipped on purpose (`SKIPPED_TYPES` says why);
a type that is neither created nor skipped raises, so a new kind of resource in the template cannot
be silently missing locally. Likewise a property we do not translate raises, unless it is listed
as ignored with its reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any

from botocore.exceptions import ClientError

from local.services import aws_client
from local.template import LocalStackTemplate

SKIPPED_TYPES = {
    "AWS::Serverless::Function": "the router runs each handler in-process",
    "AWS::Serverless::LayerVersion": "the package is installed in the venv (editable)",
    "AWS::Serverless::HttpApi": "the router serves the HTTP API routes on 127.0.0.1",
    "AWS::Logs::LogGroup": "logs go to the local process's output",
    "AWS::CloudWatch::Alarm": "no CloudWatch locally; tests read DLQ depths directly",
    "AWS::SNS::Topic": "it only carries alarm notifications",
    "AWS::SNS::Subscription": "it only carries alarm notifications",
    "AWS::S3::BucketPolicy": "it only denies non-TLS access, and the local endpoint is plain HTTP on loopback",
}

# Properties that are accepted and deliberately not applied locally.
_IGNORED_TABLE_PROPERTIES = {
    "PointInTimeRecoverySpecification": "DynamoDB Local does not support PITR",
    "SSESpecification": "encryption at rest has no meaning for an in-memory emulator",
    "TableName": "the local physical name comes from LocalStackTemplate.physical_name",
    "Tags": "not needed locally",
    "DeletionProtectionEnabled": "local tables live as long as the process",
    "ContributorInsightsSpecification": "no CloudWatch locally",
}
_IGNORED_BUCKET_PROPERTIES = {
    "BucketName": "the local physical name comes from LocalStackTemplate.physical_name",
    "Tags": "not needed locally",
    "NotificationConfiguration": "the router delivers S3 events from the functions' Events",
}
_IGNORED_QUEUE_PROPERTIES = {
    "QueueName": "the local physical name comes from LocalStackTemplate.physical_name",
    "Tags": "not needed locally",
}
# CloudFormation property -> SQS attribute (same name, value as a string).
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)
_QUEUE_JSON_ATTRIBUTES = ("RedrivePolicy", "RedriveAllowPolicy")
_QUEUE_CREATE_ONLY_ATTRIBUTES = ("FifoQueue",)


@dataclass(frozen=True)
class LocalResources:
    """What was created, by logical id: table names, bucket names, queue URLs; and the secret's name."""

    tables: dict[str, str]
    buckets: dict[str, str]
    queues: dict[str, str]
    twilio_auth_token_secret: str


def create_resources(
    template: LocalStackTemplate,
    *,
    aws_endpoint: str,
    dynamodb_endpoint: str,
    twilio_auth_token: str,
) -> LocalResources:
    """Create (or bring up to date) every local resource the template declares."""
    _check_every_type_is_handled(template)
    dynamodb = aws_client("dynamodb", dynamodb_endpoint)
    s3 = aws_client("s3", aws_endpoint)
    sqs = aws_client("sqs", aws_endpoint)
    secrets = aws_client("secretsmanager", aws_endpoint)

    tables = {
        logical_id: create_table(dynamodb, template, logical_id)
        for logical_id in template.of_type("AWS::DynamoDB::Table")
    }
    buckets = {
        logical_id: create_bucket(s3, template, logical_id) for logical_id in template.of_type("AWS::S3::Bucket")
    }
    queues = {
        logical_id: create_queue(sqs, template, logical_id) for logical_id in _queues_in_dependency_order(template)
    }
    for logical_id in template.of_type("AWS::SecretsManager::Secret"):
        create_generated_secret(secrets, template.physical_name(logical_id))
    secret_name = template.parameters["TwilioAuthTokenSecretName"]
    put_secret(secrets, secret_name, twilio_auth_token)
    return LocalResources(tables=tables, buckets=buckets, queues=queues, twilio_auth_token_secret=secret_name)


def _check_every_type_is_handled(template: LocalStackTemplate) -> None:
    handled = {"AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue", "AWS::SecretsManager::Secret"}
    unknown = {res["Type"] for res in template.resources.values()} - handled - set(SKIPPED_TYPES)
    if unknown:
        raise NotImplementedError(f"the local stack neither creates nor skips {sorted(unknown)}")


def _properties(template: LocalStackTemplate, logical_id: str, known: set[str], ignored: dict) -> dict[str, Any]:
    props = template.resolve(template.resources[logical_id].get("Properties", {}))
    unknown = set(props) - known - set(ignored)
    if unknown:
        raise NotImplementedError(f"{logical_id}: the local stack does not translate {sorted(unknown)}")
    return props


# ---------------------------------------------------------------------- DynamoDB
def table_definition(template: LocalStackTemplate, logical_id: str) -> dict[str, Any]:
    """The CreateTable request for a template table (also what tests compare against)."""
    props = _properties(
        template,
        logical_id,
        {
            "BillingMode",
            "AttributeDefinitions",
            "KeySchema",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "ProvisionedThroughput",
            "StreamSpecification",
            "TimeToLiveSpecification",
        },
        _IGNORED_TABLE_PROPERTIES,
    )
    request: dict[str, Any] = {
        "TableName": template.physical_name(logical_id),
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if "ProvisionedThroughput" in props:
        request["ProvisionedThroughput"] = _throughput(props["ProvisionedThroughput"])
    if props.get("GlobalSecondaryIndexes"):
        request["GlobalSecondaryIndexes"] = [_index(index) for index in props["GlobalSecondaryIndexes"]]
    if props.get("LocalSecondaryIndexes"):
        request["LocalSecondaryIndexes"] = [_index(index) for index in props["LocalSecondaryIndexes"]]
    if props.get("StreamSpecification"):
        request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    return request


def _index(index: dict[str, Any]) -> dict[str, Any]:
    result = {"IndexName": index["IndexName"], "KeySchema": index["KeySchema"], "Projection": index["Projection"]}
    if "ProvisionedThroughput" in index:
        result["ProvisionedThroughput"] = _throughput(index["ProvisionedThroughput"])
    return result


def _throughput(throughput: dict[str, Any]) -> dict[str, int]:
    return {key: int(value) for key, value in throughput.items()}


def create_table(dynamodb, template: LocalStackTemplate, logical_id: str) -> str:
    request = table_definition(template, logical_id)
    name = request["TableName"]
    try:
        dynamodb.create_table(**request)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})

    ttl = template.resolve(template.resources[logical_id]["Properties"].get("TimeToLiveSpecification"))
    if ttl and ttl.get("Enabled"):
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
    return name


# ---------------------------------------------------------------------- S3
def create_bucket(s3, template: LocalStackTemplate, logical_id: str) -> str:
    props = _properties(
        template,
        logical_id,
        {
            "BucketEncryption",
            "PublicAccessBlockConfiguration",
            "OwnershipControls",
            "VersioningConfiguration",
            "LifecycleConfiguration",
        },
        _IGNORED_BUCKET_PROPERTIES,
    )
    name = template.physical_name(logical_id)
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise
        s3.create_bucket(Bucket=name)  # us-east-1: no LocationConstraint

    if "OwnershipControls" in props:
        ownership = {"Rules": props["OwnershipControls"]["Rules"]}
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=ownership)
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "BucketEncryption" in props:
        rules = [
            _encryption_rule(rule) for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]}
        )
    if "LifecycleConfiguration" in props:
        # moto stores the rules (nothing expires locally), so GetBucketLifecycleConfiguration shows them.
        rules = [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    return name


def _encryption_rule(rule: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if "ServerSideEncryptionByDefault" in rule:
        result["ApplyServerSideEncryptionByDefault"] = rule["ServerSideEncryptionByDefault"]
    if "BucketKeyEnabled" in rule:
        result["BucketKeyEnabled"] = bool(rule["BucketKeyEnabled"])
    return result


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the shape of the S3 API."""
    known = {
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "NoncurrentVersionExpiration",
        "NoncurrentVersionExpirationInDays",
        "AbortIncompleteMultipartUpload",
    }
    unknown = set(rule) - known
    if unknown:
        raise NotImplementedError(
            f"lifecycle rule {rule.get('Id')}: the local stack does not translate {sorted(unknown)}"
        )
    result: dict[str, Any] = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        result["ID"] = rule["Id"]
    if "ExpirationInDays" in rule:
        result["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        days = rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        result["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(days)}
    if "NoncurrentVersionExpirationInDays" in rule:
        result["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(rule["NoncurrentVersionExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        result["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(days)}
    return result


# ---------------------------------------------------------------------- SQS
def queue_attributes(template: LocalStackTemplate, logical_id: str) -> dict[str, str]:
    """The SQS attributes a template queue declares, as SetQueueAttributes takes them."""
    props = _properties(
        template,
        logical_id,
        set(_QUEUE_ATTRIBUTES) | set(_QUEUE_JSON_ATTRIBUTES) | set(_QUEUE_CREATE_ONLY_ATTRIBUTES),
        _IGNORED_QUEUE_PROPERTIES,
    )
    attributes = {}
    for key in _QUEUE_ATTRIBUTES + _QUEUE_CREATE_ONLY_ATTRIBUTES:
        if key in props:
            value = props[key]
            attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
    for key in _QUEUE_JSON_ATTRIBUTES:
        if key in props:
            attributes[key] = json.dumps(props[key])
    return attributes


def _queues_in_dependency_order(template: LocalStackTemplate) -> list[str]:
    """Queues after the queues they reference (a DLQ before the queue that redrives to it)."""
    queue_ids = set(template.of_type("AWS::SQS::Queue"))
    graph = {
        logical_id: _references(template.resources[logical_id].get("Properties", {})) & queue_ids
        for logical_id in sorted(queue_ids)
    }
    return list(TopologicalSorter(graph).static_order())


def _references(node: Any) -> set[str]:
    """Logical ids named by Ref, Fn::GetAtt or ${...} in Fn::Sub, anywhere in an unresolved node."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text)}
                if not isinstance(value, str):
                    found |= _references(value[1])
            else:
                found |= _references(value)
    return found


def create_queue(sqs, template: LocalStackTemplate, logical_id: str) -> str:
    attributes = queue_attributes(template, logical_id)
    create_only = {key: attributes.pop(key) for key in _QUEUE_CREATE_ONLY_ATTRIBUTES if key in attributes}
    url = sqs.create_queue(QueueName=template.physical_name(logical_id), Attributes=create_only)["QueueUrl"]
    if attributes:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


# ---------------------------------------------------------------------- Secrets Manager
def create_generated_secret(secrets, name: str) -> None:
    """A secret the template generates (GenerateSecretString): created once, then kept, as in AWS."""
    import secrets as random_source

    try:
        secrets.create_secret(Name=name, SecretString=random_source.token_urlsafe(36))
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceExistsException":
            raise


def put_secret(secrets, name: str, value: str) -> None:
    try:
        secrets.create_secret(Name=name, SecretString=value)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceExistsException":
            raise
        if secrets.get_secret_value(SecretId=name)["SecretString"] != value:
            secrets.put_secret_value(SecretId=name, SecretString=value)
