"""The dashboard in a real browser: Debian's Chromium over the DevTools protocol (issue 15).

The page is opened on a live control API, its LED is read from the rendered page (the
computed colour and the CSS animation, not the JSON), SETUP is pressed with a real mouse
click on the card's button, and the card is seen to follow the device: blinking dark blue
while listening, breathing cyan once online. A screenshot is taken; with
``SOFTAP_UPDATE_SCREENSHOTS=1`` it replaces the README's ``docs/dashboard.png``.

Without Chromium the module skips, except where ``SOFTAP_REQUIRE_BROWSER=1`` (``.ci/run``
installs Chromium with apt and sets it): there a missing browser is a failure.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from firmware_model import DeviceState, Secret, WifiCredential
from firmware_model import security as sec
from softap_sim import DeviceEmulator
from softap_sim.control_api import start_control_api
from tests import paths
from tests.browser import Browser, Page, chromium_path

if chromium_path() is None:
    if os.environ.get("SOFTAP_REQUIRE_BROWSER") == "1":
        raise RuntimeError(
            "chromium is required here (SOFTAP_REQUIRE_BROWSER=1): apt install chromium"
        )
    pytest.skip("chromium is not installed (apt install chromium)", allow_module_level=True)

SCREENSHOT = paths.REPO / "docs" / "dashboard.png"


@pytest_asyncio.fixture
async def page(emulator: DeviceEmulator) -> AsyncIterator[Page]:
    server = await start_control_api(emulator, "127.0.0.1", 0)
    try:
        async with Browser() as browser:
            tab = await browser.open(server.url + "/ui")
            try:
                yield tab
                assert tab.errors == []  # no uncaught exception in the page
            finally:
                await tab.close()
    finally:
        await server.close()


def led_of(device_id: str) -> str:
    """JS: the rendered LED of the device's card (colour, pattern, animation name)."""
    return f"""(() => {{
        const dot = document.querySelector('article[data-id="{device_id}"] .led');
        if (!dot) return null;
        const style = getComputedStyle(dot);
        return {{colour: dot.dataset.colour, pattern: dot.dataset.pattern,
                 background: style.backgroundColor, animation: style.animationName}};
    }})()"""


@pytest.mark.asyncio
async def test_setup_press_in_the_page_moves_the_led(
    page: Page, emulator: DeviceEmulator, tmp_path: Path
) -> None:
    device_id = emulator.device.dct.identity.device_id_hex
    listening = await page.wait_for(led_of(device_id))
    assert (listening["colour"], listening["pattern"]) == ("dark blue", "blinking")
    assert listening["animation"] not in ("", "none")  # it really blinks
    assert listening["background"] not in ("", "rgba(0, 0, 0, 0)")

    # a stored network in range: a SETUP tap leaves listening mode and joins it
    emulator.device.dct.credentials.add(WifiCredential(b"Cafe", Secret(b""), sec.OPEN, 11))
    await page.click(f'article[data-id="{device_id}"] button[data-path="/button"]')
    await emulator.wait_for_state(DeviceState.ONLINE)
    online = await page.wait_for(
        f"(() => {{ const l = {led_of(device_id)}; return l && l.colour === 'cyan' && l; }})()"
    )
    assert online["pattern"] == "breathing"
    assert online["background"] != listening["background"]
    state = await page.evaluate(
        f"document.querySelector('article[data-id=\"{device_id}\"] .state').textContent"
    )
    assert "online" in state

    shot = tmp_path / "dashboard.png"
    await page.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SOFTAP_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(shot.read_bytes())
