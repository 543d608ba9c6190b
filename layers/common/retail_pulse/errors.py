"""What can go wrong in a use case, in the service's own words: jobs/, visits/ and stores/
raise these, and know nothing of HTTP. api/errors.py alone maps each to a status and body.
Every message is for the person who sent the request: what was wrong, and what to do."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service cannot carry out as sent."""


class InvalidRequest(ServiceError):
    """Something the client sent is not acceptable (a bad header, a count that does not
    match, a date that does not parse, a token that is not this query's)."""


class NotInStoreMaster(InvalidRequest):
    """A store id or area code the store master does not have (for reading results; at
    submit an unknown store fails its images instead, as the SPEC says)."""


class UnknownJob(ServiceError):
    """No job of this caller has this id (the SPEC's `400 {}`)."""


class NoExport(ServiceError):
    """The caller's job has no export in this format (none was asked for, or it was of an
    earlier finish of a job retried since): the message says to POST one."""


class KeyInProgress(ServiceError):
    """A request with the same Idempotency-Key is still running."""


class KeyReused(ServiceError):
    """The Idempotency-Key was used for a different request."""


class StorageInterrupted(ServiceError):
    """Storage failed part-way; the same request, sent again, finishes the job."""


class WrongJobState(ServiceError):
    """The job's status does not allow this action (cancel a finished job, retry one that
    did not fail); the message says what the status is and what can be done."""


class UploadInvalid(Exception):
    """An uploaded job's body breaks a rule of the submit body (not JSON, a bad URL, count
    that does not match, over a limit): the message says what and where. Not a request's
    error: the ingest fails the job with it (its status shows it, store_id null)."""
