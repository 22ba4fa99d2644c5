"""Device keys from other processes: how a separate ``softap-sim run`` joins this cloud.

``GET /v1/softap-sim/cloud`` (no token: only public facts) names the device endpoint and
the server's public key, which a device needs in its DCT before it can connect.
``POST /v1/provisioning/{device}`` with ``publicKey`` puts a device's key into the
registry -- the route ``particle keys send`` uses against the real cloud. A registered
key never changes (a different key for a known id is a 400 conflict), so the route can
add devices but not take one over. Customers may not provision (403).
"""

from __future__ import annotations

from aiohttp import web

from softap_sim import __version__
from softap_sim.cloud import validate
from softap_sim.cloud.errors import Forbidden, InvalidRequest
from softap_sim.cloud.handlers.common import backend_of, begin, json_response

#: a PEM RSA-1024 public key is ~270 characters; RSA-4096 ~800
MAX_PUBLIC_KEY_CHARS = 4096


async def get_cloud_info(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    link = backend.link
    host, port = getattr(link, "host", None), getattr(link, "port", None)
    key = getattr(link, "server_key", None)
    pem = None
    if key is not None:
        from cryptography.hazmat.primitives import serialization

        pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
    endpoint = {"host": host, "port": port} if isinstance(port, int) and port > 0 else None
    return json_response(
        {"softap_sim": __version__, "device_endpoint": endpoint, "server_public_key": pem}
    )


async def post_provisioning(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    if principal.is_customer:
        raise Forbidden("Customers cannot provision devices")
    device_id = validate.device_id(request.match_info["device"])
    if device_id is None:
        raise InvalidRequest("The device id must be 24 hex digits")
    given = body.get("deviceID") or body.get("deviceId")
    if given is not None and validate.device_id(given) != device_id:
        raise InvalidRequest("deviceID in the body differs from the one in the path")
    pem = validate.text(
        body.get("publicKey") or body.get("public_key"),
        "publicKey",
        max_length=MAX_PUBLIC_KEY_CHARS,
        required=True,
    )
    row = await backend.register_device(device_id, pem)
    return json_response({"ok": True, "id": row["id"], "name": row["name"]})
