"""The API's clients: create one (an API key on the stack's usage plan) and list them.

Behind `retail-pulse clients add|list`; see clients.service for how the stack is found.
Only retail_pulse.data.clients talks to API Gateway and CloudFormation.
"""

from retail_pulse.clients.service import (
    DEFAULT_STACK,
    AddedClient,
    ApiTarget,
    ClientListing,
    ClientsError,
    GatewayError,
    add_client,
    describe_limits,
    find_api,
    list_clients,
)

__all__ = [
    "DEFAULT_STACK",
    "AddedClient",
    "ApiTarget",
    "ClientListing",
    "ClientsError",
    "GatewayError",
    "add_client",
    "describe_limits",
    "find_api",
    "list_clients",
]
