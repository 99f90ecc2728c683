"""Reading recipient CSVs as a stream: encoding, delimiter, header and the phone column.

Memory stays flat: bytes come in chunks, text goes out line by line to the csv module.
"""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PHONE_HEADERS = (
    "phone", "mobile", "mobile phone", "mobile_phone", "cell", "cell phone", "msisdn", "phone_number",
    "phone number", "telefon", "handy", "mobil", "mobilnummer", "téléphone", "telephone", "portable",
    "telefoon", "mobiel", "gsm",
)
COUNTRY_HEADERS = ("country", "country_code", "region", "land", "pays")
_SNIFF_BYTES = 64 * 1024


class CsvFileError(ValueError):
    """The file as a whole cannot be read; the reason is safe to show the operator."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CsvRow:
    number: int  # 1-based data row number (the header is row 0)
    phone: str
    country: str | None
    fields: dict[str, str]


def field_name(header: str) -> str:
    """'Vorname ' -> 'vorname', 'First Name' -> 'first_name': usable as a {merge_field}."""
    text = unicodedata.normalize("NFKC", header).strip().lower()
    return re.sub(r"[^\w]+", "_", text).strip("_")


def _detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still UTF-8.
        if exc.start < len(head) - 3:
            return "cp1252"
    return "utf-8"


def decoded_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text lines with their line endings, decoded incrementally from byte chunks."""
    chunks = iter(chunks)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= _SNIFF_BYTES:
            break
    encoding = _detect_encoding(head[:_SNIFF_BYTES])
    if encoding != "utf-16" and b"\x00" in head[:_SNIFF_BYTES]:
        raise CsvFileError("binary_file", "the file is not a CSV text file")
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    pending = ""

    def feed(data: bytes, final: bool = False) -> Iterator[str]:
        nonlocal pending
        try:
            text = pending + decoder.decode(data, final)
        except UnicodeDecodeError:
            raise CsvFileError("undecodable", f"the file is not valid {encoding} text") from None
        lines = text.splitlines(keepends=True)
        pending = lines.pop() if lines and not final and not lines[-1].endswith(("\n", "\r")) else ""
        yield from lines

    yield from feed(head)
    for chunk in chunks:
        yield from feed(chunk)
    yield from feed(b"", final=True)


def _sniff_delimiter(first_line: str) -> str:
    counts = {delimiter: first_line.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_rows(chunks: Iterable[bytes], *, phone_column: str | None = None) -> Iterator[CsvRow]:
    lines = decoded_lines(chunks)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise CsvFileError("empty_file", "the file is empty")
    delimiter = _sniff_delimiter(first)
    header = next(csv.reader([first], delimiter=delimiter))
    names = [field_name(column) for column in header]
    wanted = (field_name(phone_column),) if phone_column else tuple(field_name(h) for h in PHONE_HEADERS)
    phone_index = next((i for i, name in enumerate(names) if name in wanted), None)
    if phone_index is None:
        expected = phone_column or ", ".join(PHONE_HEADERS[:6]) + ", ..."
        raise CsvFileError("no_phone_column", f"no phone column found in the header (looked for {expected})")
    country_index = next((i for i, name in enumerate(names) if name in COUNTRY_HEADERS), None)

    number = 0
    for values in csv.reader(lines, delimiter=delimiter):
        if not any(value.strip() for value in values):
            continue
        number += 1
        padded = values + [""] * (len(names) - len(values))
        fields = {
            name: padded[i].strip()
            for i, name in enumerate(names)
            if name and i not in (phone_index, country_index)
        }
        country = padded[country_index].strip() if country_index is not None else None
        yield CsvRow(number=number, phone=padded[phone_index], country=country or None, fields=fields)
