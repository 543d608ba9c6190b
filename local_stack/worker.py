"""A Lambda execution environment: one child process, one function, one invocation at a time.

Usage: python -m local_stack.worker PARENT_PID FD HANDLER FUNCTION_ARN (cwd: the CodeUri)

Like Lambda it imports the handler module once (the init phase), then serves invocations:
each gets a Lambda-like context and is bracketed by START / END / REPORT lines on stdout,
in order with the handler's own output. Events and results cross the socket `FD` as
length-prefixed JSON. Only the standard library is imported before the handler, so the
function's module namespace is its own.
"""

from __future__ import annotations

import decimal
import importlib
import json
import math
import os
import resource
import socket
import struct
import sys
import time
import traceback
from typing import Any

_HEADER = struct.Struct(">I")


def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, default=_json_default).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None when the other side has closed the socket."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    data = _recv_exactly(sock, _HEADER.unpack(header)[0])
    return None if data is None else json.loads(data)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _json_default(value: Any) -> Any:
    # Lambda's Python runtime serialises Decimal (what boto3's DynamoDB resource returns).
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    def __init__(self, request_id: str, deadline: float, function_arn: str) -> None:
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = function_arn
        # A string, as in the real runtime (awslambdaric reads the environment variable).
        self.memory_limit_in_mb = env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = env["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _error(error: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "requestId": "",
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


def _load_handler(handler: str) -> Any:
    module_name, _, function_name = handler.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise _InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise _InitError(
            "Runtime.HandlerNotFound",
            f"Handler '{function_name}' missing on module '{module_name}'",
        )
    return function


class _InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _log(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _invoke(
    handler: Any, request: dict[str, Any], init_ms: float | None, function_arn: str
) -> dict[str, Any]:
    request_id = request["request_id"]
    context = LambdaContext(request_id, time.time() + request["timeout_s"], function_arn)
    _log(f"START RequestId: {request_id} Version: $LATEST")
    started = time.perf_counter()
    try:
        payload = handler(request["event"], context)
        body = json.loads(json.dumps(payload, default=_json_default))
        reply = {"ok": True, "payload": body}
    except Exception as error:
        details = _error(error)
        if isinstance(error, TypeError) and "JSON serializable" in str(error):
            details["errorType"] = "Runtime.MarshalError"
        details["requestId"] = request_id
        # What the Python runtime writes to the log for an unhandled exception.
        sys.stderr.write(
            f"[ERROR] {details['errorType']}: {error}\n" + "".join(traceback.format_exc())
        )
        sys.stderr.flush()
        reply = {"ok": False, "error": details}
    duration_ms = (time.perf_counter() - started) * 1000
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {math.ceil(duration_ms)} ms\t"
        f"Memory Size: {os.environ['AWS_LAMBDA_FUNCTION_MEMORY_SIZE']} MB\t"
        f"Max Memory Used: {max_rss_mb} MB"
    )
    if init_ms is not None:
        report += f"\tInit Duration: {init_ms:.2f} ms"
    _log(f"END RequestId: {request_id}")
    _log(report)
    return {**reply, "duration_ms": duration_ms, "max_memory_mb": max_rss_mb}


def main() -> None:
    parent_pid, fd, handler_name, function_arn = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5]
    from local_stack.children import die_with_parent

    die_with_parent(parent_pid)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.path.insert(0, os.getcwd())  # LAMBDA_TASK_ROOT first, as in Lambda
    sock = socket.socket(fileno=fd)

    started = time.perf_counter()
    handler = None
    init_error: dict[str, Any] | None = None
    try:
        handler = _load_handler(handler_name)
    except _InitError as error:
        init_error = _error(error, error.error_type)
        traceback.print_exc()
    except Exception as error:  # the module raised while importing
        init_error = _error(error, "Runtime.ImportModuleError")
        traceback.print_exc()
    init_ms: float | None = (time.perf_counter() - started) * 1000
    send_frame(sock, {"ok": init_error is None, "error": init_error, "init_ms": init_ms})

    while (request := recv_frame(sock)) is not None:
        if handler is None:
            assert init_error is not None  # a handler that did not load left its error
            # Lambda retries init on every invocation of a broken environment and fails it.
            send_frame(
                sock, {"ok": False, "error": {**init_error, "requestId": request["request_id"]}}
            )
            continue
        send_frame(sock, _invoke(handler, request, init_ms, function_arn))
        init_ms = None


if __name__ == "__main__":
    main()
