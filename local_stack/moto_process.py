"""Child process: moto's server (all services) on 127.0.0.1, dying with the local stack.

moto is patched first (local_stack.moto_locking): DynamoDB requests are serialised, since the
functions update job counters from many threads and rely on each request being atomic, and
SQS sends stay O(1) in the queue's length.

Usage: python -m local_stack.moto_process PARENT_PID PORT
"""

from __future__ import annotations

import logging
import sys

from local_stack.children import die_with_parent


def main() -> None:
    parent_pid, port = int(sys.argv[1]), sys.argv[2]
    die_with_parent(parent_pid)
    # One werkzeug access-log line per SQS long poll drowns everything else.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.server import main as moto_main

    from local_stack import request_counts
    from local_stack.moto_locking import patch_moto
    from local_stack.moto_transactions import cheap_transaction_rollback

    patch_moto()
    cheap_transaction_rollback()
    # GET /_local/request-counts: what the benchmark prices as SQS and DynamoDB requests.
    request_counts.install()

    moto_main(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main()
