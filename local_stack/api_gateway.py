"""API Gateway (REST API, Lambda proxy integration) on 127.0.0.1.

Routes come from the functions' `Api` events. Each request becomes the version 1.0 proxy
event API Gateway sends, and the function's response (statusCode, headers,
multiValueHeaders, body, isBase64Encoded) goes back to the client. Errors take API
Gateway's shapes: a function that fails or answers malformed is a 502
`{"message": "Internal server error"}`, a body over 10 MB is a 413, a path no route has or
a method its route does not serve is a 403 `{"message": "Missing Authentication Token"}`
(what a REST API answers for both), and when an API key is configured (LOCAL_API_KEY), a
route called without it in `x-api-key` is a 403 `{"message": "Forbidden"}`, as with the
template's RequireApiKey; each key is then throttled by the usage plan's rate and burst (a
token bucket per key, as API Gateway's usage plans do): over them, 429
`{"message": "Too Many Requests"}` before the function runs.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local_stack.loopback import LoopbackServer
from local_stack.model import ApiRoute
from local_stack.runtime import Invocation, LogSink
from local_stack.template import ACCOUNT_ID

log = logging.getLogger("local_stack")

STAGE = "Prod"
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload quota
_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|xml|javascript|x-www-form-urlencoded|[\w.+-]+\+(json|xml)))$"
)
_INTERNAL_ERROR = {"message": "Internal server error"}
# Local stack only: what CloudWatch would have received as metrics, totalled.
METRICS_PATH = "/local/metrics"
_FORBIDDEN = {"message": "Forbidden"}
# API Gateway's MISSING_AUTHENTICATION_TOKEN: no resource for the path, or no such method on it.
_NO_ROUTE = {"message": "Missing Authentication Token"}

_THROTTLED = {"message": "Too Many Requests"}

Invoke = Callable[[str, dict[str, Any]], Invocation]


class KeyThrottle:
    """A usage plan's Throttle: `rate` requests a second per key, in bursts of up to `burst`
    (a token bucket per key). `clock` is injectable so a test runs without waiting."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str | None, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: str | None) -> bool:
        """Take one token of the key's bucket; False when it is empty (a 429)."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            allowed = tokens >= 1
            self._buckets[key_id] = (tokens - 1 if allowed else tokens, now)
            return allowed


# A local-only endpoint (OpenAPI document, later metrics): returns (status, headers, body),
# or None to fall through to the template's routes.
LocalEndpoint = Callable[[], tuple[int, dict[str, str], bytes] | None]


@dataclass(frozen=True)
class _CompiledRoute:
    route: ApiRoute
    pattern: re.Pattern[str]
    specificity: tuple[int, int]


def _compile(route: ApiRoute) -> _CompiledRoute:
    """`/a/{id}` matches one segment, `/a/{proxy+}` the rest of the path."""
    regex, params, greedy = "", 0, 0
    for part in re.split(r"(\{[^}]+\})", route.path):
        if part.startswith("{") and part.endswith("+}"):
            regex += f"(?P<{part[1:-2]}>.+)"
            greedy += 1
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
            params += 1
        else:
            regex += re.escape(part)
    # API Gateway prefers static paths to parameters, and parameters to greedy ones.
    return _CompiledRoute(route, re.compile(f"^{regex}$"), (greedy, params))


class ApiGateway:
    def __init__(
        self,
        routes: list[ApiRoute],
        invoke: Invoke,
        sink: LogSink,
        port: int = 3000,
        local_endpoints: dict[tuple[str, str], LocalEndpoint] | None = None,
        api_keys: dict[str, str | None] | None = None,
        gateway_response_headers: dict[str, dict[str, str]] | None = None,
        gateway_response_bodies: dict[str, tuple[int | None, str]] | None = None,
        throttle: KeyThrottle | None = None,
    ) -> None:
        self._routes = sorted((_compile(r) for r in routes), key=lambda c: c.specificity)
        # x-api-key value -> the key's id in requestContext.identity.apiKeyId (None for the
        # one-key case, LOCAL_API_KEY: the default tenant). None: no key is checked (the
        # default locally, like RequireApiKey=false).
        self.api_keys = dict(api_keys) if api_keys else None
        self.gateway_response_headers = dict(gateway_response_headers or {})
        # The template's own status and body for a response type (REQUEST_TOO_LARGE's
        # advice to upload); the generic ones ($context.error.messageString) are API
        # Gateway's own message, which the default bodies here already are.
        self.gateway_response_bodies = dict(gateway_response_bodies or {})
        # Only with keys: a usage plan throttles the keys it covers.
        self.throttle = throttle if self.api_keys is not None else None
        self._invoke = invoke
        self._sink = sink
        self.local_endpoints = dict(local_endpoints or {})
        self.local_endpoints.setdefault(("GET", METRICS_PATH), self._metrics)
        gateway = self

        class Handler(_RequestHandler):
            api = gateway

        self._server = LoopbackServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="api-gateway", daemon=True
        )

    def start(self) -> str:
        self._thread.start()
        return self.url

    def _metrics(self) -> tuple[int, dict[str, str], bytes]:
        """The totals of every EMF metric the functions printed (local_stack/logs.py)."""
        body = json.dumps(self._sink.metrics.snapshot(), indent=2, sort_keys=True)
        return 200, {"Content-Type": "application/json"}, body.encode()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def match(self, method: str, path: str) -> tuple[ApiRoute | None, dict[str, str], list[str]]:
        """The route for method+path, its path parameters, and the methods the path allows."""
        allowed: list[str] = []
        for compiled in self._routes:
            found = compiled.pattern.match(path)
            if not found:
                continue
            if compiled.route.method in (method, "ANY"):
                return compiled.route, {k: unquote(v) for k, v in found.groupdict().items()}, []
            allowed.append(compiled.route.method)
        return None, {}, allowed

    def build_event(
        self,
        handler: _RequestHandler,
        route: ApiRoute,
        path: str,
        query: str,
        path_parameters: dict[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        """The REST API (v1) Lambda proxy event for one request."""
        multi_headers: dict[str, list[str]] = {}
        for name, value in handler.headers.items():
            multi_headers.setdefault(name, []).append(value)
        multi_query: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            multi_query.setdefault(name, []).append(value)
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text_body, is_base64 = _body_text(body, content_type)
        now = time.time()
        request_id = str(uuid.uuid4())
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": handler.command,
            "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": "local",
                "domainName": handler.headers.get("Host", f"127.0.0.1:{self.port}"),
                "domainPrefix": "local",
                "extendedRequestId": request_id,
                "httpMethod": handler.command,
                "identity": {
                    "accessKey": None,
                    "accountId": None,
                    "caller": None,
                    "cognitoAuthenticationProvider": None,
                    "cognitoAuthenticationType": None,
                    "cognitoIdentityId": None,
                    "cognitoIdentityPoolId": None,
                    "principalOrgId": None,
                    "sourceIp": handler.client_address[0],
                    "user": None,
                    "userAgent": handler.headers.get("User-Agent"),
                    "userArn": None,
                },
                "path": f"/{STAGE}{path}",
                "protocol": handler.request_version,
                "requestId": request_id,
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "requestTimeEpoch": int(now * 1000),
                "resourceId": "local",
                "resourcePath": route.path,
                "stage": STAGE,
            },
            "body": text_body,
            "isBase64Encoded": is_base64,
        }


def _body_text(body: bytes, content_type: str) -> tuple[str | None, bool]:
    """Text bodies pass as strings; anything else (or undecodable) as base64."""
    if not body:
        return None, False
    if not content_type or _TEXT_TYPES.match(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


class _RequestHandler(BaseHTTPRequestHandler):
    api: ApiGateway
    protocol_version = "HTTP/1.1"
    server_version = "LocalApiGateway"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is written by _handle

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def __getattr__(self, name: str) -> Any:
        # Every other method (TRACE, QUERY...) too: http.server would answer it with its
        # own 501 HTML page, where API Gateway answers in JSON (here its 403).
        if name.startswith("do_"):
            return self.do_GET
        raise AttributeError(name)

    def _handle(self) -> None:
        started = time.perf_counter()
        # The API key's id (the client, the tenant) once _dispatch has checked the key.
        self.api_key_id: str | None = None
        parts = urlsplit(self.path)
        path = unquote(parts.path) or "/"
        status = self._dispatch(path, parts.query)
        self.api._sink.request(
            self.command,
            self.path,
            status,
            (time.perf_counter() - started) * 1000,
            self.api_key_id,
        )

    def _dispatch(self, path: str, query: str) -> int:
        body = self._read_body()
        if body is None:
            return self._json(
                413, {"message": "Request Too Long"}, close=True, response_type="REQUEST_TOO_LARGE"
            )
        local = self.api.local_endpoints.get((self.command, path))
        if local is not None and (answer := local()) is not None:
            status, headers, content = answer
            return self._send(status, headers, content)
        route, path_parameters, _allowed = self.api.match(self.command, path)
        if route is None:
            return self._json(
                403, _NO_ROUTE, {"x-amzn-ErrorType": "MissingAuthenticationTokenException"}
            )
        key_id: str | None = None
        if self.api.api_keys is not None:
            sent = self.headers.get("x-api-key", "").encode()
            known = [
                name
                for key, name in self.api.api_keys.items()
                if hmac.compare_digest(sent, key.encode())
            ]
            if not known:
                return self._json(403, _FORBIDDEN, {"x-amzn-ErrorType": "ForbiddenException"})
            key_id = self.api_key_id = known[0]
            if self.api.throttle is not None and not self.api.throttle.allow(key_id):
                return self._json(429, _THROTTLED, {"x-amzn-ErrorType": "TooManyRequestsException"})
        event = self.api.build_event(self, route, path, query, path_parameters, body)
        if key_id is not None:
            event["requestContext"]["identity"]["apiKeyId"] = key_id
        invocation = self.api._invoke(route.function, event)
        return self._respond(invocation)

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is over API Gateway's 10 MB."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                total += size
                if total > MAX_PAYLOAD_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _respond(self, invocation: Invocation) -> int:
        payload = invocation.payload
        if not invocation.ok or not isinstance(payload, dict) or "statusCode" not in payload:
            if invocation.ok:
                log.error("malformed Lambda proxy response: %.500r", payload)
            return self._json(
                502, _INTERNAL_ERROR, {"x-amzn-ErrorType": "InternalServerErrorException"}
            )
        try:
            status = int(payload["statusCode"])
            body = payload.get("body")
            content = b"" if body is None else str(body).encode()
            if payload.get("isBase64Encoded"):
                content = base64.b64decode(content)
            headers: list[tuple[str, str]] = [
                (k, str(v)) for k, v in (payload.get("headers") or {}).items()
            ]
            for name, values in (payload.get("multiValueHeaders") or {}).items():
                headers.extend((name, str(v)) for v in values)
        except (TypeError, ValueError, AttributeError) as error:
            log.error("malformed Lambda proxy response (%s): %.500r", error, payload)
            return self._json(502, _INTERNAL_ERROR)
        names = {name.lower() for name, _ in headers}
        if "content-type" not in names:
            headers.append(("Content-Type", "application/json"))
        headers.append(("x-amzn-RequestId", invocation.request_id))
        return self._send(status, headers, content)

    def _json(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        close: bool = False,
        response_type: str | None = None,
    ) -> int:
        kind = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        content = json.dumps(body).encode()
        declared = self.api.gateway_response_bodies.get(response_type or "")
        if declared is not None:
            declared_status, template = declared
            status = declared_status or status
            content = template.replace(
                "$context.error.messageString", json.dumps(body.get("message", ""))
            ).encode()
        all_headers = {
            "Content-Type": "application/json",
            **self.api.gateway_response_headers.get(kind, {}),
            **self.api.gateway_response_headers.get(response_type or "", {}),
            **(headers or {}),
        }
        if close:
            all_headers["Connection"] = "close"
            self.close_connection = True
        return self._send(status, all_headers, content)

    def _send(
        self, status: int, headers: dict[str, str] | list[tuple[str, str]], content: bytes
    ) -> int:
        self.send_response(status)
        items = headers.items() if isinstance(headers, dict) else headers
        for name, value in items:
            if name.lower() not in ("content-length", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)
        return status
