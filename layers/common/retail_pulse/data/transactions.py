"""The one way this package writes several items at once, and its one retry policy; and
the one conditional single-item update that tells "its condition no longer held" apart (its
twin that reads nothing back, and its low-level form for expressions PynamoDB cannot say)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from pynamodb.connection import Connection
from pynamodb.constants import NONE
from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

# Images of one job finishing together contend for the job's item; DynamoDB cancels one
# side with TransactionConflict. Eight tries with jittered backoff (20 ms doubling, at most
# 1 s) outlast any burst seen in the soak test.
_ATTEMPTS = 8
_RETRYABLE_CAUSES = (
    "TransactionConflictException",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "InternalServerError",
)


class ConditionFailed(Exception):
    """A condition of the transaction did not hold; `failed` has the positions of its
    items whose condition failed (nothing was written)."""

    def __init__(self, failed: list[int]) -> None:
        super().__init__(f"condition failed on items {failed}")
        self.failed = failed


def transact_write(connection: Connection, build: Callable[[TransactWrite], None]) -> None:
    """Run one TransactWriteItems built by `build`, retrying what is safe to retry.

    Raises ConditionFailed when a condition did not hold: that answer is final.
    """
    for attempt in range(_ATTEMPTS):
        try:
            # The models' cached connection: a new Connection per call built a new botocore
            # client each time (loading DynamoDB's service model from JSON), which was most
            # of the process function's CPU per image (see docs/capacity.md).
            with TransactWrite(connection=connection) as transaction:
                build(transaction)
            return
        except TransactWriteError as error:
            codes = [r.code if r is not None else None for r in error.cancellation_reasons or []]
            failed = [i for i, code in enumerate(codes) if code == "ConditionalCheckFailed"]
            if failed:
                raise ConditionFailed(failed) from error
            retryable = (
                "TransactionConflict" in codes
                or "ThrottlingError" in codes
                or error.cause_response_code in _RETRYABLE_CAUSES
            )
            if not retryable or attempt == _ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))


def update_if(record: Model, actions: list[Action], condition: Condition) -> bool:
    """One conditional UpdateItem; False when its condition no longer holds (never an
    upsert). On success the record holds the item as written (PynamoDB reads ALL_NEW)."""
    try:
        record.update(actions=actions, condition=condition)
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def update_item_if(client: Any, **request: Any) -> bool:
    """One conditional UpdateItem through a low-level DynamoDB `client` (for expressions on
    map attributes and names PynamoDB's actions cannot say); False when its condition no
    longer holds."""
    try:
        client.update_item(**request)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def write_if(record: Model, actions: list[Action], condition: Condition) -> None:
    """One conditional UpdateItem that reads nothing back (ReturnValues NONE), through the
    model's own connection; raises UpdateError as Model.update does (its condition failed:
    ConditionalCheckFailedException). Model.update asks for the whole item back (ALL_NEW)
    and parses it into the record: a writer that needs no answer pays for that at both
    ends. On the process function's image writes, 0.0177 billed s/image against 0.0146
    without it (bench, four jobs of one run each)."""
    hash_key, range_key = record._get_hash_range_key_serialized_values()
    type(record)._get_connection().update_item(
        hash_key, range_key, actions=actions, condition=condition, return_values=NONE
    )


T = TypeVar("T")


# TransactWriteItems takes at most 100 items; one of them is the job's counter.
MAX_TRANSACTION_ITEMS = 100


IMAGES_PER_TRANSACTION = MAX_TRANSACTION_ITEMS - 1


def transaction_chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """Images of one job cut into as few transactions as fit, of nearly equal sizes
    (100 images are 50 + 50, not 99 + 1: the two then take about as long)."""
    if not items:
        return []
    count = -(-len(items) // IMAGES_PER_TRANSACTION)
    size = -(-len(items) // count)
    return [items[i : i + size] for i in range(0, len(items), size)]
