"""Data access: the only code that talks to DynamoDB and SQS.

Small repositories, one per thing stored: `jobs` (jobs and the hot path of their image
records), `images` (the reconciler's image reads and repairs), `stores` (the store master),
`visits` (results read back), `queue` (the image queue). Each takes and returns
retail_pulse.domain types; the PynamoDB records of `models` and every connection stay in
this package, and every multi-item write goes through `transactions`.
"""

from retail_pulse.data.models import connect, reset_connections

__all__ = ["connect", "reset_connections"]
