"""S3 adapter: objects are read as a stream of chunks, never whole."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from botocore.exceptions import ClientError

from smsinvite import aws_clients

CHUNK_BYTES = 256 * 1024


def object_chunks(bucket: str, key: str, version_id: str | None = None, *, start: int = 0) -> Iterator[bytes]:
    """The object's bytes from `start` on (a range read, for a resumed import)."""
    request = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    if start:
        request["Range"] = f"bytes={start}-"
    try:
        body = aws_clients.client("s3").get_object(**request)["Body"]
    except ClientError as error:
        if _missing(error):
            raise ObjectMissing(key) from None
        if start and error.response.get("Error", {}).get("Code") == "InvalidRange":
            # A resumed read that starts at the end (the last checkpoint was the last row): S3 answers
            # 416 to "bytes=<size>-", and nothing is left to read.
            return
        raise
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def object_metadata(bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
    """The object's user metadata (x-amz-meta-*), lower-cased names without the prefix."""
    request = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    try:
        return aws_clients.client("s3").head_object(**request).get("Metadata", {})
    except ClientError as error:
        if _missing(error):
            return {}
        raise


class ObjectMissing(LookupError):
    """The object (or that version of it) is gone: deleted after it was reported."""


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchVersion")


def csv_bytes(rows: Iterable[Iterable[object]]) -> bytes:
    """A plain CSV (no formula escaping: it is read back by the importer, not by a spreadsheet)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def put_csv(bucket: str, key: str, body: bytes) -> str | None:
    """Store a CSV; returns its version id (None in an unversioned bucket)."""
    response = aws_clients.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv")
    return response.get("VersionId")
