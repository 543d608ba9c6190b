"""The local stack reads template.yaml as CloudFormation and SAM would.

It reads SAM's translation; checked two ways: against the SAM source parsed independently
(cfn-lint's decoder), and
against the tables and queues the stack really creates in its running emulators (DynamoDB
Local, MiniStack). Then the
intrinsic functions, one by one, on small inline templates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from local_stack.aws import Emulators, client
from local_stack.model import EMULATED, NOT_EMULATED, StackModel
from local_stack.sam import translated
from local_stack.stack import LocalStack, StackConfig
from local_stack.template import (
    Resolver,
    TemplateError,
    active_resources,
    load_template,
    make_resolver,
    parameter_values,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def _plain(value: Any) -> Any:
    """cfn-lint's node classes as plain dicts, lists and scalars."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    template, matches = decode(str(TEMPLATE))
    assert not matches, matches
    return _plain(template)


def _of_type(raw: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == kind}


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[StackModel, Emulators]]:
    """The emulators with the template's tables and queues; no functions."""
    stack = LocalStack(StackConfig(allowed_private_hosts="127.0.0.1:9"))
    try:
        model = stack.start_aws()
        yield model, stack.aws
    finally:
        stack.stop()


def test_loader_agrees_with_cfn_lint(raw: dict[str, Any]) -> None:
    assert load_template(TEMPLATE) == raw


def test_every_table_exists_with_its_keys_and_indexes(
    raw: dict[str, Any], running: tuple[StackModel, Emulators]
) -> None:
    model, aws = running
    dynamodb = client("dynamodb", aws.dynamodb_url)
    tables = _of_type(raw, "AWS::DynamoDB::Table")
    assert {t.logical_id for t in model.tables} == set(tables)
    assert sorted(dynamodb.list_tables()["TableNames"]) == sorted(t.name for t in model.tables)
    for table in model.tables:
        declared = tables[table.logical_id]["Properties"]
        described = dynamodb.describe_table(TableName=table.name)["Table"]
        assert described["KeySchema"] == declared["KeySchema"]
        assert sorted(described["AttributeDefinitions"], key=str) == sorted(
            declared["AttributeDefinitions"], key=str
        )
        # DynamoDB Local's ARNs are its own (region ddblocal, account 000000000000): only
        # the table part is the template's; nothing the functions run reads a table's ARN.
        assert described["TableArn"].split(":")[-1] == table.arn.split(":")[-1]
        if "BillingMode" in declared:
            assert described["BillingModeSummary"]["BillingMode"] == declared["BillingMode"]
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            want = {i["IndexName"]: i for i in declared.get(key, [])}
            got = {i["IndexName"]: i for i in described.get(key, [])}
            assert set(got) == set(want), (table.logical_id, key)
            for name, index in want.items():
                assert got[name]["KeySchema"] == index["KeySchema"]
                assert got[name]["Projection"] == index["Projection"]
        ttl = declared.get("TimeToLiveSpecification")
        if ttl:
            status = dynamodb.describe_time_to_live(TableName=table.name)
            assert status["TimeToLiveDescription"]["AttributeName"] == ttl["AttributeName"]
        # (SSESpecification: DynamoDB Local takes it and describes none; the template's
        # KMS at rest is checked by tests/unit/test_template.py.)


