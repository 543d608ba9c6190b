"""Child process: moto's server (all services) on 127.0.0.1, dying with the local stack.

moto is patched first (local_stack.moto_locking): DynamoDB requests are serialised, since the
functions update job counters from many threads and rely on each request being atomic, and
SQS sends stay O(1) in the queue's length. With LOCAL_DYNAMODB_JAR set (the stack's
LOCAL_DYNAMODB=dynamodb-local), DynamoDB Local is started first (on LOCAL_DYNAMODB_PORT,
which the stack points the functions at) and every DynamoDB request sent to moto's endpoint
is forwarded to it (local_stack/dynamodb_local.py); it dies with this process.

Usage: python -m local_stack.moto_process PARENT_PID PORT
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from local_stack.children import die_with_parent


def main() -> None:
    parent_pid, port = int(sys.argv[1]), sys.argv[2]
    die_with_parent(parent_pid)
    # One werkzeug access-log line per SQS long poll drowns everything else.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.server import main as moto_main

    from local_stack.moto_locking import patch_moto
    from local_stack.moto_transactions import cheap_transaction_rollback

    patch_moto()
    cheap_transaction_rollback()
    jar = os.environ.get("LOCAL_DYNAMODB_JAR")
    if jar:
        from local_stack import dynamodb_local
        from local_stack.aws import free_port

        dynamodb_port = int(os.environ.get("LOCAL_DYNAMODB_PORT") or free_port())
        log_path = Path(os.environ.get("LOCAL_DYNAMODB_LOG") or os.devnull)
        java = dynamodb_local.start(Path(jar), dynamodb_port, log_path)
        dynamodb_local.wait_ready(dynamodb_port, java, dynamodb_local.START_TIMEOUT_S)
        dynamodb_local.install_router(dynamodb_port)
        print(f"DynamoDB requests go to DynamoDB Local on port {dynamodb_port}", flush=True)

    moto_main(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main()
