"""Reading CSVs people really export: encodings, delimiters, quoting, headers in several languages."""

import csv
import io
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsinvite.csv_rows import CsvFileError, CsvGap, field_name, read_rows


def chunked(data: bytes, size: int = 7):
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_bom_semicolon_file_with_quoted_newlines_streams_row_by_row():
    data = '\ufeffName;Handy;Land\r\nAnna;0151 1234567;DE\r\n\r\n"Bo, ""x""";"+1 415\n555 2671";US\r\n'.encode()
    rows = list(read_rows(chunked(data)))
    assert [(r.number, r.phone, r.country, r.fields) for r in rows] == [
        (1, "0151 1234567", "DE", {"name": "Anna"}),
        (2, "+1 415\n555 2671", "US", {"name": 'Bo, "x"'}),
    ]


def test_windows_1252_exports_from_excel_are_decoded():
    rows = list(read_rows(["Telefon,Vorname\n+4915112345678,J\u00fcrgen\n".encode("cp1252")]))
    assert rows[0].fields == {"vorname": "J\u00fcrgen"}


def test_tab_separated_files_and_trailing_separators_are_read():
    rows = list(read_rows([b"mobile\tfirst name\t\n+15551234567\tAl\t\n"]))
    assert rows[0].phone == "+15551234567"
    assert rows[0].fields == {"first_name": "Al"}


@pytest.mark.parametrize("header", ["phone", "Mobile Phone", "MSISDN", "t\u00e9l\u00e9phone", "GSM", "Mobilnummer"])
def test_the_phone_column_is_found_by_common_header_names(header):
    rows = list(read_rows([f"{header},x\n+15551234567,1\n".encode()]))
    assert rows[0].phone == "+15551234567"


def test_a_named_phone_column_wins_over_the_guess():
    rows = list(read_rows([b"phone,work\n+15550000000,+15551234567\n"], phone_column="Work"))
    assert rows[0].phone == "+15551234567"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (b"\n\n", "empty_file"),
        (b"name,email\nAl,a@example.com\n", "no_phone_column"),
        (b"phone\n\xff\xfe\x00\x00garbage", "binary_file"),
        (b"phone\n\x81\x8d\n", "undecodable"),
    ],
)
def test_unreadable_files_fail_with_a_plain_reason(data, reason):
    with pytest.raises(CsvFileError) as failed:
        list(read_rows([data]))
    assert failed.value.reason == reason


def test_header_names_become_merge_field_names():
    assert field_name(" First Name ") == "first_name"
    assert field_name("Vorname") == "vorname"


# ------------------------------------------------------------------------------- resuming by byte offset
MESSY = (
    "\ufeffFirst Name;Mobile;Country;\r\n"
    "Ana;+1 415 555 2671;US;\r\n"
    "\r\n"
    '"Bo; ""the boss""";"+49 151\r\n23456789";DE;\r\n'
    "J\u00fcrgen;0151 2345 6789;DE;\r\n"
    "\u674e\u96f7;+86 139 1234 5678;;\r\n"
    "Zo\u00eb;=HYPERLINK(1);US\r\n"
    "Last;+33 6 12 34 56 78;FR"  # no newline at the end
)


def collect(data: bytes, size: int):
    layouts = []
    rows = list(read_rows(chunked(data, size), on_layout=layouts.append))
    return layouts[0], rows


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize("size", [1, 5, 64 * 1024])
def test_a_read_resumed_from_any_rows_end_offset_gives_exactly_the_remaining_rows(encoding, size):
    # Given a messy file read whole, and the layout a checkpoint would save
    data = MESSY.encode(encoding) if encoding == "utf-8" else MESSY.lstrip("\ufeff").encode("utf-16")
    layout, rows = collect(data, size)
    assert [r.number for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1].end_offset == len(data)

    for index, row in enumerate(rows):
        # When a fresh invocation resumes at that row's end offset with the saved layout (no header)
        resumed = list(
            read_rows(
                chunked(data[row.end_offset :], size),
                resume=layout,
                start_offset=row.end_offset,
                start_row=row.number,
            )
        )
        # Then it reads exactly the rows after it: same numbers, values and offsets
        assert resumed == rows[index + 1 :]


