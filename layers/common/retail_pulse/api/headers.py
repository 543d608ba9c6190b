"""The response headers of the public API, as openapi.json documents them: the polling
contract's Location and Retry-After, the CSV pages' next-page header, the export's."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponseHeader

# The polling contract's headers (submit's 201, an ongoing status) and the CSV export's
# next-page header, as openapi.json documents them.
NEXT_HEADER = "Retail-Pulse-Next"
LOCATION_HEADER: dict[str, OpenAPIResponseHeader] = {
    "Location": {
        "description": "Where to follow the job: /api/status?jobid=<job_id>",
        "schema": {"type": "string"},
    }
}
RETRY_AFTER_HEADER: dict[str, OpenAPIResponseHeader] = {
    "Retry-After": {
        "description": "Only while the job is ongoing: seconds to wait before asking again, "
        "the estimated time left at the job's rate so far, 1 to 60 (5 before any image is "
        "done)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 60},
    }
}
NEXT_PAGE_HEADER: dict[str, OpenAPIResponseHeader] = {
    NEXT_HEADER: {
        "description": "With format=csv, when more images exist: pass it back as `next` for "
        "the next page (the JSON body has it as `next`)",
        "schema": {"type": "string"},
    }
}
EXPORT_POLL_HEADERS: dict[str, OpenAPIResponseHeader] = {
    "Location": {
        "description": "Where to poll the export: /api/results/export?jobid=<id>&format=<format>",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before polling again (2; 10 for a job over 100,000 images)",
        "schema": {"type": "integer", "minimum": 1},
    },
}
EXPORT_FILE_HEADER: dict[str, OpenAPIResponseHeader] = {
    "Location": {
        "description": "A presigned S3 GET of the file (valid EXPORT_URL_EXPIRES_S, 300 s by "
        "default; ask again for a fresh one): text/csv or application/x-ndjson, as an "
        "attachment named <job_id>.<format>",
        "schema": {"type": "string"},
    }
}
