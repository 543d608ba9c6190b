"""The only code that talks to API Gateway's keys and usage plans, and to CloudFormation for
a stack's outputs: what the `clients` admin command needs, as retail_pulse.domain types.

No function here logs, and no value returned carries an existing key's secret: only
`create_tenant` sees one, for the key it has just made, and hands it back once in a
NewTenant (whose repr hides it).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from retail_pulse.domain import NewTenant, Tenant, UsagePlan
from retail_pulse.settings import get_settings


class GatewayError(Exception):
    """AWS could not be reached, or refused a call (no credentials, no permission, a
    throttle past retries); the message names the call and AWS's reason."""


@lru_cache(maxsize=8)
def _client(service: str, region: str, endpoint_url: str | None) -> Any:
    """One client per service and place, so a changed AWS_REGION or endpoint is honoured."""
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(retries={"mode": "standard"}),
    )


def _aws(service: str) -> Any:
    settings = get_settings()
    return _client(service, settings.region, settings.endpoint_url)


def _failed(call: str, error: Exception) -> GatewayError:
    """AWS's own words, without the request (which, for a key, would hold its value)."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        reason = f"{details.get('Code', 'Error')}: {details.get('Message', '')}".rstrip(": ")
    else:
        reason = str(error)
    return GatewayError(f"{call} failed: {reason}")


def _pages(service: str, operation: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every item of a paginated API Gateway listing."""
    try:
        pages = (
            _aws(service)
            .get_paginator(operation)
            .paginate(**params, PaginationConfig={"PageSize": 500})
        )
        for page in pages:
            yield from page.get("items", [])
    except (ClientError, BotoCoreError) as error:
        raise _failed(operation, error) from error


def _utc(value: Any) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


# -- CloudFormation --------------------------------------------------------------------


def stack_outputs(stack_name: str) -> dict[str, str] | None:
    """The stack's outputs by key, or None when no stack has this name here."""
    try:
        stacks = _aws("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        details = error.response.get("Error", {})
        if details.get("Code") == "ValidationError" and "does not exist" in str(
            details.get("Message", "")
        ):
            return None
        raise _failed("DescribeStacks", error) from error
    except BotoCoreError as error:
        raise _failed("DescribeStacks", error) from error
    if not stacks:
        return None
    return {
        output["OutputKey"]: output.get("OutputValue", "")
        for output in stacks[0].get("Outputs") or []
    }


# -- API Gateway -------------------------------------------------------------------------


def rest_api_exists(api_id: str) -> bool:
    try:
        _aws("apigateway").get_rest_api(restApiId=api_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NotFoundException":
            return False
        raise _failed("GetRestApi", error) from error
    except BotoCoreError as error:
        raise _failed("GetRestApi", error) from error
    return True


def _plan(item: dict[str, Any]) -> UsagePlan:
    throttle = item.get("throttle") or {}
    quota = item.get("quota") or {}
    return UsagePlan(
        plan_id=item["id"],
        name=item.get("name") or None,
        api_stages=tuple(
            (stage["apiId"], stage.get("stage", "")) for stage in item.get("apiStages") or []
        ),
        rate_limit=throttle.get("rateLimit"),
        burst_limit=throttle.get("burstLimit"),
        quota_limit=quota.get("limit"),
        quota_period=quota.get("period"),
    )


def usage_plans() -> list[UsagePlan]:
    """Every usage plan of the account in this region (API Gateway cannot filter by API)."""
    return [_plan(item) for item in _pages("apigateway", "get_usage_plans")]


def tenants_of(plans: list[UsagePlan]) -> list[Tenant]:
    """The API keys on these plans, one Tenant per key and plan."""
    members = [
        (plan.plan_id, item["id"])
        for plan in plans
        for item in _pages("apigateway", "get_usage_plan_keys", usagePlanId=plan.plan_id)
        if item.get("type", "API_KEY") == "API_KEY"
    ]
    if not members:
        return []
    # Names, dates and state in one listing (without values) rather than a call per key.
    keys = {item["id"]: item for item in _pages("apigateway", "get_api_keys")}
    clients = []
    for plan_id, key_id in members:
        key = keys.get(key_id, {})
        clients.append(
            Tenant(
                name=key.get("name") or key_id,
                key_id=key_id,
                plan_id=plan_id,
                created_at=_utc(key.get("createdDate")),
                enabled=bool(key.get("enabled", False)),
            )
        )
    return clients


def create_tenant(name: str, plan: UsagePlan, description: str) -> NewTenant:
    """Create an enabled API key named `name` (API Gateway makes its value) and put it on
    `plan`. A key that could not be put on the plan is deleted again, so a failed add
    leaves no key behind that works nowhere."""
    gateway = _aws("apigateway")
    try:
        key = gateway.create_api_key(name=name, description=description, enabled=True)
    except (ClientError, BotoCoreError) as error:
        raise _failed("CreateApiKey", error) from error
    try:
        _attach(key["id"], plan.plan_id)
    except (ClientError, BotoCoreError) as error:
        try:
            gateway.delete_api_key(apiKey=key["id"])
        except (ClientError, BotoCoreError):
            raise _failed(
                f"CreateUsagePlanKey (and deleting the new key {key['id']} again)", error
            ) from error
        raise _failed("CreateUsagePlanKey", error) from error
    tenant = Tenant(
        name=name,
        key_id=key["id"],
        plan_id=plan.plan_id,
        created_at=_utc(key.get("createdDate")),
        enabled=bool(key.get("enabled", True)),
    )
    return NewTenant(tenant=tenant, plan=plan, api_key=key["value"])


def _attach(key_id: str, plan_id: str) -> None:
    _aws("apigateway").create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")
