"""A deployed Retail Pulse stack as the `clients` command sees it, in moto: a REST API, the
usage plan SAM makes for it (with SAM's own API key on it), and a CloudFormation stack whose
outputs name both, as template.yaml's ApiId and UsagePlanId outputs do.

Import `deployed_stack` into a test module to have the `deployed` fixture there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from retail_pulse.settings import get_settings

STACK = "retail-pulse"
STAGE = "Prod"
# template.yaml's usage plan limits.
THROTTLE = {"rateLimit": 50.0, "burstLimit": 100}
QUOTA = {"limit": 100000, "period": "DAY"}


@dataclass
class Deployed:
    """What a test needs to arrange more, and to check what the command did."""

    apigateway: Any
    cloudformation: Any
    api_id: str
    plan_id: str
    sam_key_id: str
    stacks: list[str] = field(default_factory=list)

    def plan(self, name: str, api_id: str | None = None, rate: float = 5.0, burst: int = 10) -> str:
        """Another usage plan, on this API unless told otherwise; returns its id."""
        return self.apigateway.create_usage_plan(
            name=name,
            apiStages=[{"apiId": api_id or self.api_id, "stage": STAGE}],
            throttle={"rateLimit": rate, "burstLimit": burst},
            quota={"limit": 1000, "period": "WEEK"},
        )["id"]

    def api(self, name: str) -> str:
        return self.apigateway.create_rest_api(name=name)["id"]

    def plan_keys(self, plan_id: str | None = None) -> list[dict[str, Any]]:
        """The keys on a plan (the stack's by default), with their values."""
        return self.apigateway.get_usage_plan_keys(usagePlanId=plan_id or self.plan_id)["items"]

    def all_keys(self) -> list[dict[str, Any]]:
        return self.apigateway.get_api_keys(includeValues=True)["items"]

    def stack(self, name: str, outputs: dict[str, str]) -> None:
        """A stack whose outputs are exactly these (a queue stands in for its resources)."""
        template = {
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        self.cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))
        self.stacks.append(name)


@pytest.fixture(name="deployed")
def deployed_stack() -> Iterator[Deployed]:
    """The `retail-pulse` stack, deployed with RequireApiKey=true, in a fresh moto."""
    get_settings.cache_clear()
    with mock_aws():
        apigateway = boto3.client("apigateway", region_name="us-east-1")
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        api_id = apigateway.create_rest_api(name=STACK)["id"]
        plan_id = apigateway.create_usage_plan(
            name=f"{STACK}-RetailPulseApiUsagePlan",
            apiStages=[{"apiId": api_id, "stage": STAGE}],
            throttle=THROTTLE,
            quota=QUOTA,
        )["id"]
        sam_key = apigateway.create_api_key(name=f"{STACK}-RetailPulseApiApiKey", enabled=True)
        apigateway.create_usage_plan_key(
            usagePlanId=plan_id, keyId=sam_key["id"], keyType="API_KEY"
        )
        setup = Deployed(apigateway, cloudformation, api_id, plan_id, sam_key["id"])
        setup.stack(
            STACK,
            {
                "ApiUrl": f"https://{api_id}.execute-api.us-east-1.amazonaws.com/{STAGE}",
                "ApiId": api_id,
                "UsagePlanId": plan_id,
                "ApiKeyId": sam_key["id"],
            },
        )
        yield setup
    get_settings.cache_clear()