def test_a_resumed_read_starts_at_the_layouts_data_offset_after_the_header():
    data = MESSY.encode()
    layout, rows = collect(data, 7)
    resumed = list(read_rows([data[layout.data_offset :]], resume=layout, start_offset=layout.data_offset))
    assert resumed == rows


# ------------------------------------------------------------------------------- line endings and encodings
def test_bare_cr_line_endings_from_old_mac_exports_are_rows():
    data = b"phone,name\r+14155552671,Ana\r\r+14155552672,Ben\r"
    rows = list(read_rows(chunked(data, 3)))
    assert [(r.number, r.phone, r.fields) for r in rows] == [
        (1, "+14155552671", {"name": "Ana"}),
        (2, "+14155552672", {"name": "Ben"}),
    ]
    assert rows[-1].end_offset == len(data)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_excel_unicode_text_utf16_with_a_bom_is_read(codec):
    # Given Excel's "Unicode text": UTF-16 with a BOM, tab-separated, CRLF
    text = "\ufeffMobile\tFirst Name\tStadt\r\n+4915123456789\tJ\u00fcrgen\tK\u00f6ln\r\n+33612345678\tChlo\u00e9\tLyon\r\n"
    data = text.encode(codec)

    # When it is read in odd-sized chunks that split UTF-16 code units
    rows = list(read_rows(chunked(data, 3)))

    # Then the rows and their non-ASCII fields come out whole
    assert [(r.phone, r.fields) for r in rows] == [
        ("+4915123456789", {"first_name": "J\u00fcrgen", "stadt": "K\u00f6ln"}),
        ("+33612345678", {"first_name": "Chlo\u00e9", "stadt": "Lyon"}),
    ]
    assert rows[-1].end_offset == len(data)


def test_a_chunk_boundary_inside_a_multibyte_character_is_decoded_whole():
    data = "phone,name\n+4915123456789,J\u00fcrgen \u674e\u96f7 \U0001f600\n".encode()
    multibyte_at = data.index("\u00fc".encode())
    # Cut one byte into the two-byte ü, and every other way (one-byte chunks)
    for chunks in ([data[: multibyte_at + 1], data[multibyte_at + 1 :]], chunked(data, 1)):
        rows = list(read_rows(chunks))
        assert rows[0].fields == {"name": "J\u00fcrgen \u674e\u96f7 \U0001f600"}
        assert rows[0].end_offset == len(data)


def test_a_chunk_boundary_between_cr_and_lf_is_one_line_ending():
    data = b"phone,name\r\n+14155552671,Ana\r\n+14155552672,Ben\r\n"
    first_crlf_of_a_row = data.index(b"Ana\r") + 4  # just after the \r
    rows = list(read_rows([data[:first_crlf_of_a_row], data[first_crlf_of_a_row:]]))
    assert [(r.phone, r.fields["name"]) for r in rows] == [("+14155552671", "Ana"), ("+14155552672", "Ben")]
    assert rows[0].end_offset == first_crlf_of_a_row + 1  # past the \n, not between \r and \n


def test_a_multibyte_character_cut_by_the_encoding_sniff_window_is_still_utf8():
    # Given a UTF-8 file whose ä straddles the 64 KiB sniff boundary
    filler = "x" * (64 * 1024 - len("phone,name\n+14155552671,") - 1)
    data = f"phone,name\n+14155552671,{filler}\u00e4\n".encode()
    assert data[64 * 1024 - 1 : 64 * 1024 + 1] == "\u00e4".encode()

    # Then the file is read as UTF-8, not mistaken for Windows-1252
    rows = list(read_rows(chunked(data, 4096)))
    assert rows[0].fields["name"].endswith("\u00e4")


