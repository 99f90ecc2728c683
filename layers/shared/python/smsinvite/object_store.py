"""S3 adapter: objects are read as a stream of chunks, never whole."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import boto3

CHUNK_BYTES = 256 * 1024


@functools.lru_cache(maxsize=1)
def _s3():
    return boto3.client("s3")


def object_chunks(bucket: str, key: str, version_id: str | None = None) -> Iterator[bytes]:
    request = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    body = _s3().get_object(**request)["Body"]
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()
