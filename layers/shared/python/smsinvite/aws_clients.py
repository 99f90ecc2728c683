"""boto3 clients, one per service and endpoint per container.

In AWS the endpoint is always the default. Locally it comes from AWS_ENDPOINT_URL(_<SERVICE>),
as botocore reads it; keying the cache on it means a process that meets a new local stack (tests
start several) never talks to a stopped one.
"""

from __future__ import annotations

import functools
import logging
import os

import boto3
from aws_lambda_powertools.utilities.parameters import SecretsProvider

# At DEBUG botocore logs whole requests and responses: numbers, message bodies, the auth token.
logging.getLogger("botocore").setLevel(logging.INFO)


def endpoint_for(service: str) -> str | None:
    specific = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    return os.environ.get(specific) or os.environ.get("AWS_ENDPOINT_URL") or None


def client(service: str):
    return _client(service, endpoint_for(service))


@functools.lru_cache(maxsize=16)
def _client(service: str, endpoint_url: str | None):
    return boto3.client(service, endpoint_url=endpoint_url)


def secrets_provider() -> SecretsProvider:
    return _secrets_provider(endpoint_for("secretsmanager"))


@functools.lru_cache(maxsize=4)
def _secrets_provider(endpoint_url: str | None) -> SecretsProvider:
    return SecretsProvider(boto3_client=_client("secretsmanager", endpoint_url))
