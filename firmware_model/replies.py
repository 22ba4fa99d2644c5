"""The JSON replies of ``device-id``, ``public-key`` and ``scan-ap``, write by write.

``softap.cpp`` writes these by hand, one ``Writer::write`` per literal or character, and
HTTP turns every write into a chunk (softap-protocol.md §3.3, §10); the
:class:`~firmware_model.commands.JsonWriter` keeps the writes. Pure functions of the
device's data, so :class:`~firmware_model.device.Device` only decides what to send and caches it.
"""

from __future__ import annotations

from firmware_model.commands import JsonWriter, Reply
from firmware_model.radio import AccessPoint


def device_id_reply(device_id_hex: str, claimed: bool) -> Reply:
    """``{"id":"…","c":"0|1"}``."""
    w = JsonWriter()
    w.char(b"{")
    w.string_field(b"id", device_id_hex.encode("ascii"))
    w.char(b",")
    w.string_field(b"c", b"1" if claimed else b"0")
    w.char(b"}")
    return w.reply()


def public_key_reply(data: bytes) -> Reply:
    """``{"b":"<hex>","r":0}``, the hex written one character at a time as the firmware does."""
    w = JsonWriter()
    w.char(b"{")
    w.raw(b'"b":"')
    for ch in data.hex().upper().encode("ascii"):
        w.char(bytes((ch,)))
    w.char(b'"')
    w.char(b",")
    w.int_field(b"r", 0)
    w.char(b"}")
    return w.reply()


def public_key_variant(area: bytes, variant: str) -> bytes:
    """The key area reshaped by the ``key-variant`` fault (pain-points.md #6).

    ``unpadded``: the DER without the zero padding of the fixed-size area; ``pkcs1``: the
    RSAPublicKey alone, no SPKI header; ``corrupt``: the modulus INTEGER tag inside the
    RSAPublicKey changed from 0x02 to 0x05.
    """
    der_len = (
        2 + area[1]
        if area[1] < 0x80
        else 2 + (area[1] & 0x7F) + int.from_bytes(area[2 : 2 + (area[1] & 0x7F)], "big")
    )
    if variant == "unpadded":
        return area[:der_len]
    if variant == "pkcs1":
        return area[22:der_len]
    return area[:25] + b"\x05" + area[26:]


def scan_reply(aps: tuple[AccessPoint, ...]) -> Reply:
    """``{"scans":[{"ssid":…,"rssi":…,"sec":…,"ch":…,"mdr":…},…]}``; hidden networks left out."""
    w = JsonWriter()
    w.raw(b'{"scans":[')
    first = True
    for ap in aps:
        ssid = ap.advertised_ssid.split(b"\x00", 1)[0]
        if not ssid:
            continue
        if not first:
            w.char(b",")
        first = False
        w.char(b"{")
        w.string_field(b"ssid", ssid)
        w.char(b",")
        w.int_field(b"rssi", ap.rssi)
        w.char(b",")
        w.int_field(b"sec", ap.security)
        w.char(b",")
        w.int_field(b"ch", ap.channel)
        w.char(b",")
        w.int_field(b"mdr", ap.max_data_rate)
        w.char(b"}")
    w.raw(b"]}")
    return w.reply()
