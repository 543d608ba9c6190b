"""Operator tools: the store master import, the API's clients (tenants: API keys on the
usage plan) and one-off backfills. Installed by `make install` beside the service package;
never part of the Lambda layer, which holds only what the functions run."""
