"""`retail-pulse stores import` as an operator runs it, against moto: the store master loaded,
rejected rows named by line, exit statuses. The client's own tests are in client/tests/."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner, Result

from retail_pulse_client.cli import app

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["stores", "import", *args], catch_exceptions=False)


def test_stores_import_loads_good_rows_and_names_the_rejected(aws: object, tmp_path: Path) -> None:
    master = tmp_path / "stores.csv"
    master.write_text(
        "AreaCode,StoreName,StoreID\n710006,BHARAT STORE,S1\n710006,No Id,\n700029,Bakery,S2\n"
    )

    result = run(str(master))

    assert result.exit_code == 1, result.output
    assert "Read 3 rows, loaded 2 stores, rejected 1 row" in result.stdout
    assert "line 3:" in result.stdout
    assert "writing stores: 2/2" in result.stderr
    assert not CONTROL.search(result.output), repr(result.output)


def test_stores_import_of_a_missing_file_exits_2(aws: object, tmp_path: Path) -> None:
    result = run(str(tmp_path / "nope.csv"))

    assert result.exit_code == 2
    assert "error:" in result.stderr
