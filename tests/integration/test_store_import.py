"""Store master import against moto's DynamoDB: the sample, the real file, lookups, and the
one command behind `python -m retail_pulse_admin.stores`, `retail-pulse stores import` and the
local stack."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from retail_pulse.data.models import AREA_REGISTRY_ID, StoreRecord
from retail_pulse.data.stores import find_stores, save_stores
from retail_pulse_admin.stores.__main__ import main
from retail_pulse_admin.stores.command import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TABLE,
    EXIT_USAGE,
    run_import,
)
from retail_pulse_admin.stores.importer import StoreTableError, import_stores
from retail_pulse_admin.stores.master import Rejection, StoreRow

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "stores_sample.csv"
REAL_STORE_COUNT = 4_944


def table_count() -> int:
    """Stores in the table; the area registry item is not a store."""
    return sum(1 for record in StoreRecord.scan() if record.store_id != AREA_REGISTRY_ID)


def write_csv(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "stores.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_the_sample(aws) -> None:
    report = import_stores(SAMPLE)

    assert (report.read, report.loaded, report.rejected, report.duplicates) == (8, 8, (), 0)
    assert report.ok
    assert table_count() == 8
    bharat = StoreRecord.get("S00339218")
    assert (bharat.store_name, bharat.area_code) == ("BHARAT STORE", "710006")
    assert StoreRecord.get("S90000002").store_name == "Lakshmi General Store"


def test_importing_twice_is_safe_and_overwrites(aws, tmp_path: Path) -> None:
    import_stores(SAMPLE)
    again = import_stores(SAMPLE)
    assert again.loaded == 8
    assert table_count() == 8

    renamed = write_csv(tmp_path, "AreaCode,StoreName,StoreID", "710006,BHARAT STORES,S00339218")
    import_stores(renamed)
    assert table_count() == 8
    assert StoreRecord.get("S00339218").store_name == "BHARAT STORES"


def test_rejected_rows_are_reported_and_the_good_ones_still_load(aws, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "AreaCode,StoreName,StoreID",
        "710006,A,S90000001",
        "710006,B,",
        "710006,A,S90000001",
        "700029,C,S90000001",
        "700029,D,S90000002",
    )
    report = import_stores(path)

    assert (report.read, report.loaded, report.duplicates) == (5, 2, 1)
    assert [r.line for r in report.rejected] == [3, 5]
    assert report.rejected[0] == Rejection(3, "missing StoreID")
    assert not report.ok
    assert table_count() == 2


def test_progress_reaches_the_total(aws) -> None:
    calls: list[tuple[int, int]] = []
    rows = [StoreRow(f"S9{i:07d}", "710006", f"Store {i}", i + 2) for i in range(60)]
    # Through save_stores directly: 60 rows is 3 batches of at most 25.
    done: list[int] = []
    assert save_stores(rows, on_saved=done.append) == 60
    assert done == [25, 50, 60]

    import_stores(SAMPLE, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 8), (8, 8)]


def test_import_the_real_store_master(aws, store_master_csv: Path) -> None:
    calls: list[tuple[int, int]] = []
    report = import_stores(store_master_csv, on_progress=lambda d, t: calls.append((d, t)))

    assert report.rejected == ()
    assert (report.read, report.loaded, report.duplicates) == (REAL_STORE_COUNT,) * 2 + (0,)
    assert table_count() == REAL_STORE_COUNT
    assert calls[0] == (0, REAL_STORE_COUNT)
    assert calls[-1] == (REAL_STORE_COUNT, REAL_STORE_COUNT)

    bharat = StoreRecord.get("S00339218")
    assert (bharat.store_name, bharat.area_code) == ("BHARAT STORE", "710006")
    asha = StoreRecord.get("S01408764")
    assert (asha.store_name, asha.area_code) == ("Asha Communication", "710006")
    # A quoted name with a comma, and one with stray spaces in the file, as written.
    assert StoreRecord.get("S00839492").store_name == "AB AHAD GEN. STORE,-1"
    assert StoreRecord.get("S00339420").store_name == "RENU COMMUNICATION"


def test_find_stores_returns_only_the_known_ones_across_many_pages(aws) -> None:
    known = [
        StoreRow(f"S8{i:07d}", "700029" if i % 2 else "710006", f"Shop {i}", 0) for i in range(150)
    ]
    save_stores(known)
    unknown = [f"S7{i:07d}" for i in range(40)]
    asked = [row.store_id for row in known] + unknown + [known[0].store_id, ""]

    found = find_stores(asked)

    assert set(found) == {row.store_id for row in known}
    assert found["S80000001"].area_code == "700029"
    assert found["S80000001"].store_name == "Shop 1"
    assert find_stores([]) == {}
    assert find_stores(unknown) == {}


def test_cli_imports_the_sample(aws, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["Read 8 rows, loaded 8 stores, rejected 0 rows"]
    assert table_count() == 8


def test_cli_lists_rejections_and_exits_1(
    aws, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(
        tmp_path,
        "AreaCode,StoreName,StoreID",
        "710006,A,S90000001",
        ",B,S90000002",
        "710006,A,S90000001",
        "710006,C, D,S90000003",
    )
    assert main(["import", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Read 4 rows, loaded 1 store, rejected 2 rows"
    assert lines[1] == "1 row repeated an earlier store exactly and loaded once"
    assert lines[2] == "line 3: empty AreaCode for store S90000002"
    assert lines[3].startswith("line 5: expected 3 columns")
    assert table_count() == 1


def test_cli_bad_header_and_empty_files_exit_1(aws, tmp_path, capsys) -> None:
    bad = write_csv(tmp_path, "Area,Name,Id", "710006,A,S1")
    assert main(["import", str(bad)]) == 1
    assert "line 1: bad header" in capsys.readouterr().out

    header_only = write_csv(tmp_path, "AreaCode,StoreName,StoreID")
    assert main(["import", str(header_only)]) == 1
    assert "no stores found" in capsys.readouterr().err
    assert table_count() == 0


def test_cli_unreadable_file_and_bad_usage_exit_2(aws, tmp_path, capsys) -> None:
    assert main(["import", str(tmp_path / "absent.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err

    assert main(["import", str(tmp_path)]) == 2  # a directory
    assert "cannot read" in capsys.readouterr().err

    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["export", str(SAMPLE)]) == 2
    assert main(["import"]) == 2
    assert main(["--help"]) == 0
    assert table_count() == 0


def test_cli_reports_a_missing_table_with_exit_3(aws, capsys) -> None:
    StoreRecord.delete_table()
    assert main(["import", str(SAMPLE)]) == 3
    assert "could not write to the table Stores" in capsys.readouterr().err


class Recorded:
    """An ImportOutput that keeps what each caller would show, to check it in one place."""

    def __init__(self) -> None:
        self.progress_calls: list[tuple[int, int]] = []
        self.results: list[str] = []
        self.rejected: list[Rejection] = []
        self.messages: list[str] = []

    def progress(self, done: int, total: int) -> None:
        self.progress_calls.append((done, total))

    def result(self, line: str) -> None:
        self.results.append(line)

    def rejections(self, rejected: Sequence[Rejection]) -> None:
        self.rejected.extend(rejected)

    def message(self, line: str) -> None:
        self.messages.append(line)


def test_run_import_reports_through_its_output_and_returns_the_status(
    aws: object, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "AreaCode,StoreName,StoreID", "710006,A,S90000001", "710006,B,")
    output = Recorded()

    assert run_import(path, output) == EXIT_REJECTED

    assert output.messages == [f"Importing {path} into table Stores at AWS us-east-1"]
    assert output.progress_calls == [(0, 1), (1, 1)]
    assert output.results == ["Read 2 rows, loaded 1 store, rejected 1 row"]
    assert output.rejected == [Rejection(3, "missing StoreID")]
    assert run_import(SAMPLE, Recorded()) == EXIT_OK


def test_run_import_turns_each_failure_into_one_error_line_and_its_status(
    aws: object, tmp_path: Path
) -> None:
    unreadable = Recorded()
    assert run_import(tmp_path / "absent.csv", unreadable) == EXIT_USAGE
    assert unreadable.messages[-1].startswith("error: cannot read ")
    assert unreadable.results == []

    StoreRecord.delete_table()
    no_table = Recorded()
    assert run_import(SAMPLE, no_table) == EXIT_TABLE
    assert no_table.messages[-1].startswith("error: could not write to the table Stores: ")
    with pytest.raises(StoreTableError, match="could not write to the table Stores"):
        import_stores(SAMPLE)
