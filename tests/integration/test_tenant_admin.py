"""Adding and listing the API's clients against moto's API Gateway and CloudFormation: the
stack is found by its outputs, the key goes on the right usage plan, and every way of not
being able to do that is an error that says what to change."""

from __future__ import annotations

import logging
from datetime import UTC

import pytest

from retail_pulse_admin import api_keys as data_clients
from retail_pulse_admin.tenants import (
    GatewayError,
    TenantsError,
    add_tenant,
    describe_limits,
    list_tenants,
)
from tests.support.api_gateway import STACK, Deployed, deployed_stack  # noqa: F401


def test_add_puts_a_new_key_on_the_stacks_usage_plan(deployed: Deployed) -> None:
    added = add_tenant("acme")

    client = added.created.tenant
    assert added.api.api_id == deployed.api_id and added.api.stack == STACK
    assert client.name == "acme" and client.plan_id == deployed.plan_id and client.enabled
    assert client.tenant_id == client.key_id  # what API Gateway sends as identity.apiKeyId
    assert client.created_at is not None and client.created_at.tzinfo == UTC
    on_plan = {key["id"]: key for key in deployed.plan_keys()}
    assert on_plan[client.key_id]["value"] == added.created.api_key
    assert added.created.plan.plan_id == deployed.plan_id
    assert describe_limits(added.created.plan) == (
        "50 requests/s, bursts of 100, 100000 requests a day"
    )


