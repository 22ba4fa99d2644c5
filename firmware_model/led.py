"""The RGB status LED: colour and pattern per device state (Particle's documented codes)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LedColour(enum.Enum):
    OFF = "off"
    WHITE = "white"
    DARK_BLUE = "dark blue"
    GREEN = "green"
    CYAN = "cyan"
    RED = "red"


class LedPattern(enum.Enum):
    OFF = "off"
    SOLID = "solid"
    BLINKING = "blinking"
    FAST_BLINKING = "fast blinking"
    BREATHING = "breathing"


@dataclass(frozen=True, slots=True)
class Led:
    colour: LedColour
    pattern: LedPattern

    def describe(self) -> str:
        if self.colour is LedColour.OFF:
            return "off"
        return f"{self.pattern.value} {self.colour.value}"

    def to_json(self) -> dict[str, str]:
        return {"colour": self.colour.value, "pattern": self.pattern.value, "text": self.describe()}


LED_OFF = Led(LedColour.OFF, LedPattern.OFF)
#: booting
LED_BOOTING = Led(LedColour.WHITE, LedPattern.SOLID)
#: listening mode (also when the memory gate fails: the LED blinks blue in every case, §7)
LED_LISTENING = Led(LedColour.DARK_BLUE, LedPattern.BLINKING)
#: clearing credentials (setup button held 10 s in listening mode)
LED_CLEARING = Led(LedColour.DARK_BLUE, LedPattern.FAST_BLINKING)
#: connecting to Wi-Fi (association, DHCP)
LED_JOINING = Led(LedColour.GREEN, LedPattern.BLINKING)
#: connecting to the cloud
LED_CLOUD = Led(LedColour.CYAN, LedPattern.FAST_BLINKING)
#: connected to the cloud
LED_ONLINE = Led(LedColour.CYAN, LedPattern.BREATHING)
#: a hard fault (SOS) before the device resets
LED_SOS = Led(LedColour.RED, LedPattern.BLINKING)
