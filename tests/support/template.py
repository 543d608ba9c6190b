"""template.yaml as CloudFormation sees it (short-form tags expanded), for tests that check
the template against the code."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"


@lru_cache(maxsize=1)
def load_template() -> dict[str, Any]:
    parsed, errors = decode(str(TEMPLATE_PATH))
    assert not errors, errors
    return parsed


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The template's resources of one type, by logical id."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


# What CreateTable takes of an AWS::DynamoDB::Table's properties (the rest, point-in-time
# recovery and encryption, are settings of a table made, which no test here relies on; TTL is
# one request more, below).
_CREATE_TABLE_PROPERTIES = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
)


@lru_cache(maxsize=1)
def _table_definitions() -> tuple[tuple[str, dict[str, Any], dict[str, Any] | None], ...]:
    template = load_template()
    environment = template["Globals"]["Function"]["Environment"]["Variables"]
    setting_of = {
        value["Ref"]: name
        for name, value in environment.items()
        if isinstance(value, dict) and set(value) == {"Ref"}
    }
    return tuple(
        (
            setting_of[logical_id],
            {k: v for k, v in table["Properties"].items() if k in _CREATE_TABLE_PROPERTIES},
            table["Properties"].get("TimeToLiveSpecification"),
        )
        for logical_id, table in resources(template, "AWS::DynamoDB::Table").items()
    )


def create_tables(dynamodb: Any, environ: Mapping[str, str]) -> None:
    """The template's tables, each with one CreateTable request (keys, indexes as the template
    has them) and its TTL, named as the functions' environment (`environ`) names them.
    Cheaper than PynamoDB's create_table, which first asks whether the table exists: a
    test's setup made 7 tables in ~0.8 s of moto's time before, about half of an integration
    test's."""
    for setting, definition, ttl in _table_definitions():
        dynamodb.create_table(TableName=environ[setting], **definition)
        if ttl is not None:
            dynamodb.update_time_to_live(TableName=environ[setting], TimeToLiveSpecification=ttl)
