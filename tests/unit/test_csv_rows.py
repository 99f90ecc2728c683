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
