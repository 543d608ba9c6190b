"""Import a store master CSV into the Stores table: parse, save the good rows, report.

Bad rows never stop the import: the good ones load and the report names every line that
did not, so a person can fix the file and run the import again (it overwrites, so that
is safe). This is the one store-import service: `stores.command.run_import` turns its
report and errors into the messages and exit status that every caller shows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.stores import register_areas, save_stores
from retail_pulse.settings import get_settings
from retail_pulse_admin.stores.master import Rejection, read_store_master

ProgressCallback = Callable[[int, int], None]
"""on_progress(done, total): stores written so far out of the stores to write."""


class StoreTableError(Exception):
    """The Stores table could not be written (missing, unreachable, refused); the message
    names the table and the reason."""


@dataclass(frozen=True)
class ImportReport:
    """What an import did, in the numbers a person checks after running it."""

    read: int  # data rows in the file (header and blank lines excluded)
    loaded: int  # distinct stores written to the table
    rejected: tuple[Rejection, ...]
    duplicates: int  # rows repeating an earlier store exactly; harmless, loaded once

    @property
    def ok(self) -> bool:
        """Something loaded and nothing was turned away."""
        return self.loaded > 0 and not self.rejected


def import_stores(
    path: str | os.PathLike[str],
    on_progress: ProgressCallback | None = None,
) -> ImportReport:
    """Load the store master at `path` into the Stores table.

    Raises master.StoreMasterError when the file cannot be read at all, and
    StoreTableError when the table cannot be written.
    """
    master = read_store_master(path)
    total = len(master.rows)
    if on_progress is not None:
        on_progress(0, total)
    try:
        loaded = save_stores(
            master.rows,
            on_saved=(lambda done: on_progress(done, total)) if on_progress is not None else None,
        )
        # The visits API lists areas from this registry: it cannot list them without a scan.
        register_areas({row.area_code for row in master.rows})
    except STORAGE_ERRORS as error:
        reason = getattr(error, "msg", None) or str(error)
        table = get_settings().stores_table
        raise StoreTableError(f"could not write to the table {table}: {reason}") from error
    return ImportReport(
        read=master.read,
        loaded=loaded,
        rejected=tuple(master.rejections),
        duplicates=master.duplicates,
    )
