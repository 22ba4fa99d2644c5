"""``GET /ui``: the dashboard's static files, served by the control API (issue 15).

The three files with their content types; nothing else under ``/ui``; every URL the page
uses is same-origin and names a real control-API route (the buttons' POSTs are sent as
the page sends them and accepted); the files ship as package data; device data reaches
the page only as text (an SSID is hostile input).
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from softap_sim import DeviceEmulator
from softap_sim.control_api import DEVICE_ROUTES, create_app
from softap_sim.control_stream import UI_FILES
from tests import paths

UI_DIR = paths.REPO / "softap_sim" / "ui"
SUFFIX_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
#: every file the dashboard ships, with the content type it must be served with
TYPES = {p.name: SUFFIX_TYPES[p.suffix] for p in sorted(UI_DIR.iterdir()) if p.is_file()}


@pytest_asyncio.fixture
async def api(emulator: DeviceEmulator) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(emulator)))
    await client.start_server()
    yield client
    await client.close()


def ui_text(name: str) -> str:
    return (UI_DIR / name).read_text("utf-8")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "name"), [("/ui", "index.html"), *((f"/ui/{n}", n) for n in TYPES)]
)
async def test_serves_each_file_with_its_content_type(
    api: TestClient[Any, Any], path: str, name: str
) -> None:
    async with api.get(path) as resp:
        assert resp.status == 200
        assert (resp.content_type, resp.charset) == (TYPES[name], "utf-8")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.text() == ui_text(name)
    assert set(UI_FILES) == set(TYPES)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path",
    ["/ui/nope.js", "/ui/..%2Fcontrol_api.py", "/ui/%2e%2e", "/ui/APP.JS", "/ui/" + "x" * 300],
)
async def test_other_names_are_json_404s(api: TestClient[Any, Any], path: str) -> None:
    async with api.get(path) as resp:
        assert (resp.status, resp.content_type) == (404, "application/json")
        body = await resp.json()
        assert body["error"] == "not_found"
        assert "x" * 65 not in body["message"]  # a long name is not echoed whole


@pytest.mark.asyncio
async def test_ui_is_get_only(api: TestClient[Any, Any]) -> None:
    async with api.post("/ui", json={}) as resp:
        assert (resp.status, resp.content_type) == (405, "application/json")


def test_only_same_origin_urls() -> None:
    """No CDN, no other host: no scheme-qualified or protocol-relative URL anywhere."""
    for name in TYPES:
        text = ui_text(name)
        assert not re.search(r"\b[a-z][a-z0-9+.-]*://", text, re.IGNORECASE), name
        assert not re.search(r"""["'(]\s*//""", text), name
        assert "@import" not in text
    js = ui_text("app.js")
    assert 'new EventSource("/v1/stream")' in js
    assert "`/v1/devices/${encodeURIComponent(id)}${button.dataset.path}`" in js
    html = ui_text("index.html")
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["/ui/style.css", "/ui/app.js"]


def test_device_data_only_ever_reaches_the_page_as_text() -> None:
    js = ui_text("app.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js


def _buttons() -> list[tuple[str, str]]:
    return re.findall(r"data-path=\"([^\"]+)\" data-body='([^']*)'", ui_text("index.html"))


def test_buttons_name_device_post_routes() -> None:
    posts = {path for method, path, _ in DEVICE_ROUTES if method == "POST"}
    buttons = _buttons()
    assert [path for path, _ in buttons] == ["/button"] * 3 + ["/power", "/listen"]
    for path, body in buttons:
        assert path in posts
        assert isinstance(json.loads(body), dict)
    assert [json.loads(b).get("hold_s") for _, b in buttons[:3]] == [0.5, 3, 10]


@pytest.mark.asyncio
async def test_buttons_are_accepted_as_the_page_sends_them(
    api: TestClient[Any, Any], emulator: DeviceEmulator
) -> None:
    device = emulator.device.dct.identity.device_id_hex
    for path, body in _buttons():
        async with api.post(
            f"/v1/devices/{device}{path}", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            reply = await resp.json()
            assert resp.status in (200, 409), (path, reply)
            if resp.status == 200:
                assert reply["device_id"] == device  # the page redraws the card from it
        await emulator.settle()


def test_files_are_package_data() -> None:
    config = tomllib.loads((paths.REPO / "pyproject.toml").read_text("utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["softap_sim"]
    for name in TYPES:
        assert any(fnmatch.fnmatch(f"ui/{name}", p) for p in patterns), name
    assert sorted(p.name for p in UI_DIR.iterdir()) == sorted(TYPES)


def test_the_pages_are_small() -> None:
    """Plain files, no framework: all pages together stay under 100 KB."""
    assert sum(len(ui_text(n).encode()) for n in TYPES) < 100_000
