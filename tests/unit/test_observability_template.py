"""template.yaml's log groups, alarms, dashboard and saved queries agree with the code: every
RetailPulse metric they read is one the code emits (retail_pulse/observability.py), under
the namespace and `service` dimension the functions are configured with."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

from cfnlint.api import ManualArgs, lint_file

from retail_pulse import observability
from retail_pulse.imaging.errors import FailureReason
from tests.support.template import TEMPLATE_PATH, resources

NAMESPACE = "RetailPulse"
# Every metric name the code emits: the constants of observability.py.
EMITTED = {
    value
    for name, value in vars(observability).items()
    if name.isupper() and isinstance(value, str) and name != "FAILURE_REASONS"
}


def service_name(template: dict[str, Any]) -> str:
    return template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]


def dashboard_body(template: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's JSON with every ${...} of its !Sub replaced by a placeholder."""
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(re.sub(r"\$\{[^}]+\}", "SUBSTITUTED", text))


def dashboard_metrics(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric name, dimensions) of every metric line of every metric widget."""
    found = []
    for widget in body["widgets"]:
        for line in widget["properties"].get("metrics", []):
            parts = [part for part in line if not isinstance(part, dict)]
            namespace, name, *pairs = parts
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return found


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    props = alarm["Properties"]
    stats = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
    if "MetricName" in props:
        stats.append(props)
    return [
        (m["Namespace"], m["MetricName"], {d["Name"]: d["Value"] for d in m.get("Dimensions", [])})
        for m in stats
    ]


def test_cfn_lint_passes() -> None:
    matches = lint_file(TEMPLATE_PATH, config=ManualArgs(regions=["us-east-1"]))
    assert not matches, "\n".join(str(m) for m in matches)


def test_functions_log_json_at_a_level_and_sample_rate_from_the_environment(template):
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert 0 < float(variables["POWERTOOLS_LOGGER_SAMPLE_RATE"]) < 1
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    (api,) = resources(template, "AWS::Serverless::Api").values()
    assert api["Properties"]["TracingEnabled"] is True


def test_every_function_has_a_log_group_with_the_retention_parameter(template):
    groups = resources(template, "AWS::Logs::LogGroup").values()
    names = {group["Properties"]["LogGroupName"]["Fn::Sub"] for group in groups}
    functions = resources(template, "AWS::Serverless::Function")

    assert names == {f"/aws/lambda/${{{name}}}" for name in functions}
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups)
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_alarms_notify_the_topic_only_when_one_is_given(template):
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}

    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""
    assert template["Conditions"]["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == notify, name
        assert alarm["Properties"]["OKActions"] == notify, name


def test_the_alarms_watch_backlog_dead_letters_errors_5xx_stuck_and_unannounced_jobs(template):
    watched = {
        (namespace, name, json.dumps(dims, sort_keys=True))
        for alarm in resources(template, "AWS::CloudWatch::Alarm").values()
        for namespace, name, dims in alarm_metrics(alarm)
    }
    dlq = {"QueueName": {"Fn::GetAtt": ["ImageDeadLetterQueue", "QueueName"]}}
    queue = {"QueueName": {"Fn::GetAtt": ["ImageQueue", "QueueName"]}}
    process = {"FunctionName": {"Ref": "ProcessFunction"}}
    api = {"ApiName": {"Ref": "AWS::StackName"}}
    expected = [
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", queue),
        ("AWS/Lambda", "Errors", process),
        ("AWS/Lambda", "Throttles", process),
        ("AWS/ApiGateway", "5XXError", api),
        ("AWS/ApiGateway", "Count", api),
        (NAMESPACE, observability.STUCK_JOBS, {"service": service_name(template)}),
        (NAMESPACE, observability.UNANNOUNCED_JOBS, {"service": service_name(template)}),
    ]
    for namespace, name, dims in expected:
        assert (namespace, name, json.dumps(dims, sort_keys=True)) in watched, (name, dims)
    # The API's metrics are selected by name: the API must carry that name.
    (rest_api,) = resources(template, "AWS::Serverless::Api").values()
    assert rest_api["Properties"]["Name"] == {"Ref": "AWS::StackName"}


def test_the_5xx_alarm_is_a_rate_over_a_threshold(template):
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    (alarm,) = [a for a in alarms if ("AWS/ApiGateway", "5XXError") in _names(a)]
    (expression,) = [q for q in alarm["Properties"]["Metrics"] if "Expression" in q]
    ids = {
        q["MetricStat"]["Metric"]["MetricName"]: q["Id"]
        for q in alarm["Properties"]["Metrics"]
        if "MetricStat" in q
    }

    assert expression["Expression"].replace(" ", "") == f"{ids['5XXError']}/{ids['Count']}"
    assert alarm["Properties"]["Threshold"] == {"Ref": "Api5xxRateThreshold"}


def _names(alarm: dict[str, Any]) -> set[tuple[str, str]]:
    return {(namespace, name) for namespace, name, _ in alarm_metrics(alarm)}


def test_dashboard_and_alarm_metrics_are_ones_the_code_emits(template):
    service = service_name(template)
    ours = [m for m in dashboard_metrics(dashboard_body(template)) if m[0] == NAMESPACE]
    for alarm in resources(template, "AWS::CloudWatch::Alarm").values():
        ours += [m for m in alarm_metrics(alarm) if m[0] == NAMESPACE]

    assert ours
    for _, name, dims in ours:
        assert name in EMITTED, f"{name} is not a metric of retail_pulse/observability.py"
        assert dims.get("service") == service, (name, dims)
        # Only the dimensions the code sets: reason on ImagesFailed, function_name on ColdStart.
        extra = set(dims) - {"service"}
        allowed = {
            observability.IMAGES_FAILED: {"reason"},
            observability.COLD_START: {"function_name"},
        }.get(name, set())
        assert extra == allowed, (name, dims)


def test_the_dashboard_shows_every_failure_reason_and_the_headline_metrics(template):
    ours = [m for m in dashboard_metrics(dashboard_body(template)) if m[0] == NAMESPACE]
    reasons = {dims["reason"] for _, name, dims in ours if name == observability.IMAGES_FAILED}
    names = {name for _, name, _ in ours}

    assert reasons == set(observability.FAILURE_REASONS)
    assert set(get_args(FailureReason)) <= set(observability.FAILURE_REASONS)
    assert {
        observability.JOBS_SUBMITTED,
        observability.IMAGES_SUBMITTED,
        observability.IMAGES_SUCCEEDED,
        observability.QUEUE_AGE,
        observability.JOB_DURATION,
    } <= names


def test_the_dashboard_shows_queue_functions_and_api(template):
    lines = dashboard_metrics(dashboard_body(template))
    shown = {(namespace, name) for namespace, name, _ in lines}

    assert {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "ConcurrentExecutions"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/ApiGateway", "5XXError"),
    } <= shown


def test_saved_queries_answer_why_a_job_failed_and_which_hosts_fail(template):
    queries = {
        q["Properties"]["Name"]["Fn::Sub"]: q["Properties"]
        for q in resources(template, "AWS::Logs::QueryDefinition").values()
    }
    (why,) = [q for name, q in queries.items() if "why did job" in name]
    (hosts,) = [q for name, q in queries.items() if "failing image hosts" in name]

    assert "filter job_id =" in why["QueryString"]
    assert '"image failed"' in why["QueryString"] and '"job finished"' in why["QueryString"]
    assert {"Ref": "ProcessFunctionLogGroup"} in why["LogGroupNames"]
    assert 'filter message = "image failed"' in hosts["QueryString"]
    assert re.search(r"stats count\(\*\).* by host", hosts["QueryString"])
    assert hosts["LogGroupNames"] == [{"Ref": "ProcessFunctionLogGroup"}]
