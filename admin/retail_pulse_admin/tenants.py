"""Add and list the clients of a deployed stack: each is an API key on a usage plan that
covers the stack's REST API, and its key's id is its tenant.

Which API: `--stack NAME` (default `retail-pulse`, samconfig.toml's stack_name) reads the
stack's `ApiId` and `UsagePlanId` outputs from CloudFormation; `--api-id ID` names the REST
API directly (no CloudFormation call). The usage plan a new key goes on is the stack's own
(`UsagePlanId`), or `--plan` (an id or a name), which must cover the same API: a key on a
plan that does not would be refused by it. Region and endpoint come from the environment,
as for every tool here (AWS_REGION, AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from retail_pulse.domain import NewTenant, Tenant, UsagePlan
from retail_pulse.settings import get_settings
from retail_pulse_admin import api_keys as gateway
from retail_pulse_admin.api_keys import GatewayError

# samconfig.toml's stack_name: what `sam deploy` names the stack unless told otherwise.
DEFAULT_STACK = "retail-pulse"
# The ApiUrl output (https://<api id>.execute-api.<region>.amazonaws.com/<stage>) names the
# API on stacks deployed before the ApiId output existed.
_API_URL = re.compile(r"^https://([a-z0-9]+)\.execute-api\.")
# Plain words a person types on a command line; API Gateway itself takes almost anything.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

__all__ = [
    "DEFAULT_STACK",
    "AddedTenant",
    "ApiTarget",
    "GatewayError",
    "TenantListing",
    "TenantsError",
    "add_tenant",
    "describe_limits",
    "find_api",
    "list_tenants",
]


class TenantsError(Exception):
    """The command cannot be carried out as asked (no such stack, API or plan, a name
    already taken); the message says what to change."""


@dataclass(frozen=True)
class ApiTarget:
    """The REST API whose clients these are, and how it was found."""

    api_id: str
    stack: str | None  # None when named by --api-id
    stack_plan_id: str | None  # the stack's UsagePlanId output

    def describe(self) -> str:
        return f"API {self.api_id}" + (f" (stack {self.stack})" if self.stack else "")


@dataclass(frozen=True)
class AddedTenant:
    """A client just created on this API (its key's value is in `created`, once)."""

    api: ApiTarget
    created: NewTenant


@dataclass(frozen=True)
class TenantListing:
    """Every client of the API, with the plans (and so the limits) they are on."""

    api: ApiTarget
    plans: tuple[UsagePlan, ...]
    tenants: tuple[Tenant, ...]


def _where() -> str:
    settings = get_settings()
    return settings.endpoint_url or f"AWS {settings.region}"


def find_api(stack: str | None = None, api_id: str | None = None) -> ApiTarget:
    """The API named by `api_id`, or else by the stack (default DEFAULT_STACK)."""
    if stack and api_id:
        raise TenantsError(
            "give --stack or --api-id, not both (RETAIL_PULSE_STACK and RETAIL_PULSE_API_ID "
            "count as given)"
        )
    if api_id:
        if not gateway.rest_api_exists(api_id):
            raise TenantsError(
                f"no REST API {api_id} in {_where()}: check --api-id (env RETAIL_PULSE_API_ID) "
                "and AWS_REGION"
            )
        return ApiTarget(api_id=api_id, stack=None, stack_plan_id=None)
    name = stack or DEFAULT_STACK
    outputs = gateway.stack_outputs(name)
    if outputs is None:
        raise TenantsError(
            f"no stack {name} in {_where()}: name the stack with --stack (env "
            "RETAIL_PULSE_STACK), or the API with --api-id, and check AWS_REGION"
        )
    found = outputs.get("ApiId") or _api_id_from_url(outputs.get("ApiUrl", ""))
    if not found:
        raise TenantsError(
            f"stack {name} has no ApiId or ApiUrl output, so it is not a Retail Pulse stack: "
            "name the stack with --stack, or the API with --api-id"
        )
    return ApiTarget(api_id=found, stack=name, stack_plan_id=outputs.get("UsagePlanId") or None)


def _api_id_from_url(url: str) -> str | None:
    match = _API_URL.match(url.strip())
    return match.group(1) if match else None


def list_tenants(stack: str | None = None, api_id: str | None = None) -> TenantListing:
    """Every API key on a usage plan of the API, by name (one row per key and plan)."""
    api = find_api(stack, api_id)
    plans = _plans_of(api)
    tenants = sorted(gateway.tenants_of(plans), key=lambda c: (c.name, c.plan_id, c.key_id))
    return TenantListing(api=api, plans=tuple(plans), tenants=tuple(tenants))


def add_tenant(
    name: str,
    stack: str | None = None,
    api_id: str | None = None,
    plan: str | None = None,
) -> AddedTenant:
    """Create the client `name`: a new API key on the stack's usage plan, or on `plan` (an
    id or a name of a plan covering the same API). Its value is in the result only."""
    if not _NAME.match(name):
        raise TenantsError(
            f"client name {name!r} is not usable: use 1 to 128 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    api = find_api(stack, api_id)
    every_plan = gateway.usage_plans()
    plans = [p for p in every_plan if p.covers(api.api_id)]
    chosen = _choose_plan(api, plans, plan, every_plan)
    for tenant in gateway.tenants_of(plans):
        if tenant.name == name:
            raise TenantsError(
                f"a client named {name} already exists on {api.describe()}: tenant "
                f"{tenant.key_id}, usage plan {tenant.plan_id}. Choose another name "
                "(retail-pulse clients list shows them all)"
            )
    description = f"Retail Pulse client {name} of {api.describe()}"
    return AddedTenant(api=api, created=gateway.create_tenant(name, chosen, description))


def _plans_of(api: ApiTarget) -> list[UsagePlan]:
    return [plan for plan in gateway.usage_plans() if plan.covers(api.api_id)]


_PERIODS = {"DAY": "a day", "WEEK": "a week", "MONTH": "a month"}


def describe_limits(plan: UsagePlan) -> str:
    """What the plan allows each of its keys, in words: the throttle, then the quota."""
    parts = []
    if plan.rate_limit is not None:
        parts.append(f"{plan.rate_limit:g} requests/s")
    if plan.burst_limit is not None:
        parts.append(f"bursts of {plan.burst_limit}")
    if plan.quota_limit is not None:
        period = _PERIODS.get(plan.quota_period or "", f"per {plan.quota_period}")
        parts.append(f"{plan.quota_limit} requests {period}")
    return ", ".join(parts) or "no throttle or quota"


def _label(plan: UsagePlan) -> str:
    return f"{plan.plan_id} ({plan.name})" if plan.name else plan.plan_id


def _choose_plan(
    api: ApiTarget, plans: list[UsagePlan], wanted: str | None, every_plan: list[UsagePlan]
) -> UsagePlan:
    """The plan the new key goes on; every way of not finding one says what to do."""
    if wanted:
        matches = [p for p in plans if p.plan_id == wanted] or [
            p for p in plans if p.name == wanted
        ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise TenantsError(
                f"{len(matches)} usage plans of {api.describe()} are named {wanted}: "
                f"{', '.join(p.plan_id for p in matches)}; give --plan its id"
            )
        elsewhere = [p for p in every_plan if wanted in (p.plan_id, p.name)]
        if elsewhere:
            stage = next((s for p in plans for a, s in p.api_stages if a == api.api_id), "Prod")
            raise TenantsError(
                f"usage plan {_label(elsewhere[0])} does not cover {api.describe()}, so the "
                "API would refuse its keys. Add the API's stage to the plan first: aws "
                f"apigateway update-usage-plan --usage-plan-id {elsewhere[0].plan_id} "
                f"--patch-operations op=add,path=/apiStages,value={api.api_id}:{stage}"
            )
        covering = f": {', '.join(_label(p) for p in plans)}" if plans else ": none"
        raise TenantsError(
            f"no usage plan {wanted} in {_where()}; give --plan the id or name of one "
            f"covering {api.describe()}{covering}"
        )
    if not plans:
        raise TenantsError(
            f"no usage plan covers {api.describe()}: the API takes no keys (deployed with "
            "RequireApiKey=false?). Deploy it with RequireApiKey=true, or give --plan"
        )
    if api.stack_plan_id:
        for candidate in plans:
            if candidate.plan_id == api.stack_plan_id:
                return candidate
    if len(plans) == 1:
        return plans[0]
    raise TenantsError(
        f"{len(plans)} usage plans cover {api.describe()}: "
        f"{', '.join(_label(p) for p in plans)}; choose one with --plan"
    )
