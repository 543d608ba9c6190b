"""The deployed run's clean-up: what it leaves in the temporary folder, and that it does not
wait for it."""

from __future__ import annotations

from pathlib import Path

from deployed.run import remove_in_background, wait_for


def test_a_work_folder_is_deleted_by_a_process_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "retail-pulse-deployed-x" / "ministack-tmp"
    (folder / "layer" / "python").mkdir(parents=True)
    for n in range(200):
        (folder / "layer" / "python" / f"{n}.py").write_text("x = 1\n")
    kept = tmp_path / "retail-pulse-deployed-x" / "ministack.log"
    kept.write_text("log\n")

    remove_in_background(folder)

    wait_for("the folder deleted", lambda: not folder.exists(), timeout_s=120)
    assert kept.read_text() == "log\n"  # only the folder named goes
