"""template.yaml wires the recovery paths: the dead-letter consumer, the reconciler's
schedule and index, and the idempotency table submit needs."""

from __future__ import annotations

from typing import Any


def env(template: dict[str, Any]) -> dict[str, Any]:
    return template["Globals"]["Function"]["Environment"]["Variables"]


def statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return template["Resources"][function]["Properties"]["Policies"][0]["Statement"]


def test_dead_letter_attempts_are_the_queues_max_receive_count(template):
    """The dead-letter handler reports this many attempts; SQS moves a message after them."""
    redrive = template["Resources"]["ImageQueue"]["Properties"]["RedrivePolicy"]
    assert int(env(template)["IMAGE_MAX_RECEIVES"]) == redrive["maxReceiveCount"]


def test_the_dead_letter_queue_has_a_consumer_reporting_partial_failures(template):
    event = template["Resources"]["DeadLetterFunction"]["Properties"]["Events"]["DeadLetters"]
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["ImageDeadLetterQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_reconciler_runs_every_five_minutes_and_queries_only_the_ongoing_index(template):
    function = template["Resources"]["ReconcilerFunction"]["Properties"]
    (event,) = function["Events"].values()
    assert (event["Type"], event["Properties"]["Schedule"]) == ("Schedule", "rate(5 minutes)")
    actions = {a for s in statements(template, "ReconcilerFunction") for a in s["Action"]}
    assert "dynamodb:Scan" not in actions
    query_on_jobs = [
        s["Resource"]
        for s in statements(template, "ReconcilerFunction")
        if "dynamodb:Query" in s["Action"] and "JobsTable" in str(s["Resource"])
    ]
    assert query_on_jobs == [{"Fn::Sub": "${JobsTable.Arn}/index/OngoingJobs"}]


def test_submit_may_use_the_idempotency_table_for_exactly_what_powertools_does(template):
    table = template["Resources"]["IdempotencyTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert env(template)["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    (granted,) = [
        s
        for s in statements(template, "SubmitFunction")
        if s["Resource"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}
    ]
    assert sorted(granted["Action"]) == [
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]


def test_the_hard_deadline_leaves_the_spec_s_hour_and_more(template):
    deadline = template["Parameters"]["JobHardDeadlineSeconds"]["Default"]
    soft = template["Parameters"]["ReconcileAfterSeconds"]["Default"]
    assert deadline > 3600 and soft < deadline
