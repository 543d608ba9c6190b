"""`python -m bench.webhook_fairness`: how long one client's webhook waits behind another
client's hanging receivers in the same batch (issue 22, point 6), before and after.

One invocation of the webhook function (functions/webhook/app.py, on moto's SQS and
DynamoDB, receivers on 127.0.0.1) with a batch of `--hostile` deliveries (9) of one client
whose receivers take the request and then say nothing (raw sockets: only the deadline ends
them), and one delivery of another client, last in the batch. WEBHOOK_DEADLINE_S is scaled
to `--deadline` (1 s; 10 s in the template). It prints, over `--runs` invocations (3), the
victim's delay (from the invocation's start to its request reaching its receiver) and the
whole batch's time (after one warm-up delivery: a cold container's first clients cost
every delivery of its first batch the same seconds), each as the median and the worst,
and the same in one last line:
victim_delay_s_median=... victim_delay_s_max=... batch_s_median=... deadline_s=...

`--root DIR` measures the webhook function and layer of another checkout instead of this
one, for the "before" figure: export the commit before issue 22's webhook change, e.g.

    git archive cef54bd | tar -x -C /tmp/rp-before
    python -m bench.webhook_fairness --root /tmp/rp-before

(The receivers and this script come from this checkout either way; the environment sets
both the old deployment-wide WEBHOOK_SIGNING_SECRET_ARN and the new WEBHOOK_SECRETS_TABLE.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.moto_env import ACCOUNT_URL, MOTO_ENV, REGION

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **MOTO_ENV,
    "WEBHOOK_DEAD_LETTER_QUEUE_URL": f"{ACCOUNT_URL}/WebhooksDeadLetter",
    # The deployment-wide secret of the code before issue 22, for --root measurements.
    "WEBHOOK_SIGNING_SECRET_ARN": "retail-pulse-WebhookSigningSecret",
}


def _load_webhook_function(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_webhook_app", root / "functions" / "webhook" / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _create_resources(boto3: Any) -> Any:
    sqs = boto3.client("sqs", region_name=REGION)
    for name in ("Webhooks", "WebhooksDeadLetter"):
        sqs.create_queue(QueueName=name)
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=ENV["WEBHOOK_SIGNING_SECRET_ARN"], SecretString="before-issue-22"
    )
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=ENV["WEBHOOK_SECRETS_TABLE"],
        KeySchema=[{"AttributeName": "tenant", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "tenant", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return sqs


def _send(sqs: Any, url: str, tenant: str) -> str:
    event_id = str(uuid.uuid4())
    payload = json.dumps({"event_id": event_id, "type": "job.finished", "job": {}})
    body = {
        "event_id": event_id,
        "job_id": f"job-{event_id[:8]}",
        "tenant": tenant,
        "callback_url": url,
        "payload": payload,
    }
    sqs.send_message(QueueUrl=ENV["WEBHOOK_QUEUE_URL"], MessageBody=json.dumps(body))
    return event_id


def one_run(
    app: ModuleType, sqs: Any, hostile: int, support: dict[str, Any]
) -> tuple[float, float]:
    """(the victim's delay, the batch's time) of one invocation, in seconds."""
    arrived = threading.Event()
    arrived_at: list[float] = []

    def victim_reached(_: Any) -> None:
        arrived_at.append(time.monotonic())
        arrived.set()

    hangers = [support["HangingReceiver"]().start() for _ in range(hostile)]
    victim = support["Receiver"](on_request=victim_reached).start()
    try:
        os.environ["ALLOWED_PRIVATE_HOSTS"] = ",".join(
            [victim.host_port, *(h.host_port for h in hangers)]
        )
        support["get_settings"].cache_clear()
        for hanger in hangers:
            _send(sqs, hanger.url(), "hostile")
        victim_id = _send(sqs, victim.url(), "victim")
        messages = sqs.receive_message(
            QueueUrl=ENV["WEBHOOK_QUEUE_URL"], MaxNumberOfMessages=10, AttributeNames=["All"]
        )["Messages"]
        messages.sort(key=lambda m: victim_id in m["Body"])  # the victim's last
        queue_arn = f"arn:aws:sqs:{REGION}:123456789012:Webhooks"
        event = {"Records": [support["sqs_record"](m, queue_arn) for m in messages]}
        started = time.monotonic()
        app.lambda_handler(event, support["FakeContext"]())
        batch_s = time.monotonic() - started
        if not arrived.is_set():
            raise SystemExit("the victim's delivery never reached its receiver")
        for message in messages:  # what was delivered or delayed, out of the next run's way
            sqs.delete_message(
                QueueUrl=ENV["WEBHOOK_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
            )
        return arrived_at[0] - started, batch_s
    finally:
        victim.stop()
        for hanger in hangers:
            hanger.stop()


def warm_up(app: ModuleType, sqs: Any, support: dict[str, Any]) -> None:
    """One delivery to a good receiver first: a cold container's first DynamoDB and SQS
    clients (botocore loading its service models) cost seconds of CPU, the same for every
    delivery of that batch, which is not what this measures."""
    receiver = support["Receiver"]().start()
    try:
        os.environ["ALLOWED_PRIVATE_HOSTS"] = receiver.host_port
        support["get_settings"].cache_clear()
        _send(sqs, receiver.url(), "warm-up")
        messages = sqs.receive_message(QueueUrl=ENV["WEBHOOK_QUEUE_URL"])["Messages"]
        queue_arn = f"arn:aws:sqs:{REGION}:123456789012:Webhooks"
        event = {"Records": [support["sqs_record"](m, queue_arn) for m in messages]}
        app.lambda_handler(event, support["FakeContext"]())
        for message in messages:
            sqs.delete_message(
                QueueUrl=ENV["WEBHOOK_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
            )
    finally:
        receiver.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline", type=float, default=1.0, help="WEBHOOK_DEADLINE_S")
    parser.add_argument("--hostile", type=int, default=9, help="hanging receivers (max 9)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout measured")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    os.environ.update(ENV, WEBHOOK_DEADLINE_S=str(args.deadline))
    # The measured checkout's layer first, so its retail_pulse is the one imported.
    sys.path.insert(0, str(root / "layers" / "common"))

    import boto3
    from moto import mock_aws

    from local_stack.event_sources import sqs_record
    from retail_pulse.settings import get_settings
    from tests.support.handlers import FakeContext
    from tests.support.webhook_receiver import HangingReceiver, Receiver

    support = {
        "sqs_record": sqs_record,
        "get_settings": get_settings,
        "FakeContext": FakeContext,
        "HangingReceiver": HangingReceiver,
        "Receiver": Receiver,
    }
    with mock_aws():
        sqs = _create_resources(boto3)
        app = _load_webhook_function(root)
        warm_up(app, sqs, support)
        results = [one_run(app, sqs, args.hostile, support) for _ in range(args.runs)]
    delays = [d for d, _ in results]
    batches = [b for _, b in results]
    print(f"measured: {root} (retail_pulse from {sys.modules['retail_pulse'].__file__})")
    print(f"{args.hostile} hanging receivers of one client, then another client's delivery")
    print(f"deadline {args.deadline:g} s, {args.runs} runs")
    for run, (delay, batch) in enumerate(results, 1):
        print(f"  run {run}: victim reached after {delay:.2f} s, batch done after {batch:.2f} s")
    print(
        f"victim_delay_s_median={statistics.median(delays):.2f} "
        f"victim_delay_s_max={max(delays):.2f} batch_s_median={statistics.median(batches):.2f} "
        f"deadline_s={args.deadline:g}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
