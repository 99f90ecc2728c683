"""Reading CSVs people really export: encodings, delimiters, quoting, headers in several languages."""

import pytest

from smsinvite.csv_rows import CsvFileError, field_name, read_rows


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


def test_an_unterminated_quote_with_a_large_rest_is_a_plain_malformed_csv_error():
    # Given an opening quote that never closes, followed by more than csv's field limit (128 KiB)
    data = b'phone,name\n+14155552671,Ana\n"+14155552672,' + b"x" * (200 * 1024) + b"\n"

    # When it is read, the first row comes out, then a file-level error names the row
    rows = read_rows(chunked(data, 64 * 1024))
    assert next(rows).phone == "+14155552671"
    with pytest.raises(CsvFileError) as failed:
        next(rows)
    assert failed.value.reason == "malformed_csv"
    assert failed.value.message.startswith("row 2 cannot be parsed as CSV")
