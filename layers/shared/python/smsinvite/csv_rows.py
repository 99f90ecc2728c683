"""Reading CSVs as a stream: encoding, delimiter, header, the phone column, and where each row ends.

Memory stays flat: bytes come in chunks and rows go out one at a time. Every row carries the byte
offset just past it, so an import can checkpoint there and a fresh invocation can resume with an
S3 range read from that offset, knowing the file's layout from the checkpoint.
"""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

PHONE_HEADERS = (
    "phone", "mobile", "mobile phone", "mobile_phone", "mobile number", "cell", "cell phone", "cellphone",
    "msisdn", "phone_number", "phone number", "telefon", "telefonnummer", "handy", "handynummer", "mobil",
    "mobilnummer", "téléphone", "telephone", "téléphone portable", "portable", "telefoon", "telefoonnummer",
    "mobiel", "mobiel nummer", "gsm", "gsm nummer",
)
CODE_HEADERS = ("code", "token", "invitation code", "invitation_code", "access code", "access_code", "password")
COUNTRY_HEADERS = ("country", "country_code", "country code", "region", "land", "pays", "landcode")
_SNIFF_BYTES = 64 * 1024
_NEWLINE = re.compile(r"[\r\n]")


class CsvFileError(ValueError):
    """The file as a whole cannot be read; the reason is safe to show the operator."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CsvLayout:
    """What the first bytes of a file told us; saved in a checkpoint so a resumed read needs no header."""

    encoding: str  # a codec without BOM handling: utf-8, cp1252, utf-16-le, utf-16-be
    delimiter: str
    names: tuple[str, ...]
    phone_index: int
    country_index: int | None
    data_offset: int  # byte offset of the first data row

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CsvLayout":
        return cls(**{**data, "names": tuple(data["names"])})


@dataclass(frozen=True)
class CsvRow:
    number: int  # 1-based data row number; blank lines are not rows
    phone: str
    country: str | None
    fields: dict[str, str]
    end_offset: int  # byte offset just past this row: where a resumed read starts


def field_name(header: str) -> str:
    """'Vorname ' -> 'vorname', 'First Name' -> 'first_name': usable as a {merge_field}."""
    text = unicodedata.normalize("NFKC", header).strip().lower()
    return re.sub(r"[^\w]+", "_", text).strip("_")


_COUNTRY_NAMES = frozenset(field_name(h) for h in COUNTRY_HEADERS)


def _detect_encoding(head: bytes) -> tuple[str, int]:
    """(codec, BOM length). Excel writes UTF-8 with a BOM, Windows-1252, or UTF-16 ("Unicode text")."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le", 2
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be", 2
    if b"\x00" in head:
        raise CsvFileError("binary_file", "the file is not a CSV text file (it contains NUL bytes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still UTF-8.
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return "cp1252", 0
    return "utf-8", 0


class _TextLines:
    """Decodes byte chunks and yields lines with their endings, counting the bytes each line took."""

    def __init__(self, chunks: Iterable[bytes], encoding: str, start_offset: int) -> None:
        self._chunks = chunks
        self._encoding = encoding
        self.offset = start_offset  # bytes consumed by the lines yielded so far

    def __iter__(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self._encoding)(errors="strict")
        pending = ""
        for chunk in self._chunks:
            pending += self._decode(decoder, chunk, final=False)
            complete, pending = _split_lines(pending, final=False)
            yield from self._count(complete)
        pending += self._decode(decoder, b"", final=True)
        yield from self._count(_split_lines(pending, final=True)[0])

    def _decode(self, decoder, data: bytes, *, final: bool) -> str:
        try:
            return decoder.decode(data, final)
        except UnicodeDecodeError:
            raise CsvFileError("undecodable", f"the file is not valid {self._encoding} text") from None

    def _count(self, lines) -> Iterator[str]:
        for line in lines:
            self.offset += len(line.encode(self._encoding))
            yield line


def _split_lines(text: str, *, final: bool) -> tuple[list[str], str]:
    """Lines ending in \\r\\n, \\n or a bare \\r (old Mac exports), and the incomplete rest."""
    lines: list[str] = []
    start, size = 0, len(text)
    while (match := _NEWLINE.search(text, start)) is not None:
        at = match.start()
        if text[at] == "\n":
            end = at + 1
        elif at + 1 < size:
            end = at + 2 if text[at + 1] == "\n" else at + 1
        elif final:
            end = at + 1
        else:
            break  # a \r at the end of the chunk: the next chunk may start with \n
        lines.append(text[start:end])
        start = end
    rest = text[start:]
    if final and rest:
        lines.append(rest)
        rest = ""
    return lines, rest


def _sniff_delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_layout(
    chunks: Iterable[bytes], *, phone_column: str | None = None, key_headers: tuple[str, ...] = PHONE_HEADERS
) -> tuple[CsvLayout, Iterator[str], _TextLines]:
    """Read the header; returns the layout and the line stream positioned at the first data row.

    The key column (the phone, or the code in a tokens file) is found among `key_headers`, unless
    `phone_column` names it.
    """
    chunks = iter(chunks)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= _SNIFF_BYTES:
            break
    if not head.strip():
        raise CsvFileError("empty_file", "the file is empty")
    encoding, bom = _detect_encoding(head[:_SNIFF_BYTES])

    def rest():
        yield head[bom:]
        yield from chunks

    text = _TextLines(rest(), encoding, bom)
    lines = iter(text)
    header_line = next((line for line in lines if line.strip()), None)
    if header_line is None:
        raise CsvFileError("empty_file", "the file is empty")
    delimiter = _sniff_delimiter(header_line)
    names = tuple(field_name(column) for column in next(csv.reader([header_line], delimiter=delimiter)))
    wanted = {field_name(phone_column)} if phone_column else {field_name(h) for h in key_headers}
    phone_index = next((i for i, name in enumerate(names) if name in wanted), None)
    if phone_index is None:
        looked_for = phone_column or ", ".join(key_headers[:8]) + (", ..." if len(key_headers) > 8 else "")
        what = "phone" if key_headers is PHONE_HEADERS else "code"
        raise CsvFileError(f"no_{what}_column", f"no {what} column in the header (looked for {looked_for})")
    country_index = next((i for i, name in enumerate(names) if name in _COUNTRY_NAMES and i != phone_index), None)
    layout = CsvLayout(encoding, delimiter, names, phone_index, country_index, text.offset)
    return layout, lines, text


def read_rows(
    chunks: Iterable[bytes],
    *,
    phone_column: str | None = None,
    key_headers: tuple[str, ...] = PHONE_HEADERS,
    resume: CsvLayout | None = None,
    start_offset: int = 0,
    start_row: int = 0,
    on_layout=None,
) -> Iterator[CsvRow]:
    """Rows of a CSV. With `resume`, `chunks` start at `start_offset` (a row boundary) and no header is read."""
    if resume is None:
        layout, lines, text = read_layout(chunks, phone_column=phone_column, key_headers=key_headers)
    else:
        layout = resume
        text = _TextLines(chunks, layout.encoding, start_offset)
        lines = iter(text)
    if on_layout is not None:
        on_layout(layout)
    number = start_row
    width = len(layout.names)
    try:
        for values in csv.reader(lines, delimiter=layout.delimiter):
            if not any(value.strip() for value in values):
                continue
            number += 1
            padded = values + [""] * (width - len(values))
            fields = {
                name: padded[i].strip()
                for i, name in enumerate(layout.names)
                if name and i not in (layout.phone_index, layout.country_index)
            }
            country = padded[layout.country_index].strip() if layout.country_index is not None else ""
            yield CsvRow(number, padded[layout.phone_index], country or None, fields, text.offset)
    except csv.Error as error:
        raise CsvFileError("malformed_csv", f"row {number + 1} cannot be parsed as CSV: {error}") from None
