"""Data access: the only code that talks to DynamoDB, SQS, S3 and EventBridge.

Small repositories, one per thing stored: `jobs` (the job repository), `image_records`
(an image's record written and filed on its own), `filing` (a batch's results of one job
filed together, and the filings left open closed), `ranges` (image indexes as text),
`images` (the reconciler's image reads and repairs), `stores` (the store master),
`visits` (results read back), `queue` (the image queue), `uploads` and `ingest` (large jobs
sent as an upload), `events`, `webhook_secrets`. Each takes and returns retail_pulse.domain
types; the PynamoDB records of `models`, every connection and client (`aws`) stay in this
package, and every multi-item write goes through `transactions`. The API's clients (API
keys and usage plans) are the operators' business: retail_pulse_admin.
"""

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from retail_pulse.data.models import connect, reset_connections
from retail_pulse.data.queue import EnqueueError

# What storage raises when it fails (throttling past retries, a lost connection, an item
# that would not write): use cases catch these without knowing the libraries behind them.
STORAGE_ERRORS: tuple[type[Exception], ...] = (
    PynamoDBException,
    ClientError,
    BotoCoreError,
    EnqueueError,
)

__all__ = ["STORAGE_ERRORS", "connect", "reset_connections"]
