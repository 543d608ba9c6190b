"""Store master parsing: the real file's quirks load, every bad row is named by its line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from retail_pulse_admin.stores.master import (
    MAX_FIELD_LENGTH,
    Rejection,
    StoreMasterError,
    StoreRow,
    read_store_master,
    read_store_master_text,
)

HEADER = "AreaCode,StoreName,StoreID"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "stores_sample.csv"


def parse(*lines: str):
    return read_store_master_text("\n".join(lines) + "\n")


def test_plain_rows_keep_their_line_numbers() -> None:
    master = parse(HEADER, "710006,BHARAT STORE,S00339218", "700029,City Bakery,S90000006")
    assert master.rows == [
        StoreRow("S00339218", "710006", "BHARAT STORE", 2),
        StoreRow("S90000006", "700029", "City Bakery", 3),
    ]
    assert master.rejections == []
    assert (master.read, master.duplicates) == (2, 0)


def test_quoted_names_may_contain_commas() -> None:
    master = parse(
        HEADER,
        '700029,"AB AHAD GEN. STORE,-1",S00839492',
        '700029,"A.A ENTP,",S00839486',
    )
    assert [row.store_name for row in master.rows] == ["AB AHAD GEN. STORE,-1", "A.A ENTP,"]
    assert master.rejections == []


def test_stray_spaces_are_trimmed_around_every_cell_but_not_inside_a_name() -> None:
    master = parse(
        " AreaCode , StoreName ,StoreID ",
        " 710006 ,RENU COMMUNICATION ,  S00339420 ",
        '700029, "KHAN PRO  STORE, -1" ,S00040239',
    )
    assert master.rows == [
        StoreRow("S00339420", "710006", "RENU COMMUNICATION", 2),
        StoreRow("S00040239", "700029", "KHAN PRO  STORE, -1", 3),
    ]


def test_bom_and_crlf_are_tolerated_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"\xef\xbb\xbfAreaCode,StoreName,StoreID\r\n"
        b'710006,"BHARAT STORE, MAIN",S00339218\r\n'
        b"710006,Asha Communication,S01408764\r\n"
    )
    master = read_store_master(path)
    assert master.rows == [
        StoreRow("S00339218", "710006", "BHARAT STORE, MAIN", 2),
        StoreRow("S01408764", "710006", "Asha Communication", 3),
    ]
    assert master.rejections == []


def test_bom_is_tolerated_from_lines_too() -> None:
    master = read_store_master(["\ufeffAreaCode,StoreName,StoreID\r\n", "710006,X,S1\r\n"])
    assert master.rows == [StoreRow("S1", "710006", "X", 2)]


def test_blank_lines_are_skipped_without_shifting_line_numbers() -> None:
    master = parse("", HEADER, "", "710006,A,S1", "   ", ",,", "710006,B,S2", "")
    assert [(row.store_id, row.line) for row in master.rows] == [("S1", 4), ("S2", 7)]
    assert master.rejections == []
    assert master.read == 2


def test_a_name_spanning_lines_does_not_shift_later_line_numbers() -> None:
    master = parse(HEADER, '710006,"TWO\nLINES",S1', "710006,,S2")
    assert master.rows[0].store_name == "TWO\nLINES"
    assert master.rejections == [Rejection(4, "empty StoreName for store S2")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("710006,BHARAT STORE,", "missing StoreID"),
        (",BHARAT STORE,S00339218", "empty AreaCode for store S00339218"),
        ("710006,  ,S00339218", "empty StoreName for store S00339218"),
        ("710006,BHARAT STORE,S003 39218", "StoreID 'S003 39218' contains spaces"),
    ],
)
def test_missing_fields_are_rejected_with_a_reason(line: str, reason: str) -> None:
    master = parse(HEADER, "710006,Asha Communication,S01408764", line)
    assert master.rejections == [Rejection(3, reason)]
    assert [row.store_id for row in master.rows] == ["S01408764"]
    assert master.read == 2


def test_wrong_column_count_names_the_line() -> None:
    master = parse(
        HEADER,
        "710006,A,S1",
        "710006,SHARMA SWEETS, TEA,S2",  # unquoted comma
        "710006,S3",
        "710006,B,S4",
    )
    assert master.rejections == [
        Rejection(
            3,
            "expected 3 columns (AreaCode,StoreName,StoreID), found 4; "
            "a name that contains a comma must be in double quotes",
        ),
        Rejection(4, "expected 3 columns (AreaCode,StoreName,StoreID), found 2"),
    ]
    assert [row.store_id for row in master.rows] == ["S1", "S4"]


def test_empty_trailing_cells_are_padding_not_columns() -> None:
    master = parse(HEADER + ",", "710006,A,S1,,")
    assert master.rows == [StoreRow("S1", "710006", "A", 2)]
    assert master.rejections == []


def test_overlong_cells_are_rejected_before_they_reach_dynamodb() -> None:
    master = parse(HEADER, f"710006,{'X' * (MAX_FIELD_LENGTH + 1)},S1")
    assert master.rows == []
    assert master.rejections[0].line == 2
    assert "StoreName is 257 characters long" in master.rejections[0].reason


def test_columns_may_come_in_any_order_and_case() -> None:
    master = parse("storeid,AREACODE,StoreName", "S1,710006,A")
    assert master.rows == [StoreRow("S1", "710006", "A", 2)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("AreaCode,Name,StoreID", "missing StoreName; unexpected Name"),
        ("710006,BHARAT STORE,S00339218", "missing AreaCode, StoreName, StoreID"),
        ("AreaCode,StoreName,StoreID,StoreID", "unexpected StoreID"),
    ],
)
def test_a_bad_header_rejects_the_file_at_its_line(header: str, expected: str) -> None:
    master = parse("", header, "710006,A,S1")
    assert master.rows == []
    assert len(master.rejections) == 1
    rejection = master.rejections[0]
    assert rejection.line == 2
    assert expected in rejection.reason
    assert "expected AreaCode,StoreName,StoreID" in rejection.reason


def test_an_empty_file_is_one_rejection() -> None:
    master = read_store_master(io.StringIO(""))
    assert master.rows == []
    assert master.rejections == [
        Rejection(1, "the file is empty: expected the header AreaCode,StoreName,StoreID")
    ]


def test_a_store_repeated_identically_is_a_duplicate_kept_once() -> None:
    master = parse(HEADER, "710006,A,S1", "710006, A ,S1", "710006,B,S2")
    assert [(row.store_id, row.line) for row in master.rows] == [("S1", 2), ("S2", 4)]
    assert master.duplicates == 1
    assert master.rejections == []
    assert master.read == 3


def test_a_store_repeated_differently_is_rejected_and_the_first_kept() -> None:
    master = parse(HEADER, "710006,A,S1", "700029,A,S1", "710006,Other,S1")
    assert master.rows == [StoreRow("S1", "710006", "A", 2)]
    assert master.duplicates == 0
    assert [r.line for r in master.rejections] == [3, 4]
    assert master.rejections[0].reason == (
        "duplicate StoreID S1 with a different area or name: "
        "700029 'A' here, 710006 'A' on line 2 (kept)"
    )


def test_the_shipped_sample_loads_cleanly() -> None:
    master = read_store_master(SAMPLE)
    assert master.rejections == []
    stores = {row.store_id: row for row in master.rows}
    assert len(stores) == 8
    assert stores["S00339218"].store_name == "BHARAT STORE"
    assert stores["S01408764"].store_name == "Asha Communication"
    assert {row.area_code for row in master.rows} == {"710006", "700029"}
    assert any("," in row.store_name for row in master.rows)
    assert stores["S90000002"].store_name == "Lakshmi General Store"


def test_a_missing_file_is_an_error_not_a_rejection(tmp_path: Path) -> None:
    with pytest.raises(StoreMasterError, match=r"cannot read .*absent\.csv"):
        read_store_master(tmp_path / "absent.csv")


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"AreaCode,StoreName,StoreID\n710006,CAF\xc9,S1\n")
    with pytest.raises(StoreMasterError, match="not UTF-8"):
        read_store_master(path)
