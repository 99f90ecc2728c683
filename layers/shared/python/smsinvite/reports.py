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
    """Rejected rows are written in parts, one per checkpoint, then joined into one report."""

    def __init__(self, bucket: str, import_id: str, report_key: str) -> None:
        self.bucket = bucket
        self.import_id = import_id
        self.report_key = report_key

    def _part_key(self, index: int) -> str:
        return f"{REPORTS_PREFIX}imports/.parts/{self.import_id}/{index:06d}.csv"

    def write_part(self, index: int, rejected: list[Rejected]) -> None:
        # The key is fixed by the part's index, so a replayed checkpoint overwrites, never duplicates.
        body = csv_text((r.row_number, r.value, r.reason) for r in rejected)
        aws_clients.client("s3").put_object(Bucket=self.bucket, Key=self._part_key(index), Body=body.encode("utf-8"))

    def assemble(self, parts: int) -> str:
        """Join the parts into the report, streaming; returns the report's key."""
        s3 = aws_clients.client("s3")
        s3.upload_fileobj(_JoinedParts(self._chunks(parts)), self.bucket, self.report_key)
        for index in range(parts):
            s3.delete_object(Bucket=self.bucket, Key=self._part_key(index))
        return self.report_key

    def _chunks(self, parts: int) -> Iterator[bytes]:
        s3 = aws_clients.client("s3")
        yield csv_text([REJECTED_HEADER]).encode("utf-8")
        for index in range(parts):
            body = s3.get_object(Bucket=self.bucket, Key=self._part_key(index))["Body"]
            yield from body.iter_chunks(256 * 1024)


class _JoinedParts(io.RawIOBase):
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
