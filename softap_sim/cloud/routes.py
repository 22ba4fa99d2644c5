"""The cloud's one route table (cloud-api.md §9.1): (method, path, handler).

Order matters: aiohttp tries resources registered under the same path prefix in
registration order, so literal segments (``events``, ``current``) come before the
dynamic ``{device}/{name}`` and ``{token}`` routes.
"""

from __future__ import annotations

from softap_sim.cloud.handlers import (
    calls,
    clients,
    customers,
    devices,
    events,
    oauth,
    provisioning,
    publish,
    tokens,
    user,
)
from softap_sim.cloud.handlers.common import Handler

ROUTES: list[tuple[str, str, Handler]] = [
    # any method: the OAuth library answers a non-POST with its invalid_request
    ("*", "/oauth/token", oauth.oauth_token),
    ("POST", "/v1/clients", clients.create_client),
    ("GET", "/v1/clients", clients.list_clients),
    ("PUT", "/v1/clients/{client_id}", clients.update_client),
    ("DELETE", "/v1/clients/{client_id}", clients.delete_client),
    ("POST", "/v1/products/{product}/clients", clients.create_client),
    ("GET", "/v1/products/{product}/clients", clients.list_clients),
    ("PUT", "/v1/products/{product}/clients/{client_id}", clients.update_client),
    ("DELETE", "/v1/products/{product}/clients/{client_id}", clients.delete_client),
    ("POST", "/v1/products/{product}/customers", customers.create_customer),
    ("GET", "/v1/products/{product}/customers", customers.list_customers),
    ("PUT", "/v1/products/{product}/customers/{email}", customers.update_customer),
    ("DELETE", "/v1/products/{product}/customers/{email}", customers.delete_customer),
    ("GET", "/v1/user", user.get_user),
    ("GET", "/v1/webhooks", user.get_webhooks),
    ("GET", "/v1/softap-sim/cloud", provisioning.get_cloud_info),
    ("POST", "/v1/provisioning/{device}", provisioning.post_provisioning),
    ("GET", "/v1/access_tokens", tokens.list_tokens),
    ("GET", "/v1/access_tokens/current", tokens.current_token),
    ("DELETE", "/v1/access_tokens/current", tokens.delete_current_token),
    ("DELETE", "/v1/access_tokens/{token}", tokens.delete_token),
    ("POST", "/v1/device_claims", devices.post_device_claims),
    ("POST", "/v1/products/{product}/device_claims", devices.post_device_claims),
    ("GET", "/v1/devices", devices.get_devices),
    ("POST", "/v1/devices", devices.post_devices),
    ("POST", "/v1/devices/events", publish.post_event),
    ("GET", "/v1/devices/events", events.get_events),
    ("GET", "/v1/devices/events/{prefix:.+}", events.get_events),
    ("GET", "/v1/events/{prefix:.+}", events.get_public_events),
    ("GET", "/v1/events", events.get_public_events),
    ("GET", "/v1/devices/{device}/events", events.get_device_events),
    ("GET", "/v1/devices/{device}/events/{prefix:.+}", events.get_device_events),
    ("GET", "/v1/devices/{device}", devices.get_device),
    ("PUT", "/v1/devices/{device}", devices.put_device),
    ("DELETE", "/v1/devices/{device}", devices.delete_device),
    ("GET", "/v1/devices/{device}/{name}", calls.get_variable),
    ("POST", "/v1/devices/{device}/{name}", calls.call_function),
    ("GET", "/v1/products/{product}/devices", devices.get_product_devices),
    ("GET", "/v1/products/{product}/devices/{device}", devices.get_device),
    ("DELETE", "/v1/products/{product}/devices/{device}/owner", devices.delete_device),
    ("GET", "/v1/products/{product}/devices/{device}/{name}", calls.get_variable),
    ("POST", "/v1/products/{product}/devices/{device}/{name}", calls.call_function),
]
