"""deployed/ministack_compat.py: each MiniStack-only workaround, on the real template.

The template here is template.yaml with its short-form tags expanded, the form `sam build`
writes the built template in (the one the workarounds are applied to).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from deployed.ministack_compat import (
    MINISTACK_VERSION,
    WORKAROUNDS,
    CompatError,
    adapt,
    after_deploy,
    describe,
    parameter_values,
)
from local_stack.template import load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
DEPLOYED = {
    "Architecture": "x86_64",
    "RequireApiKey": "false",
    "ProcessConcurrency": "4",
    "AllowedPrivateHosts": "127.0.0.1:20001",
}


PHYSICAL_IDS = {"RetailPulseApi": "a1b2c3d4"}


class FakeApiGateway:
    """The calls the gateway-responses workaround makes, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def put_gateway_response(self, **call: Any) -> None:
        self.calls.append(("put_gateway_response", call))

    def get_stages(self, restApiId: str) -> dict[str, Any]:
        return {"item": [{"stageName": "Prod"}]}

    def create_deployment(self, **call: Any) -> None:
        self.calls.append(("create_deployment", call))


@pytest.fixture
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _types(template: dict[str, Any]) -> set[str]:
    return {r["Type"] for r in template["Resources"].values()}


def _applied(template: dict[str, Any], overrides: dict[str, str] = DEPLOYED) -> dict[str, list]:
    _, applied = adapt(template, overrides)
    return {item.workaround.name: item.changes for item in applied}


def test_the_template_itself_is_left_as_it_is(template: dict[str, Any]) -> None:
    before = json.dumps(template, sort_keys=True)
    adapted, _ = adapt(template, DEPLOYED)
    assert json.dumps(template, sort_keys=True) == before
    assert adapted != template


def test_every_workaround_is_needed_by_todays_template(template: dict[str, Any]) -> None:
    """A workaround the template no longer needs is dead code: delete it."""
    adapted, _ = adapt(template, DEPLOYED)
    after = {a.workaround.name for a in after_deploy(FakeApiGateway(), adapted, PHYSICAL_IDS)}
    assert set(_applied(template)) | after == {w.name for w in WORKAROUNDS}
    assert not set(_applied(template)) & after


def test_each_workaround_names_what_ministack_and_aws_do() -> None:
    for workaround in WORKAROUNDS:
        assert workaround.ministack and workaround.upstream, workaround.name
    assert MINISTACK_VERSION.count(".") == 2


def test_fn_if_in_the_api_is_decided_by_the_deployments_parameters(
    template: dict[str, Any],
) -> None:
    without_keys, _ = adapt(template, DEPLOYED)
    api = without_keys["Resources"]["RetailPulseApi"]["Properties"]
    assert "Auth" not in api  # the false branch is AWS::NoValue
    assert "Fn::If" not in json.dumps(api)

    with_keys, _ = adapt(template, {**DEPLOYED, "RequireApiKey": "true"})
    auth = with_keys["Resources"]["RetailPulseApi"]["Properties"]["Auth"]
    assert auth["ApiKeyRequired"] is True
    assert auth["UsagePlan"]["CreateUsagePlan"] == "PER_API"

    defaults, _ = adapt(template, {})  # RequireApiKey defaults to "true", as in AWS
    assert defaults["Resources"]["RetailPulseApi"]["Properties"]["Auth"] == auth


def test_fn_if_outside_sam_resources_is_left_to_cloudformation(template: dict[str, Any]) -> None:
    adapted, _ = adapt(template, DEPLOYED)
    alarm = adapted["Resources"]["ProcessErrorsAlarm"]["Properties"]
    assert (
        alarm["AlarmActions"]
        == template["Resources"]["ProcessErrorsAlarm"]["Properties"]["AlarmActions"]
    )
    assert "Fn::If" in json.dumps(alarm)


def test_query_definitions_and_metric_math_alarms_are_dropped(template: dict[str, Any]) -> None:
    math_alarms = {
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and "Metrics" in r["Properties"]
    }
    assert math_alarms == {"DeadLetterQueueNotEmptyAlarm", "ApiServerErrorRateAlarm"}

    adapted, _ = adapt(template, DEPLOYED)

    assert "AWS::Logs::QueryDefinition" not in _types(adapted)
    assert not math_alarms & set(adapted["Resources"])
    # The single-metric alarms stay: MiniStack provisions those.
    assert {"ImageQueueBehindAlarm", "ProcessErrorsAlarm", "StuckJobsAlarm"} <= set(
        adapted["Resources"]
    )


