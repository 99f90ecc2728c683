"""Report cells a spreadsheet would run as formulas are escaped; everything else is left as it is."""

import csv
import io

import pytest

from smsinvite.reports import csv_text, safe_cell


@pytest.mark.parametrize(
    "dangerous",
    ["=HYPERLINK(\"http://evil.example\",\"click\")", "+14155552671", "-2+3", "@SUM(A1:A2)", "\t=1+1", "\r=1+1"],
)
def test_a_cell_starting_like_a_formula_gets_a_leading_apostrophe(dangerous):
    assert safe_cell(dangerous) == "'" + dangerous


@pytest.mark.parametrize("harmless", ["Ana", "", "not a number", "4155552671", "a=b", "x+1", "mail@example.com", "Chloé"])
def test_ordinary_text_is_left_untouched(harmless):
    assert safe_cell(harmless) == harmless


def test_non_text_values_are_written_as_text_and_escaped_alike():
    assert (safe_cell(None), safe_cell(42), safe_cell(-3)) == ("", "42", "'-3")


def test_a_csv_report_escapes_every_cell_and_still_parses_back():
    # Given rows mixing harmless and formula-like cells, some needing CSV quoting
    rows = [("row", "value", "reason"), (2, "=1+1", "invalid:not_a_number"), (3, "+1 (555)", "invalid:too_short"),
            (4, "a,b\n\"c\"", "duplicate"), (5, "@cmd", "x")]

    # When they are written as a report
    text = csv_text(rows)

    # Then each line ends in CRLF, and reading it back gives the escaped cells
    assert text.endswith("\r\n")
    assert list(csv.reader(io.StringIO(text))) == [
        ["row", "value", "reason"],
        ["2", "'=1+1", "invalid:not_a_number"],
        ["3", "'+1 (555)", "invalid:too_short"],
        ["4", "a,b\n\"c\"", "duplicate"],
        ["5", "'@cmd", "x"],
    ]
