"""Reading CSVs as a stream: encoding, delimiter, header, the phone column, and where each row ends.

Memory stays flat and time linear in the file's size: bytes come in chunks, each byte is looked at
once, and rows go out one at a time. A row over `MAX_ROW_BYTES` comes out marked too large, holding
nothing, and the rows after it are read on. Every row carries the byte offset just past it, so an
import can checkpoint there and a fresh invocation can resume with an S3 range read from that
offset, knowing the file's layout from the checkpoint.
"""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from smsinvite.sizes import MAX_ROW_BYTES

PHONE_HEADERS = (
    "phone", "mobile", "mobile phone", "mobile_phone", "mobile number", "cell", "cell phone", "cellphone",
    "msisdn", "phone_number", "phone number", "telefon", "telefonnummer", "handy", "handynummer", "mobil",
    "mobilnummer", "téléphone", "telephone", "téléphone portable", "portable", "telefoon", "telefoonnummer",
    "mobiel", "mobiel nummer", "gsm", "gsm nummer",
)
CODE_HEADERS = ("code", "token", "invitation code", "invitation_code", "access code", "access_code", "password")
COUNTRY_HEADERS = ("country", "country_code", "country code", "region", "land", "pays", "landcode")
_SNIFF_BYTES = 64 * 1024
_LINE_END = re.compile(r"\r\n?|\n")
_BLANK_LINES = re.compile(r"[\r\n]+")
# What the csv module's quoting depends on. For Python's csv as configured here (one quote character,
# doubled quotes, no escape character), a run of other characters acts as its last one, and a run of
# quotes as one, two, three or four of them (by its length and parity). The skeleton keeps that, with
# an "x" where a run held text and a separator where it held one, so csv moves through the same states
# on it and a blank record still reads as blank.
_SKELETON = re.compile(r'[^"\r\n]+|"+')
# The most of a skeleton kept; with a row's own bytes, under the csv module's field limit (128 Ki characters).
_SKELETON_CHARS = 32 * 1024


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
    too_large: bool = False  # over MAX_ROW_BYTES in the file: not kept (phone and fields are empty)


@dataclass(frozen=True)
class CsvGap:
    """Blank lines with no row since the last item: where a reader may save its place in a file of blank lines."""

    end_offset: int


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


class _Tangled(Exception):
    """A row too large to keep whose quoting, even reduced to its skeleton, is more than can be held."""


class _TextLines:
    """Decodes byte chunks and yields lines with their endings, counting the bytes each line took.

    Lines are found in one pass (each character is looked at once), so reading is linear in the size
    of the file whatever its lines are like. The reader of the lines (`read_rows`) calls `end_record()`
    whenever the csv module has ended a record; the lines since then are the record in progress.

    - At the start of a record, a run of blank lines is one line "\\n" (a blank record either way),
      so a flood of them costs little and still comes out, chunk by chunk, for the reader to see.
    - A record that grows past `max_record_bytes` is marked `too_large`; the rest of it is passed on
      as its skeleton (see `_SKELETON`), so the csv module ends the record where it really ends,
      while no more than the limit is held.
    """

    def __init__(self, chunks: Iterable[bytes], encoding: str, start_offset: int, max_record_bytes: int) -> None:
        self._chunks = chunks
        self._encoding = encoding
        self._limit = max_record_bytes
        self.offset = start_offset  # bytes consumed by the lines yielded so far
        self.too_large = False  # the record in progress is over the limit
        self.delimiter = ""  # once the header is read: what separates fields, for telling blank from text
        self._record_bytes = 0
        self._at_record_start = True

    def end_record(self) -> None:
        self.too_large = False
        self._record_bytes = 0
        self._at_record_start = True

    def __iter__(self) -> Iterator[str]:
        line: list[str] = []  # the line in progress: its text, or its skeleton once the record is too large
        line_bytes = 0
        encoding = self._encoding
        for text in self._texts():
            at, size = 0, len(text)
            if line and line[-1].endswith("\r"):  # the line ended in \r just before this chunk, or in \r\n
                if text.startswith("\n"):
                    line_bytes += self._keep(line, "\n", line_bytes)
                    at = 1
                yield self._finish(line, line_bytes)
                line, line_bytes = [], 0
            while at < size:
                if self._at_record_start and not line and text[at] in "\r\n":
                    blank = _BLANK_LINES.match(text, at)
                    self.offset += self._bytes(blank[0])
                    at = blank.end()
                    yield "\n"
                    continue
                end = _LINE_END.search(text, at)
                if end is None:
                    line_bytes += self._keep(line, text[at:], line_bytes)
                    break
                start, at = at, end.end()
                if at == size and text[at - 1] == "\r":
                    line_bytes += self._keep(line, text[start:], line_bytes)
                    break  # the next chunk may start with this line's \n
                if not line and not self.too_large:  # most lines: whole in this chunk, within the limit
                    whole = text[start:at]
                    whole_bytes = len(whole.encode(encoding))
                    if self._record_bytes + whole_bytes <= self._limit:
                        self.offset += whole_bytes
                        self._record_bytes += whole_bytes
                        self._at_record_start = False
                        yield whole
                        continue
                line_bytes += self._keep(line, text[start:at], line_bytes)
                yield self._finish(line, line_bytes)
                line, line_bytes = [], 0
        if line:
            yield self._finish(line, line_bytes)

    def _texts(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self._encoding)(errors="strict")
        for chunk in self._chunks:
            text = self._decode(decoder, chunk, final=False)
            if text:
                yield text
        rest = self._decode(decoder, b"", final=True)
        if rest:
            yield rest

    def _keep(self, line: list[str], piece: str, line_bytes: int) -> int:
        """Add a piece to the line in progress; returns its bytes in the file."""
        piece_bytes = self._bytes(piece)
        if not self.too_large and self._record_bytes + line_bytes + piece_bytes > self._limit:
            self.too_large = True
            line[:] = [self._skeleton("".join(line))]
        if not self.too_large:
            line.append(piece)
            return piece_bytes
        line.append(self._skeleton(piece))
        if len(line) > 16 or len(line[-1]) > _SKELETON_CHARS:  # one skeleton a chunk: join them now and then
            line[:] = [self._skeleton("".join(line))]  # skeletons joined are skeletons too, often shorter
            if len(line[0]) > _SKELETON_CHARS:
                raise _Tangled
        return piece_bytes

    def _finish(self, line: list[str], line_bytes: int) -> str:
        self.offset += line_bytes
        self._record_bytes += line_bytes
        self._at_record_start = False
        return line[0] if len(line) == 1 else "".join(line)

    def _skeleton(self, text: str) -> str:
        """The text reduced to what the csv module's quoting depends on (see `_SKELETON`)."""
        return _SKELETON.sub(self._skeleton_of_run, text)

    def _skeleton_of_run(self, run: re.Match) -> str:
        text = run[0]
        if text[0] == '"':
            return '"' * (len(text) if len(text) <= 2 else 3 + (len(text) + 1) % 2)
        delimiter, last = self.delimiter, text[-1]
        held_text = bool((text.replace(delimiter, "") if delimiter else text).strip())
        # Inside quotes a separator is text; outside, it ends a field: keep one, and csv decides which
        separated = bool(delimiter) and delimiter in text and last != delimiter
        return ("x" if held_text else "") + (delimiter if separated else "") + last

    def _bytes(self, text: str) -> int:
        return len(text.encode(self._encoding))

    def _decode(self, decoder, data: bytes, *, final: bool) -> str:
        try:
            return decoder.decode(data, final)
        except UnicodeDecodeError:
            raise CsvFileError("undecodable", f"the file is not valid {self._encoding} text") from None


