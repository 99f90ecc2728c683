"""Report files in the bucket, under reports/ (a prefix that never triggers an import).

Cells are made safe against formula injection: a spreadsheet would run a cell that starts with
= + - @ (or a tab or CR), so such cells get a leading apostrophe. E.164 numbers start with +.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from smsinvite import aws_clients

REPORTS_PREFIX = "reports/"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter), lazily: itertools.batched before Python 3.12."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def csv_text(rows: Iterable[Iterable[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return buffer.getvalue()


@dataclass(frozen=True)
class Rejected:
    row_number: int
    value: str
    reason: str


REJECTED_HEADER = ("row", "value", "reason")


class RejectedRowsReport:
    """Rejected rows are written in parts, one per checkpoint, then joined into one report.

    A part is named by the rows it covers: those after row `after`, up to row `last`. Two runs of
    one import can race (a redelivered message and its continuation) and write parts from the same
    checkpoint that cover different spans; only one of their checkpoints is saved. A row is
    rejected, or not, for the same reason whichever run reads it, so parts never disagree. Joining
    them in order of `after`, and keeping only the rows past what the parts before covered, gives
    every rejected row exactly once, in row order.
    """

    def __init__(self, bucket: str, import_id: str, report_key: str) -> None:
        self.bucket = bucket
        self.import_id = import_id
        self.report_key = report_key

    @property
    def _parts_prefix(self) -> str:
        return f"{REPORTS_PREFIX}imports/.parts/{self.import_id}/"

    def _part_key(self, after: int, last: int) -> str:
        return f"{self._parts_prefix}{after:012d}-{last:012d}.csv"

    def write_part(self, after: int, last: int, rejected: list[Rejected]) -> None:
        # The key is fixed by the span, so a replayed checkpoint overwrites its part with the same rows.
        body = csv_text((r.row_number, r.value, r.reason) for r in rejected)
        aws_clients.client("s3").put_object(Bucket=self.bucket, Key=self._part_key(after, last), Body=body.encode("utf-8"))

    def assemble(self) -> str:
        """Join the parts into the report, streaming; returns the report's key."""
        s3 = aws_clients.client("s3")
        keys = self._part_keys()
        s3.upload_fileobj(JoinedChunks(self._chunks(keys)), self.bucket, self.report_key)
        for start in range(0, len(keys), 1000):
            s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True}
            )
        return self.report_key

    def _part_keys(self) -> list[str]:
        pages = aws_clients.client("s3").get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._parts_prefix
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _span(self, key: str) -> tuple[int, int]:
        after, last = key[len(self._parts_prefix) :].removesuffix(".csv").split("-")
        return int(after), int(last)

    def _chunks(self, keys: list[str]) -> Iterator[bytes]:
        s3 = aws_clients.client("s3")
        yield csv_text([REJECTED_HEADER]).encode("utf-8")
        covered = 0  # every rejected row up to here is written
        for key in sorted(keys, key=self._span):
            after, last = self._span(key)
            if last <= covered:
                continue
            body = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode("utf-8")
            rows = [row for row in csv.reader(io.StringIO(body, newline="")) if int(row[0]) > covered]
            rows.sort(key=lambda row: int(row[0]))
            yield _plain_csv(rows).encode("utf-8")  # the cells were made safe when the part was written
            covered = last


def _plain_csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


class JoinedChunks(io.RawIOBase):
    """A readable file over an iterator of byte chunks, so upload_fileobj can stream it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size