def test_every_queue_exists_with_visibility_retention_and_redrive(
    raw: dict[str, Any], running: tuple[StackModel, Emulators]
) -> None:
    model, aws = running
    sqs = client("sqs", aws.url)
    queues = _of_type(raw, "AWS::SQS::Queue")
    by_id = {q.logical_id: q for q in model.queues}
    assert set(by_id) == set(queues)
    for logical_id, resource in queues.items():
        declared = resource.get("Properties", {})
        url = model.resolver.refs[logical_id]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["QueueArn"] == by_id[logical_id].arn
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds"):
            if key in declared:
                assert attributes[key] == str(declared[key]), (logical_id, key)
        redrive = declared.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            policy = json.loads(attributes["RedrivePolicy"])
            assert int(policy["maxReceiveCount"]) == int(redrive["maxReceiveCount"])
            target_url = model.resolver.refs[target]
            target_arn = sqs.get_queue_attributes(QueueUrl=target_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            assert policy["deadLetterTargetArn"] == target_arn
            # Created first, so the redrive target existed when the queue was made.
            order = [q.logical_id for q in model.queues]
            assert order.index(target) < order.index(logical_id)


def _expected_env_value(raw: dict[str, Any], value: Any, model: StackModel, aws: Emulators) -> str:
    """What an environment value of the template must become, worked out independently."""
    if isinstance(value, str):
        return value
    name = value["Ref"]
    if name == "AwsEndpointUrl":
        return aws.url
    if name == "AwsDynamoDbEndpointUrl":
        return aws.dynamodb_url
    if name == "AllowedPrivateHosts":
        return "127.0.0.1:9"  # exactly what the person running the stack allowed
    if name in raw.get("Parameters", {}):
        return str(raw["Parameters"][name].get("Default", ""))
    kind = raw["Resources"][name]["Type"]
    if kind == "AWS::DynamoDB::Table":
        return f"{model.stack_name}-{name}"
    if kind == "AWS::SQS::Queue":
        return f"{aws.url}/123456789012/{model.stack_name}-{name}"
    if kind == "AWS::SecretsManager::Secret":
        return f"{model.stack_name}-{name}"  # the name the local stack creates it under
    if kind == "AWS::S3::Bucket":
        return f"{model.stack_name}-{name}".lower()  # S3 names are lower case
    raise AssertionError(f"unexpected Ref {name} in an environment")


def test_every_function_has_its_merged_resolved_environment(
    raw: dict[str, Any], running: tuple[StackModel, Emulators]
) -> None:
    model, aws = running
    functions = _of_type(raw, "AWS::Serverless::Function")
    specs = {f.logical_id: f for f in model.functions()}
    assert set(specs) == set(functions)
    globals_ = raw.get("Globals", {}).get("Function", {})
    global_env = globals_.get("Environment", {}).get("Variables", {})
    for logical_id, resource in functions.items():
        props = resource["Properties"]
        spec = specs[logical_id]
        declared = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        assert spec.environment == {
            k: _expected_env_value(raw, v, model, aws) for k, v in declared.items()
        }
        assert spec.code_dir == (ROOT / props["CodeUri"]).resolve()
        assert spec.handler == props["Handler"]
        assert spec.timeout_s == props.get("Timeout", globals_.get("Timeout", 3))
        assert spec.memory_mb == props.get("MemorySize", globals_.get("MemorySize", 128))
    queue_urls = set(client("sqs", aws.url).list_queues()["QueueUrls"])
    table_names = set(client("dynamodb", aws.dynamodb_url).list_tables()["TableNames"])
    for spec in specs.values():
        for key, value in spec.environment.items():
            if key.endswith("_QUEUE_URL"):
                assert value in queue_urls
            if key.endswith("_TABLE"):
                assert value in table_names


def _parameter_value(raw: dict[str, Any], value: Any) -> Any:
    """A property's value, a `!Ref` to a parameter read as the parameter's default."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return int(raw["Parameters"][value["Ref"]]["Default"])
    return value


def test_every_api_route_and_sqs_source(
    raw: dict[str, Any], running: tuple[StackModel, Emulators]
) -> None:
    model, _ = running
    want_routes, want_sources = set(), set()
    for logical_id, resource in _of_type(raw, "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            props = event["Properties"]
            if event["Type"] == "Api":
                want_routes.add((logical_id, props["Path"], props["Method"].upper()))
            if event["Type"] == "SQS":
                queue = props["Queue"]["Fn::GetAtt"][0]
                want_sources.add(
                    (
                        logical_id,
                        f"arn:aws:sqs:us-east-1:123456789012:{model.stack_name}-{queue}",
                        _parameter_value(raw, props.get("BatchSize", 10)),
                        "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                    )
                )
    specs = model.functions()
    assert {(r.function, r.path, r.method) for s in specs for r in s.api_routes} == want_routes
    assert {
        (q.function, q.queue_arn, q.batch_size, q.report_batch_item_failures)
        for s in specs
        for q in s.sqs_sources
    } == want_sources
    assert want_routes and want_sources


# -- intrinsic functions -----------------------------------------------------------------


def _resolver(**kwargs: Any) -> Resolver:
    resolver = Resolver(
        parameters={"Env": "dev", "Size": 3},
        refs={"Table": "stack-Table", "Queue": "http://q/Queue"},
        attrs={("Table", "Arn"): "arn:table", ("Queue", "Arn"): "arn:queue"},
        conditions={
            "IsDev": {"Fn::Equals": [{"Ref": "Env"}, "dev"]},
            "IsProd": {"Fn::Not": [{"Condition": "IsDev"}]},
            "Both": {"Fn::And": [{"Condition": "IsDev"}, {"Condition": "IsProd"}]},
            "Either": {"Fn::Or": [{"Condition": "IsDev"}, {"Condition": "IsProd"}]},
        },
        mappings={"Sizes": {"dev": {"mb": 128}}},
        stack_name="stack",
    )
    for key, value in kwargs.items():
        setattr(resolver, key, value)
    return resolver


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"Ref": "Env"}, "dev"),
        ({"Ref": "Table"}, "stack-Table"),
        ({"Ref": "Queue"}, "http://q/Queue"),
        ({"Ref": "AWS::Region"}, "us-east-1"),
        ({"Ref": "AWS::AccountId"}, "123456789012"),
        ({"Ref": "AWS::StackName"}, "stack"),
        ({"Fn::GetAtt": ["Table", "Arn"]}, "arn:table"),
        ({"Fn::GetAtt": "Queue.Arn"}, "arn:queue"),
        ({"Fn::Sub": "${Table.Arn}/index/x"}, "arn:table/index/x"),
        ({"Fn::Sub": "${AWS::Region}-${Env}-${Table}"}, "us-east-1-dev-stack-Table"),
        ({"Fn::Sub": "${!Literal}"}, "${Literal}"),
        ({"Fn::Sub": ["${A}-${Env}", {"A": {"Ref": "Size"}}]}, "3-dev"),
        ({"Fn::Join": ["-", ["a", {"Ref": "Env"}]]}, "a-dev"),
        ({"Fn::Select": [1, ["a", "b"]]}, "b"),
        ({"Fn::Select": ["0", {"Fn::Split": [",", "x,y"]}]}, "x"),
        ({"Fn::If": ["IsDev", "yes", "no"]}, "yes"),
        ({"Fn::If": ["IsProd", "yes", "no"]}, "no"),
        ({"Fn::If": ["Both", "yes", "no"]}, "no"),
        ({"Fn::If": ["Either", "yes", "no"]}, "yes"),
        ({"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "mb"]}, 128),
        ({"Fn::Base64": "hi"}, "aGk="),
        ({"a": {"Fn::If": ["IsProd", 1, {"Ref": "AWS::NoValue"}]}, "b": 2}, {"b": 2}),
        ([1, {"Fn::If": ["IsProd", 2, {"Ref": "AWS::NoValue"}]}], [1]),
    ],
)
def test_intrinsics(expression: Any, expected: Any) -> None:
    assert _resolver().resolve(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        {"Ref": "Missing"},
        {"Fn::GetAtt": ["Table", "StreamArn"]},
        {"Fn::If": ["Nope", 1, 2]},
        {"Fn::ImportValue": "x"},
    ],
)
def test_unresolvable_intrinsics_say_so(expression: Any) -> None:
    with pytest.raises(TemplateError):
        _resolver().resolve(expression)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


def test_short_form_tags_load_as_long_form(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
Resources:
  R:
    Type: X
    Properties:
      A: !Ref P
      B: !GetAtt Q.Arn
      C: !Sub "${Q.Arn}"
      D: !If [Cond, !Join ["", [a, b]], !Select [0, [x]]]
      E: !Equals [a, b]
      F: !Not [!Condition Cond]
      G: !FindInMap [M, a, b]
""",
    )
    props = load_template(path)["Resources"]["R"]["Properties"]
    assert props == {
        "A": {"Ref": "P"},
        "B": {"Fn::GetAtt": ["Q", "Arn"]},
        "C": {"Fn::Sub": "${Q.Arn}"},
        "D": {"Fn::If": ["Cond", {"Fn::Join": ["", ["a", "b"]]}, {"Fn::Select": [0, ["x"]]}]},
        "E": {"Fn::Equals": ["a", "b"]},
        "F": {"Fn::Not": [{"Condition": "Cond"}]},
        "G": {"Fn::FindInMap": ["M", "a", "b"]},
    }


