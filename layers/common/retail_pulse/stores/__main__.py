"""`python -m retail_pulse.stores import FILE.csv`: load a store master into the Stores table.

The table and endpoint come from the environment, as for the functions: STORES_TABLE,
AWS_REGION, and AWS_ENDPOINT_URL for a local stack.

Exit status: 0 stores loaded and no row rejected; 1 some rows rejected (the good ones are
still loaded) or no stores in the file; 2 bad usage or an unreadable file; 3 the table
could not be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pynamodb.exceptions import PynamoDBException

from retail_pulse.settings import get_settings
from retail_pulse.stores.importer import import_stores
from retail_pulse.stores.master import StoreMasterError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_TABLE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retail_pulse.stores",
        description="Manage the store master in the Stores table.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    load = commands.add_parser(
        "import",
        help="load a store master CSV (header AreaCode,StoreName,StoreID)",
        description="Load a store master CSV into the Stores table; safe to run again.",
    )
    load.add_argument("file", metavar="FILE.csv", help="the store master CSV")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command and return its exit status (argparse's own exits included)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad usage (2), already explained on stderr
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    table = get_settings().stores_table
    try:
        report = import_stores(args.file)
    except StoreMasterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PynamoDBException as exc:
        print(f"error: could not write to the table {table}: {exc.msg}", file=sys.stderr)
        return EXIT_TABLE

    print(
        f"read {report.read} rows, loaded {report.loaded} stores, rejected {len(report.rejected)}"
    )
    if report.duplicates:
        print(f"{report.duplicates} rows repeated an earlier store exactly and were loaded once")
    for rejection in report.rejected:
        print(f"line {rejection.line}: {rejection.reason}")
    if report.ok:
        return EXIT_OK
    if not report.rejected:
        print(f"error: no stores found in {args.file}", file=sys.stderr)
    return EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