def test_the_dashboard_names_a_dropped_alarm_by_the_arn_it_would_have(
    template: dict[str, Any],
) -> None:
    adapted, _ = adapt(template, DEPLOYED)
    body = adapted["Resources"]["RetailPulseDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert "${DeadLetterQueueNotEmptyAlarm.Arn}" not in body
    assert (
        "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
        "${AWS::StackName}-dead-letter-queue-not-empty"
    ) in body
    assert "${ProcessErrorsAlarm.Arn}" in body  # a kept alarm keeps its reference


def test_a_dropped_resource_that_is_still_referenced_is_an_error(
    template: dict[str, Any],
) -> None:
    template["Outputs"]["Query"] = {"Value": {"Ref": "WhyDidJobFailQuery"}}
    with pytest.raises(CompatError, match="WhyDidJobFailQuery is dropped"):
        adapt(template, DEPLOYED)


def test_maximum_concurrency_becomes_the_parameters_integer(template: dict[str, Any]) -> None:
    adapted, _ = adapt(template, DEPLOYED)
    event = adapted["Resources"]["ProcessFunction"]["Properties"]["Events"]["Images"]
    assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] == 4

    defaults, _ = adapt(template, {})
    event = defaults["Resources"]["ProcessFunction"]["Properties"]["Events"]["Images"]
    default = int(template["Parameters"]["ProcessConcurrency"]["Default"])
    assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] == default


def test_everything_else_is_unchanged(template: dict[str, Any]) -> None:
    adapted, _ = adapt(template, DEPLOYED)
    assert adapted["Parameters"] == template["Parameters"]
    assert adapted["Transform"] == template["Transform"]
    assert adapted["Globals"] == template["Globals"]
    for logical_id in ("JobsTable", "ImagesTable", "ImageQueue", "StatusFunction"):
        assert adapted["Resources"][logical_id] == template["Resources"][logical_id]


def test_parameters_are_the_overrides_over_the_defaults(template: dict[str, Any]) -> None:
    values = parameter_values(template, DEPLOYED)
    assert values["ProcessConcurrency"] == "4"
    assert values["LogLevel"] == template["Parameters"]["LogLevel"]["Default"]
    with pytest.raises(CompatError, match="NoSuchParameter"):
        parameter_values(template, {"NoSuchParameter": "x"})


def test_a_condition_on_something_else_than_parameters_is_an_error(
    template: dict[str, Any],
) -> None:
    template["Conditions"]["ApiKeyRequired"] = {"Fn::Equals": [{"Ref": "JobsTable"}, "a"]}
    with pytest.raises(CompatError, match=r"cannot be decided before the deployment.*JobsTable"):
        adapt(template, DEPLOYED)


def test_the_description_names_each_change_and_the_version(template: dict[str, Any]) -> None:
    _, applied = adapt(template, DEPLOYED)
    text = describe(applied)
    assert f"MiniStack {MINISTACK_VERSION}" in text
    for workaround in WORKAROUNDS:
        if workaround.apply:
            assert f"- {workaround.name}: MiniStack " in text
    assert "dropped WhyDidJobFailQuery (AWS::Logs::QueryDefinition)" in text
    assert "RetailPulseApi.Auth: Fn::If [ApiKeyRequired] -> false" in text


def test_gateway_responses_are_put_through_the_api_then_the_stage_redeployed(
    template: dict[str, Any],
) -> None:
    adapted, _ = adapt(template, DEPLOYED)
    apigateway = FakeApiGateway()

    applied = after_deploy(apigateway, adapted, PHYSICAL_IDS)

    headers = {
        "gatewayresponse.header.X-Content-Type-Options": "'nosniff'",
        "gatewayresponse.header.Cache-Control": "'no-store'",
    }
    body = {"application/json": '{"message":$context.error.messageString}'}
    assert apigateway.calls == [
        (
            "put_gateway_response",
            {
                "restApiId": "a1b2c3d4",
                "responseType": kind,
                "responseParameters": headers,
                "responseTemplates": body,
            },
        )
        for kind in ("DEFAULT_4XX", "DEFAULT_5XX")
    ] + [
        (
            "put_gateway_response",
            {
                "restApiId": "a1b2c3d4",
                "responseType": "REQUEST_TOO_LARGE",
                "responseParameters": headers,
                "responseTemplates": {"application/json": ANY},
                "statusCode": "413",
            },
        ),
        ("create_deployment", {"restApiId": "a1b2c3d4", "stageName": "Prod"}),
    ]
    too_large = json.loads(apigateway.calls[2][1]["responseTemplates"]["application/json"])
    assert "POST /api/uploads" in too_large["message"]
    assert [a.workaround.name for a in applied] == ["gateway-responses-from-the-openapi-body"]
    # The template keeps them too: on AWS they come with the OpenAPI body.
    api = adapted["Resources"]["RetailPulseApi"]["Properties"]
    assert set(api["GatewayResponses"]) == {"DEFAULT_4XX", "DEFAULT_5XX", "REQUEST_TOO_LARGE"}