# ------------------------------------------------------------------------------- malformed CSV
def test_an_unterminated_quote_at_the_end_swallows_the_rest_into_one_field():
    # Python's csv (not strict) reads to the end of the file; the value is then rejected as a number
    rows = list(read_rows([b'phone,name\n+14155552671,Ana\n"+14155552672,Ben\n+14155552673,Cy\n']))
    assert [r.phone for r in rows] == ["+14155552671", "+14155552672,Ben\n+14155552673,Cy\n"]


def test_an_unterminated_quote_with_a_large_rest_is_one_row_too_large():
    # Given an opening quote that never closes, followed by more than a row may hold (and csv's 128 KiB field limit)
    data = b'phone,name\n+14155552671,Ana\n"+14155552672,' + b"x" * (200 * 1024) + b"\n"

    # When it is read, the first row comes out, then the rest of the file as one row too large to keep
    rows = list(read_rows(chunked(data, 64 * 1024)))
    assert [(r.number, r.phone, r.too_large) for r in rows] == [(1, "+14155552671", False), (2, "", True)]
    assert rows[-1].end_offset == len(data)


# ------------------------------------------------------------------------------- rows and lines too large
def lazy_chunks(*parts: tuple[bytes, int], size: int = 256 * 1024):
    """The bytes of `parts` (each repeated n times) in chunks, generated as they are read, as S3 streams them."""
    buffer = b""
    for piece, times in parts:
        for _ in range(times):
            buffer += piece
            while len(buffer) >= size:
                yield buffer[:size]
                buffer = buffer[size:]
    if buffer:
        yield buffer