def test_the_new_keys_value_is_not_in_its_repr_nor_in_any_log(
    deployed: Deployed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    added = add_tenant("acme")

    assert added.created.api_key not in repr(added)
    assert added.created.api_key not in caplog.text


def test_list_shows_every_key_on_the_apis_plans_without_values(deployed: Deployed) -> None:
    acme = add_tenant("acme").created
    own_plan = deployed.plan("bulk")
    bulk = add_tenant("bulk-co", plan=own_plan).created

    listing = list_tenants()

    assert [(c.name, c.key_id, c.plan_id) for c in listing.tenants] == [
        ("acme", acme.tenant.key_id, deployed.plan_id),
        ("bulk-co", bulk.tenant.key_id, own_plan),
        (f"{STACK}-RetailPulseApiApiKey", deployed.sam_key_id, deployed.plan_id),
    ]
    assert all(c.enabled and c.created_at is not None for c in listing.tenants)
    assert {p.plan_id for p in listing.plans} == {deployed.plan_id, own_plan}
    assert acme.api_key not in repr(listing) and bulk.api_key not in repr(listing)


def test_list_leaves_out_the_keys_of_other_apis(deployed: Deployed) -> None:
    other_plan = deployed.plan("other", api_id=deployed.api("someone-else"))
    add_tenant("elsewhere", api_id=None, plan=None)  # on ours
    deployed.apigateway.create_usage_plan_key(
        usagePlanId=other_plan,
        keyId=deployed.apigateway.create_api_key(name="theirs", enabled=True)["id"],
        keyType="API_KEY",
    )

    names = [client.name for client in list_tenants().tenants]

    assert "theirs" not in names and "elsewhere" in names


def test_a_name_already_taken_is_an_error_and_creates_nothing(deployed: Deployed) -> None:
    first = add_tenant("acme").created
    before = len(deployed.all_keys())

    with pytest.raises(TenantsError, match="a client named acme already exists") as raised:
        add_tenant("acme", plan=deployed.plan("bulk"))  # on any plan of the API

    assert first.tenant.key_id in str(raised.value)
    assert len(deployed.all_keys()) == before


@pytest.mark.parametrize("name", ["", "-x", "has space", "a/b", "x" * 129])
def test_an_unusable_name_is_an_error(deployed: Deployed, name: str) -> None:
    with pytest.raises(TenantsError, match="is not usable"):
        add_tenant(name)
    assert len(deployed.all_keys()) == 1  # SAM's


@pytest.mark.parametrize("by", ["id", "name"])
def test_plan_puts_the_key_on_that_plan(deployed: Deployed, by: str) -> None:
    plan_id = deployed.plan("bulk", rate=5, burst=10)

    added = add_tenant("bulk-co", plan=plan_id if by == "id" else "bulk").created

    assert added.tenant.plan_id == plan_id
    assert [key["id"] for key in deployed.plan_keys(plan_id)] == [added.tenant.key_id]
    assert added.tenant.key_id not in {key["id"] for key in deployed.plan_keys()}
    assert describe_limits(added.plan) == "5 requests/s, bursts of 10, 1000 requests a week"


def test_a_plan_of_another_api_is_an_error_saying_how_to_attach_it(deployed: Deployed) -> None:
    foreign = deployed.plan("foreign", api_id=deployed.api("other"))

    with pytest.raises(TenantsError, match="does not cover API") as raised:
        add_tenant("acme", plan="foreign")

    message = str(raised.value)
    assert f"--usage-plan-id {foreign}" in message
    assert f"value={deployed.api_id}:Prod" in message
    assert len(deployed.all_keys()) == 1


def test_an_unknown_plan_is_an_error_naming_the_apis_plans(deployed: Deployed) -> None:
    with pytest.raises(TenantsError, match="no usage plan nope") as raised:
        add_tenant("acme", plan="nope")

    assert deployed.plan_id in str(raised.value)


def test_two_plans_of_one_name_need_the_id(deployed: Deployed) -> None:
    deployed.plan("twin")
    deployed.plan("twin")

    with pytest.raises(TenantsError, match=r"2 usage plans .* are named twin"):
        add_tenant("acme", plan="twin")


def test_a_missing_stack_is_an_error_saying_how_to_name_it(deployed: Deployed) -> None:
    with pytest.raises(TenantsError, match="no stack staging in AWS us-east-1: name the stack"):
        list_tenants(stack="staging")
    with pytest.raises(TenantsError, match="no stack staging"):
        add_tenant("acme", stack="staging")


def test_a_stack_that_is_not_retail_pulse_is_an_error(deployed: Deployed) -> None:
    deployed.stack("unrelated", {"Something": "else"})

    with pytest.raises(TenantsError, match="no ApiId or ApiUrl output"):
        list_tenants(stack="unrelated")


def test_a_stack_from_before_the_api_id_output_is_found_by_its_url(deployed: Deployed) -> None:
    deployed.stack(
        "older", {"ApiUrl": f"https://{deployed.api_id}.execute-api.us-east-1.amazonaws.com/Prod"}
    )

    added = add_tenant("acme", stack="older")

    assert added.api.api_id == deployed.api_id
    assert added.created.tenant.plan_id == deployed.plan_id  # the API's only plan


def test_api_id_names_the_api_without_cloudformation(deployed: Deployed) -> None:
    added = add_tenant("acme", api_id=deployed.api_id)

    assert added.api.stack is None and added.created.tenant.plan_id == deployed.plan_id
    assert "acme" in [c.name for c in list_tenants(api_id=deployed.api_id).tenants]


def test_an_unknown_api_id_is_an_error(deployed: Deployed) -> None:
    with pytest.raises(TenantsError, match="no REST API abc123 in AWS us-east-1"):
        list_tenants(api_id="abc123")


def test_stack_and_api_id_together_are_an_error(deployed: Deployed) -> None:
    with pytest.raises(TenantsError, match="not both"):
        list_tenants(stack=STACK, api_id=deployed.api_id)


def test_with_several_plans_and_no_stack_the_plan_must_be_named(deployed: Deployed) -> None:
    deployed.plan("bulk")

    with pytest.raises(TenantsError, match=r"2 usage plans cover API .*choose one with --plan"):
        add_tenant("acme", api_id=deployed.api_id)
    # The stack names its own plan, so there the extra plan changes nothing.
    assert add_tenant("acme").created.tenant.plan_id == deployed.plan_id


def test_an_api_without_keys_is_an_error(deployed: Deployed) -> None:
    """RequireApiKey=false: no usage plan, no UsagePlanId output."""
    open_api = deployed.api("open")
    deployed.stack("open", {"ApiId": open_api})

    with pytest.raises(TenantsError, match=r"no usage plan covers API .*RequireApiKey=true"):
        add_tenant("acme", stack="open")
    assert list_tenants(stack="open").tenants == ()


def test_a_key_that_cannot_join_the_plan_is_deleted_again(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    def refuse(key_id: str, plan_id: str) -> None:
        raise ClientError(
            {"Error": {"Code": "TooManyRequestsException", "Message": "slow down"}},
            "CreateUsagePlanKey",
        )

    monkeypatch.setattr(data_clients, "_attach", refuse)

    with pytest.raises(GatewayError, match="CreateUsagePlanKey failed: TooManyRequestsException"):
        add_tenant("acme")

    assert [key["name"] for key in deployed.all_keys()] == [f"{STACK}-RetailPulseApiApiKey"]


def test_aws_that_cannot_be_reached_is_a_gateway_error(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retail_pulse.settings import get_settings

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    try:
        with pytest.raises(GatewayError, match="DescribeStacks failed: Could not connect"):
            list_tenants()
    finally:
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        get_settings.cache_clear()
