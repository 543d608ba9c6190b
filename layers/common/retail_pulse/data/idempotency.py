"""Where submit's idempotency records live: Powertools' DynamoDB persistence layer on the
Idempotency table (IDEMPOTENCY_TABLE), with the same endpoint as every other client."""

from __future__ import annotations

import boto3
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from retail_pulse.settings import get_settings


def persistence_layer() -> DynamoDBPersistenceLayer:
    settings = get_settings()
    # The endpoint is explicit, as for every other client, so moto and the local stack work.
    client = boto3.client(
        "dynamodb", region_name=settings.region, endpoint_url=settings.dynamodb_endpoint
    )
    return DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=client)
