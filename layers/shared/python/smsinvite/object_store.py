"""S3 adapter: objects are read as a stream of chunks, never whole."""

from __future__ import annotations

from collections.abc import Iterator

from smsinvite import aws_clients

CHUNK_BYTES = 256 * 1024


def object_chunks(bucket: str, key: str, version_id: str | None = None) -> Iterator[bytes]:
    request = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    body = aws_clients.client("s3").get_object(**request)["Body"]
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()