def test_a_row_over_the_size_limit_is_marked_too_large_and_the_rows_after_it_are_read():
    # Given a 500 KB row (five 100 KB columns, each under csv's field limit) between good rows
    big = ",".join(["y" * 100_000] * 5)
    data = f"phone,a,b,c,d,e\n+14155552671,1,2,3,4,5\n+14155552672,{big}\n+14155552673,1,2,3,4,5\n".encode()

    # When it is read in 64 KiB chunks
    rows = list(read_rows(chunked(data, 64 * 1024)))

    # Then the big row is one row, marked too large and holding nothing; the rows around it are whole
    assert [(r.number, r.phone, r.too_large) for r in rows] == [
        (1, "+14155552671", False), (2, "", True), (3, "+14155552673", False),
    ]
    assert rows[1].fields == {} and rows[2].fields == {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
    assert rows[1].end_offset == data.index(b"+14155552673")


def test_a_quoted_row_over_the_limit_is_skipped_to_where_its_quotes_close():
    # Given a row whose quoted field runs over several lines, with quotes and separators inside, past the limit
    data = (
        b'phone,notes\n+14155552671,short\n'
        b'+14155552672,"line one, ""quoted""\nline two\n' + b"z" * 300 + b'\nstill quoted, ""x""\nend"\n'
        b'+14155552673,"after"\n'
    )

    # When it is read with a limit of 100 bytes a row
    rows = list(read_rows(chunked(data, 16), max_row_bytes=100))

    # Then the long row is one row too large, and the next row is read where its quotes closed
    assert [(r.number, r.phone, r.too_large, r.fields) for r in rows] == [
        (1, "+14155552671", False, {"notes": "short"}),
        (2, "", True, {}),
        (3, "+14155552673", False, {"notes": "after"}),
    ]


def test_a_header_line_over_the_size_limit_is_a_plain_file_error():
    # Given a header line over 128 KiB (csv's own field limit), so no row could be stored with its names
    data = b"phone," + b"h" * (140 * 1024) + b"\n+14155552671,x\n"

    # When it is read, the file fails with a reason an operator can act on
    with pytest.raises(CsvFileError) as failed:
        list(read_rows(chunked(data, 64 * 1024)))
    assert failed.value.reason == "header_too_large"
    assert failed.value.message == "the header line is over 65536 bytes"


def test_a_long_line_without_a_newline_is_read_in_memory_bounded_by_the_row_limit():
    # Given a good row, then a 16 MB line with no newline, streamed in 256 KiB chunks
    chunks = lazy_chunks((b"phone,name\n+14155552671,Ana\n", 1), (b"x" * 1024, 16 * 1024))

    # When it is read
    tracemalloc.start()
    try:
        rows = list(read_rows(chunks))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Then the line is one row too large, and what the reader held never grew with the line
    assert [(r.number, r.too_large) for r in rows] == [(1, False), (2, True)]
    assert peak < 3 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_reading_time_grows_linearly_with_the_length_of_a_line():
    # Given lines without a newline of 2 MB and of 16 MB (eight times longer)
    def seconds(megabytes: int) -> float:
        best = float("inf")
        for _ in range(3):
            chunks = list(lazy_chunks((b"phone\n", 1), (b"x" * 1024, megabytes * 1024)))
            started = time.perf_counter()
            rows = list(read_rows(iter(chunks)))
            best = min(best, time.perf_counter() - started)
            assert [r.too_large for r in rows] == [True]
        return best

    # When each is read (the best of three runs, against a shared machine's noise)
    short, long = seconds(2), seconds(16)

    # Then eight times the bytes take about eight times as long (a quadratic reader takes 64 times)
    assert long / short < 20, f"2 MB: {short:.3f} s, 16 MB: {long:.3f} s"


def test_blank_lines_are_reported_as_gaps_so_a_reader_can_save_its_place():
    # Given a million blank lines (some CRLF, some with spaces) between two rows
    data = b"phone\n+14155552671\n" + b"\n" * 500_000 + b"  \r\n" * 100_000 + b"\r\n" * 200_000 + b"+14155552672\n"

    # When it is read asking for a gap every 64 KiB of blank lines
    items = list(read_rows(chunked(data, 256 * 1024), gap_bytes=64 * 1024))

    # Then gaps come between the rows, each further on, and the rows are the same as without gaps
    gaps = [item for item in items if isinstance(item, CsvGap)]
    rows = [item for item in items if not isinstance(item, CsvGap)]
    assert rows == list(read_rows(chunked(data, 256 * 1024)))
    assert items[0] == rows[0] and items[-1] == rows[1]
    offsets = [gap.end_offset for gap in gaps]
    assert len(gaps) >= 5 and offsets == sorted(set(offsets))
    assert rows[0].end_offset < offsets[0] and offsets[-1] <= data.index(b"+14155552672")


# ------------------------------------------------------------------------------- the limit, as a property
_TEXT = st.text(alphabet='ab,;"\r\n \u00e9', max_size=40)


def _lines(draw_fields: list[list[str]], raw: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for fields, junk in zip(draw_fields, raw, strict=False):  # junk after some of the records
        writer.writerow(fields)
        buffer.write(junk)  # stray quotes, bare CRs, blank lines: what people's files hold
    return buffer.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.lists(_TEXT, min_size=1, max_size=4), min_size=1, max_size=12),
    junk=st.lists(st.sampled_from(["", "", "\n", "\r\n\r\n", "\r", 'x"y\n', '"', 'a,"b\n', "  \n"]), min_size=12, max_size=12),
    limit=st.integers(min_value=1, max_value=120),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_a_size_limit_changes_no_row_that_fits_and_cuts_no_row_in_two(records, junk, limit, chunk):
    # Given any file (good CSV with junk between records), and the same file read without a real limit
    header = "phone,x,y\r\n"
    data = (header + _lines(records, junk)).encode()
    layouts = []
    whole = list(read_rows([data], max_row_bytes=1 << 20, on_layout=layouts.append))

    # When its rows are read in chunks of any size with a small limit (resumed after the header, as a
    # continuation reads them, so the limit applies to the rows alone)
    start = layouts[0].data_offset
    limited = list(read_rows(chunked(data[start:], chunk), resume=layouts[0], start_offset=start, max_row_bytes=limit))

    # Then the rows are the same rows, ending at the same bytes; a row is only marked when it took more than
    # the limit, and every row not marked is exactly as it was
    assert [(r.number, r.end_offset) for r in limited] == [(r.number, r.end_offset) for r in whole]
    previous_end = len(header)
    for cut, full in zip(limited, whole, strict=True):
        if cut.too_large:
            assert full.end_offset - previous_end > limit
        else:
            assert cut == full
        previous_end = full.end_offset
