"""The AWS clients of the data layer, built in one place, and a way to watch them.

Every client the data layer uses is built here (or, for PynamoDB's shared connection,
passed through `watched`), for this deployment's region and endpoints (AWS_ENDPOINT_URL
and AWS_ENDPOINT_URL_DYNAMODB: moto, the local stack, MiniStack) with standard retries.
Code above the data layer that wants to see what the clients send (metering, in
retail_pulse.metering) registers a watcher with `on_client`; the data layer knows nothing
of it. A watcher registered late is applied to the clients already built.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from retail_pulse.settings import get_settings

Watcher = Callable[[Any], object]

_lock = threading.Lock()
_watchers: list[Watcher] = []
_clients: weakref.WeakSet[Any] = weakref.WeakSet()


def client(service: str, max_pool_connections: int = 10, **config: Any) -> Any:
    """A boto3 client of `service`; `config` adds to botocore's Config (signature_version)."""
    settings = get_settings()
    endpoint = settings.dynamodb_endpoint if service == "dynamodb" else settings.endpoint_url
    built = boto3.client(
        service,
        region_name=settings.region,
        endpoint_url=endpoint,
        config=Config(
            max_pool_connections=max_pool_connections, retries={"mode": "standard"}, **config
        ),
    )
    return watched(built)


def watched(built: Any) -> Any:
    """Show `built` to every watcher, now and to those registered later; returns it."""
    with _lock:
        if built in _clients:
            return built
        _clients.add(built)
        watchers = list(_watchers)
    for watcher in watchers:
        watcher(built)
    return built


def on_client(watcher: Watcher) -> None:
    """Call `watcher` with every client built, those built already included (idempotent)."""
    with _lock:
        if watcher in _watchers:
            return
        _watchers.append(watcher)
        existing = list(_clients)
    for built in existing:
        watcher(built)
