"""`python -m retail_pulse_admin.stores import FILE.csv`: load a store master into the Stores table.

The table and endpoint come from the environment, as for the functions: STORES_TABLE,
AWS_REGION, and AWS_ENDPOINT_URL for a local stack. The import itself, its messages and
its exit status are `stores.command.run_import`'s, shared with `retail-pulse stores import`
and the local stack; this module only reads the command line.

Exit status: 0 stores loaded and no row rejected; 1 some rows rejected (the good ones are
still loaded) or no stores in the file; 2 bad usage or an unreadable file; 3 the table
could not be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from retail_pulse_admin.stores.command import EXIT_USAGE, run_import


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retail_pulse_admin.stores",
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
    return run_import(args.file)


if __name__ == "__main__":
    sys.exit(main())
