"""The bill's meter (retail_pulse.metering), once enabled as lambda_entry does, counts every
DynamoDB request a model sends from its first one, through PynamoDB's documented signal,
with PynamoDB itself unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from pynamodb.connection import table as pynamodb_table

from retail_pulse import metering
from retail_pulse.data.models import JobRecord, StoreRecord, connection
from retail_pulse.metering import usage


@pytest.fixture
def fresh_usage(aws: Any) -> Any:
    """Models with no connection (nor client) yet, as in a new container, and an empty
    tally. The aws fixture made the tables through them."""
    JobRecord._connection = StoreRecord._connection = None
    metering.enable()
    usage.reset()
    yield usage
    usage.reset()


def test_a_models_first_request_is_counted_with_its_capacity(fresh_usage: Any) -> None:
    assert StoreRecord._connection is None  # the request below builds its client

    assert list(StoreRecord.scan()) == []
    StoreRecord(store_id="S1", store_name="One", area_code="A1").save()

    summary = fresh_usage.summary()
    assert summary["requests"] == {"dynamodb.Scan": 1, "dynamodb.PutItem": 1}
    assert summary["dynamodb_wru"] > 0  # the capacity moto reports for the write


def test_the_raw_client_calls_are_counted_too(fresh_usage: Any) -> None:
    assert list(JobRecord.query("missing")) == []
    # data/ calls the shared connection's client directly too; PynamoDB signals nothing.
    connection().client.get_item(
        TableName=JobRecord.Meta.table_name, Key={"job_id": {"S": "missing"}}
    )

    assert fresh_usage.summary()["requests"] == {"dynamodb.Query": 1, "dynamodb.GetItem": 1}


def test_pynamodb_is_left_as_it_ships() -> None:
    from pynamodb.connection import Connection

    assert pynamodb_table.Connection is Connection
