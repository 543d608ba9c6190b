"""The local stack's Lambda, API Gateway and SQS emulation, with throwaway handlers.

A small template and handler module in a temporary folder exercise what the real
handlers rarely do: timeouts, crashes, malformed responses, partial batch failures,
binary bodies. The stack runs in-process here (its emulators and workers are processes).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from local_stack.api_gateway import MAX_PAYLOAD_BYTES
from local_stack.aws import client
from local_stack.event_sources import succeeded_ids
from local_stack.runtime import Invocation, LogSink, Slot
from local_stack.stack import LocalStack, StackConfig

HANDLERS = """
import json, os, time

def echo(event, context):
    body = {
        "event": event,
        "env": dict(os.environ),
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "log_group_name": context.log_group_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }
    print("echo handler ran")
    return {"statusCode": 200, "headers": {"X-One": "1"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": json.dumps(body)}

def binary(event, context):
    return {"statusCode": 200, "headers": {"Content-Type": "image/png"},
            "body": event["body"], "isBase64Encoded": event["isBase64Encoded"]}

def boom(event, context):
    raise RuntimeError("kaboom")

def slow(event, context):
    time.sleep(30)

def malformed(event, context):
    return "not a proxy response"

def batch(event, context):
    failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                if r["body"] == "fail"]
    print("records", json.dumps(event["Records"]))
    return {"batchItemFailures": failures}
"""

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  AwsEndpointUrl: {Type: String, Default: ""}
Globals:
  Function:
    Runtime: python3.13
    Timeout: 5
    MemorySize: 256
    CodeUri: fn/
    Environment:
      Variables:
        AWS_ENDPOINT_URL: !Ref AwsEndpointUrl
        WORK_QUEUE_URL: !Ref Work
Resources:
  Work:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy: {deadLetterTargetArn: !GetAtt Dead.Arn, maxReceiveCount: 2}
  Dead:
    Type: AWS::SQS::Queue
  Echo:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.echo
      Environment: {Variables: {OWN: mine}}
      Events:
        One: {Type: Api, Properties: {Path: "/echo/{id}", Method: get}}
        Two: {Type: Api, Properties: {Path: /echo, Method: post}}
  Binary:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.binary
      Events:
        Api: {Type: Api, Properties: {Path: /binary, Method: post}}
  Boom:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.boom
      Events:
        Api: {Type: Api, Properties: {Path: /boom, Method: get}}
  Slow:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.slow
      Timeout: 1
      Events:
        Api: {Type: Api, Properties: {Path: /slow, Method: get}}
  Malformed:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.malformed
      Events:
        Api: {Type: Api, Properties: {Path: /malformed, Method: get}}
  Batch:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.batch
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            BatchSize: 5
            FunctionResponseTypes: [ReportBatchItemFailures]
"""


@dataclass
class Running:
    api: str
    aws: str  # MiniStack's endpoint
    queues: dict[str, str]
    log: io.StringIO


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("stack")
    (root / "fn").mkdir()
    (root / "fn" / "app.py").write_text(HANDLERS)
    (root / "template.yaml").write_text(TEMPLATE)
    os.environ["LOCAL_STACK_TEST_LEAK"] = "must not reach a worker"
    log = io.StringIO()
    stack = LocalStack(
        StackConfig(
            template=root / "template.yaml",
            port=0,
            pollers=1,
            visibility_timeout_s=1,
            store_master_csv=None,
        ),
        LogSink(log),
    )
    try:
        endpoints = stack.start()
        yield Running(endpoints.api_url, endpoints.aws_endpoint_url, endpoints.queues, log)
    finally:
        stack.stop()
        os.environ.pop("LOCAL_STACK_TEST_LEAK", None)


def test_proxy_event_context_and_environment(running: Running) -> None:
    response = requests.get(running.api + "/echo/a%20b?x=1&x=2&y=", timeout=30)
    assert response.status_code == 200
    assert response.headers["X-One"] == "1"
    assert response.headers["Set-Cookie"] == "a=1, b=2"  # two headers, as requests joins them
    body = response.json()
    event, env, context = body["event"], body["env"], body["context"]
    assert event["resource"] == "/echo/{id}"
    assert event["path"] == "/echo/a b"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"id": "a b"}
    assert event["queryStringParameters"] == {"x": "2", "y": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
    assert event["stageVariables"] is None
    assert event["body"] is None and event["isBase64Encoded"] is False
    assert event["headers"]["User-Agent"].startswith("python-requests")
    assert event["multiValueHeaders"]["User-Agent"] == [event["headers"]["User-Agent"]]
    rc = event["requestContext"]
    assert rc["stage"] == "Prod" and rc["path"] == "/Prod/echo/a b"
    assert rc["resourcePath"] == "/echo/{id}" and rc["httpMethod"] == "GET"
    assert rc["identity"]["sourceIp"] == "127.0.0.1"
    assert abs(rc["requestTimeEpoch"] / 1000 - time.time()) < 60
    assert context["function_name"] == "retail-pulse-local-Echo"
    assert context["memory_limit_in_mb"] == "256"
    assert context["invoked_function_arn"].endswith(":function:retail-pulse-local-Echo")
    assert context["log_group_name"] == "/aws/lambda/retail-pulse-local-Echo"
    assert 0 < context["remaining_ms"] <= 5000
    assert env["AWS_ENDPOINT_URL"] == running.aws
    assert env["WORK_QUEUE_URL"] == running.queues["Work"]
    assert env["OWN"] == "mine"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert env["AWS_REGION"] == "us-east-1"
    assert "LOCAL_STACK_TEST_LEAK" not in env
    log = running.log.getvalue()
    request_id = response.headers["x-amzn-RequestId"]
    assert f"[Echo] START RequestId: {request_id}" in log
    assert "[Echo] echo handler ran" in log
    assert f"[Echo] END RequestId: {request_id}" in log
    report = next(line for line in log.splitlines() if f"REPORT RequestId: {request_id}" in line)
    assert "\tDuration: " in report and "\tMemory Size: 256 MB\tMax Memory Used: " in report


def test_text_body_is_a_string_and_binary_is_base64(running: Running) -> None:
    body = {"a": 1}
    echoed = requests.post(running.api + "/echo", json=body, timeout=30).json()["event"]
    assert echoed["body"] == json.dumps(body) and echoed["isBase64Encoded"] is False
    png = bytes(range(256))
    response = requests.post(
        running.api + "/binary", data=png, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.status_code == 200
    assert response.content == png


@pytest.mark.parametrize("path", ["/boom", "/malformed"])
def test_failing_or_malformed_function_is_502(running: Running, path: str) -> None:
    response = requests.get(running.api + path, timeout=30)
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}


def test_timeout_kills_and_replaces_the_worker(running: Running) -> None:
    response = requests.get(running.api + "/slow", timeout=30)
    assert response.status_code == 502
    assert "Task timed out after 1.00 seconds" in running.log.getvalue()
    # A fresh environment serves the next request (and times out the same way).
    assert requests.get(running.api + "/slow", timeout=30).status_code == 502


def test_unknown_route_and_method_are_api_gateways_403(running: Running) -> None:
    for method, path in [("GET", "/nope"), ("DELETE", "/echo")]:
        response = requests.request(method, running.api + path, timeout=30)
        assert response.status_code == 403, (method, path)
        assert response.json() == {"message": "Missing Authentication Token"}
        assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_body_over_10_mb_is_413(running: Running) -> None:
    response = requests.post(running.api + "/echo", data=b"x" * (MAX_PAYLOAD_BYTES + 1), timeout=30)
    assert response.status_code == 413


def test_sqs_partial_failures_stay_and_reach_the_dead_letter_queue(running: Running) -> None:
    sqs = client("sqs", running.aws)
    sqs.send_message(
        QueueUrl=running.queues["Work"],
        MessageBody="ok",
        MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}},
    )
    sqs.send_message(QueueUrl=running.queues["Work"], MessageBody="fail")
    deadline, dead = time.monotonic() + 20, []
    while not dead and time.monotonic() < deadline:
        dead = sqs.receive_message(
            QueueUrl=running.queues["Dead"], WaitTimeSeconds=1, MaxNumberOfMessages=10
        ).get("Messages", [])
    assert [m["Body"] for m in dead] == ["fail"]
    attributes = sqs.get_queue_attributes(QueueUrl=running.queues["Work"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    records_line = next(
        line
        for line in running.log.getvalue().splitlines()
        if line.startswith("[Batch] records") and '"ok"' in line
    )
    record = next(r for r in json.loads(records_line.split(" ", 2)[2]) if r["body"] == "ok")
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:retail-pulse-local-Work"
    assert record["awsRegion"] == "us-east-1"
    assert record["messageAttributes"] == {
        "k": {
            "stringValue": "v",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
    }
    assert {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    } <= set(record["attributes"])
    assert record["md5OfBody"] and record["receiptHandle"] and record["messageId"]


@pytest.mark.parametrize(
    ("invocation", "report", "expected"),
    [
        (Invocation("r", True, None), True, ["a", "b"]),
        (Invocation("r", True, {"batchItemFailures": []}), True, ["a", "b"]),
        (Invocation("r", True, {"batchItemFailures": [{"itemIdentifier": "a"}]}), True, ["b"]),
        (Invocation("r", True, {"batchItemFailures": [{"itemIdentifier": "zz"}]}), True, []),
        (Invocation("r", True, {"batchItemFailures": [{"itemIdentifier": ""}]}), True, []),
        (
            Invocation("r", True, {"batchItemFailures": [{"itemIdentifier": "a"}]}),
            False,
            ["a", "b"],
        ),
        (Invocation("r", False), True, []),
        (Invocation("r", False), False, []),
    ],
)
def test_which_records_lambda_deletes(
    invocation: Invocation, report: bool, expected: list[str]
) -> None:
    assert succeeded_ids(invocation, ["a", "b"], report) == expected


def test_binary_message_attributes_are_base64() -> None:
    from local_stack.event_sources import sqs_record

    record = sqs_record(
        {
            "MessageId": "m",
            "ReceiptHandle": "r",
            "Body": "b",
            "MD5OfBody": "x",
            "MessageAttributes": {"bin": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}},
        },
        "arn:q",
    )
    assert (
        record["messageAttributes"]["bin"]["binaryValue"] == base64.b64encode(b"\x00\x01").decode()
    )


class _Environment:
    """Stands in for a worker process: counts its invocations, can die."""

    def __init__(self) -> None:
        self.alive = True
        self.invocations = 0

    def invoke(self, event: object) -> Invocation:
        self.invocations += 1
        return Invocation("r", True, event)


def test_an_environment_starts_on_its_first_invocation_and_again_after_it_dies() -> None:
    started: list[_Environment] = []

    def spawn() -> _Environment:
        started.append(_Environment())
        return started[-1]

    slot = Slot(spawn)  # type: ignore[arg-type]
    assert started == []  # a poller that never gets a batch costs no process
    assert slot.invoke("a").payload == "a" and slot.invoke("b").payload == "b"
    assert [e.invocations for e in started] == [2]  # started once, then reused
    started[0].alive = False
    assert slot.invoke("c").ok
    assert [e.invocations for e in started] == [2, 1]  # a dead one is replaced
    assert slot.close() is started[1]
    stopped = slot.invoke("d")  # once closed, nothing new starts
    assert not stopped.ok and stopped.error["errorType"] == "Runtime.Stopped"
    assert [e.invocations for e in started] == [2, 1]