def test_parameters_take_overrides_and_refuse_unknown_ones() -> None:
    template = {
        "Parameters": {
            "A": {"Type": "String", "Default": "x"},
            "L": {"Type": "CommaDelimitedList", "Default": "a, b"},
        }
    }
    assert parameter_values(template, {}) == {"A": "x", "L": ["a", "b"]}
    assert parameter_values(template, {"A": "y"})["A"] == "y"
    with pytest.raises(TemplateError):
        parameter_values(template, {"B": "z"})
    with pytest.raises(TemplateError):
        parameter_values({"Parameters": {"C": {"Type": "String"}}}, {})


def test_resources_with_a_false_condition_are_left_out() -> None:
    template = {
        "Parameters": {"Env": {"Type": "String", "Default": "dev"}},
        "Conditions": {"IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}},
        "Resources": {"A": {"Type": "X"}, "B": {"Type": "X", "Condition": "IsProd"}},
    }
    resolver = make_resolver(template)
    assert set(active_resources(template, resolver)) == {"A"}
    resolver = make_resolver(template, {"Env": "prod"})
    assert set(active_resources(template, resolver)) == {"A", "B"}


def test_dead_letter_queues_are_created_before_their_sources(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
Resources:
  Main:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy: {deadLetterTargetArn: !GetAtt Dlq.Arn, maxReceiveCount: 3}
  Dlq:
    Type: AWS::SQS::Queue
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-named"
""",
    )
    model = StackModel(path, stack_name="s")
    assert [q.logical_id for q in model.queues] == ["Dlq", "Main"]
    assert model.queues[1].dead_letter_arn == "arn:aws:sqs:us-east-1:123456789012:s-Dlq"
    assert model.dead_letter_arns == {model.queues[0].arn}
    assert [t.name for t in model.tables] == ["s-named"]


def test_a_resource_type_the_stack_does_not_know_stops_the_start(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Stream:
    Type: AWS::Kinesis::Stream
    Properties: {ShardCount: 1}
""",
    )
    with pytest.raises(TemplateError) as error:
        StackModel(path, stack_name="s")
    assert "Stream" in str(error.value)
    assert "AWS::Kinesis::Stream" in str(error.value)
    assert "NOT_EMULATED" in str(error.value)


def test_every_type_of_the_translated_template_is_run_or_left_out_for_a_reason() -> None:
    types = {resource["Type"] for resource in translated(TEMPLATE)["Resources"].values()}
    assert types <= EMULATED | set(NOT_EMULATED)
    assert all(reason.strip() for reason in NOT_EMULATED.values())


def test_a_template_sam_refuses_stops_the_start_with_sams_reason(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties: {Handler: app.handler, Runtime: python3.13, CodeUri: [not, a, folder]}
""",
    )
    with pytest.raises(TemplateError, match=r"SAM cannot translate.*\[Fn\].*CodeUri"):
        StackModel(path, stack_name="s")