def _sniff_delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_layout(
    chunks: Iterable[bytes],
    *,
    phone_column: str | None = None,
    key_headers: tuple[str, ...] = PHONE_HEADERS,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> tuple[CsvLayout, Iterator[str], _TextLines]:
    """Read the header; returns the layout and the line stream positioned at the first data row.

    The key column (the phone, or the code in a tokens file) is found among `key_headers`, unless
    `phone_column` names it. A header line over `max_row_bytes` fails the file: every row would carry
    its names.
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

    text = _TextLines(rest(), encoding, bom, max_row_bytes)
    lines = iter(text)
    try:
        header_line = next((line for line in lines if line.strip()), None)
    except _Tangled:
        header_line = None  # over the limit all the same
    if header_line is None and not text.too_large:
        raise CsvFileError("empty_file", "the file is empty")
    if text.too_large:
        raise CsvFileError("header_too_large", f"the header line is over {max_row_bytes} bytes")
    text.end_record()
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
    max_row_bytes: int = MAX_ROW_BYTES,
    gap_bytes: int | None = None,
) -> Iterator[CsvRow | CsvGap]:
    """Rows of a CSV. With `resume`, `chunks` start at `start_offset` (a row boundary) and no header is read.

    A row that takes more than `max_row_bytes` in the file comes out `too_large`, with nothing in it.
    With `gap_bytes`, a `CsvGap` comes out after every so many bytes of blank lines without a row.
    """
    if resume is None:
        layout, lines, text = read_layout(
            chunks, phone_column=phone_column, key_headers=key_headers, max_row_bytes=max_row_bytes
        )
    else:
        layout = resume
        text = _TextLines(chunks, layout.encoding, start_offset, max_row_bytes)
        lines = iter(text)
    if on_layout is not None:
        on_layout(layout)
    text.delimiter = layout.delimiter
    number = start_row
    width = len(layout.names)
    since = text.offset  # where the last row or gap ended
    end_record = text.end_record
    try:
        for values in csv.reader(lines, delimiter=layout.delimiter):
            too_large = text.too_large
            end_record()
            if not "".join(values).strip():  # a blank line, or separators and spaces: no row
                if gap_bytes and text.offset - since >= gap_bytes:
                    since = text.offset
                    yield CsvGap(text.offset)
                continue
            number += 1
            since = text.offset
            if too_large:
                yield CsvRow(number, "", None, {}, text.offset, too_large=True)
                continue
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
    except _Tangled:
        raise CsvFileError(
            "malformed_csv", f"row {number + 1} is over {max_row_bytes} bytes, with too many quotes to find its end"
        ) from None
