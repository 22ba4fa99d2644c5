"""The Photon's cloud handshake and encrypted channel (cloud-api.md §8.1-§8.3), sans-IO.

Both ends are here so they can be tested against each other and against byte vectors:

* :class:`ServerHandshake` / :class:`DeviceHandshake`: the 40-byte nonce, the 256-byte
  RSA-2048 ciphertext of nonce ‖ device id, and the 384-byte reply (session material
  encrypted to the device's RSA-1024 key ‖ its HMAC-SHA1 "signed" with a raw PKCS#1
  type-1 private-key operation).
* :class:`Channel`: 2-byte big-endian length ‖ AES-128-CBC (PKCS#7); each direction
  starts from the handshake IV and then uses the first 16 bytes of its previous
  ciphertext as the next IV.

Every malformed input raises :class:`ChannelError`; callers end the session.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

NONCE_BYTES = 40
DEVICE_ID_BYTES = 12
SESSION_BYTES = 40  # AES key 16 ‖ IV 16 ‖ salt 8
#: the largest frame either side accepts; anything bigger ends the session
MAX_FRAME_BYTES = 16 * 1024


class ChannelError(Exception):
    """A malformed, truncated, oversized or unauthentic protocol message."""


def _rsa_raw_sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """PKCS#1 type-1 padding of ``data`` without a DigestInfo, and the private operation.

    spark-protocol's ``privateEncrypt``; OpenSSL does it (``NoDigestInfo``): a pure-Python
    modular power over the 2048-bit exponent would cost ~18 ms and hold the GIL.
    """
    k = (key.key_size + 7) // 8
    if len(data) > k - 11:
        raise ChannelError("data too long to sign")
    return key.sign(data, padding.PKCS1v15(), NoDigestInfo())


class ServerHandshake:
    """The cloud's side. ``lookup(device_id_hex)`` returns the device's public key or None."""

    def __init__(
        self,
        server_key: rsa.RSAPrivateKey,
        lookup: Callable[[str], rsa.RSAPublicKey | None],
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self._key = server_key
        self._lookup = lookup
        self._random = random_bytes
        self._buffer = bytearray()
        self.nonce = random_bytes(NONCE_BYTES)
        self.device_id: str | None = None
        self.session: bytes | None = None

    def hello_bytes(self) -> bytes:
        """Step 1: what the server sends first."""
        return self.nonce

    def receive_data(self, data: bytes) -> bytes | None:
        """Step 2 in, step 3 out: the 384-byte reply once 256 bytes have arrived."""
        if self.session is not None:
            raise ChannelError("handshake already complete")
        self._buffer += data
        block = (self._key.key_size + 7) // 8
        if len(self._buffer) < block:
            return None
        if len(self._buffer) > block:
            raise ChannelError("unexpected bytes after the handshake block")
        try:
            plain = self._key.decrypt(bytes(self._buffer), padding.PKCS1v15())
        except ValueError:
            raise ChannelError("the device's handshake block does not decrypt") from None
        if len(plain) < NONCE_BYTES + DEVICE_ID_BYTES:
            raise ChannelError("the handshake block is too short")
        if not hmac.compare_digest(plain[:NONCE_BYTES], self.nonce):
            raise ChannelError("the nonce does not match")
        device_id = plain[NONCE_BYTES : NONCE_BYTES + DEVICE_ID_BYTES].hex()
        device_key = self._lookup(device_id)
        if device_key is None:
            raise ChannelError(f"unknown device {device_id}")
        session = self._random(SESSION_BYTES)
        encrypted = device_key.encrypt(session, padding.PKCS1v15())
        mac = hmac.new(session, encrypted, hashlib.sha1).digest()
        self.device_id = device_id
        self.session = session
        return encrypted + _rsa_raw_sign(self._key, mac)


class DeviceHandshake:
    """The device's side, with its own RSA-1024 key and the server's public key."""

    def __init__(
        self, device_key: rsa.RSAPrivateKey, server_public: rsa.RSAPublicKey, device_id: bytes
    ) -> None:
        if len(device_id) != DEVICE_ID_BYTES:
            raise ValueError("a device id is 12 bytes")
        self._key = device_key
        self._server = server_public
        self._device_id = device_id
        self._buffer = bytearray()
        self._sent = False
        self.session: bytes | None = None

    def receive_data(self, data: bytes) -> bytes | None:
        """Feed server bytes; returns bytes to send (step 2) or None. Sets ``session``."""
        self._buffer += data
        if not self._sent:
            if len(self._buffer) < NONCE_BYTES:
                return None
            nonce = bytes(self._buffer[:NONCE_BYTES])
            del self._buffer[:NONCE_BYTES]
            self._sent = True
            return self._server.encrypt(nonce + self._device_id, padding.PKCS1v15())
        dev_block = (self._key.key_size + 7) // 8
        srv_block = (self._server.key_size + 7) // 8
        if len(self._buffer) < dev_block + srv_block:
            return None
        if len(self._buffer) > dev_block + srv_block:
            raise ChannelError("unexpected bytes after the server's handshake reply")
        encrypted = bytes(self._buffer[:dev_block])
        signature = bytes(self._buffer[dev_block:])
        try:
            session = self._key.decrypt(encrypted, padding.PKCS1v15())
        except ValueError:
            raise ChannelError("the session material does not decrypt") from None
        if len(session) != SESSION_BYTES:
            raise ChannelError("the session material has the wrong length")
        try:
            signed = self._server.recover_data_from_signature(signature, padding.PKCS1v15(), None)
        except InvalidSignature:
            raise ChannelError("the server's signature does not verify") from None
        expected = hmac.new(session, encrypted, hashlib.sha1).digest()
        if not hmac.compare_digest(signed, expected):
            raise ChannelError("the server's HMAC does not match")
        self.session = session
        return None


class Channel:
    """One end of the AES-128-CBC message channel."""

    def __init__(self, session: bytes) -> None:
        if len(session) != SESSION_BYTES:
            raise ValueError("session material is 40 bytes")
        self._key = session[:16]
        self._send_iv = session[16:32]
        self._recv_iv = session[16:32]
        self.salt = session[32:40]
        self._buffer = bytearray()

    def encrypt(self, plaintext: bytes) -> bytes:
        padder = sym_padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        enc = Cipher(algorithms.AES(self._key), modes.CBC(self._send_iv)).encryptor()
        ct = enc.update(padded) + enc.finalize()
        if len(ct) > 0xFFFF:
            raise ChannelError("message too large for the 2-byte length")
        self._send_iv = ct[:16]
        return len(ct).to_bytes(2, "big") + ct

    def receive_data(self, data: bytes) -> list[bytes]:
        """Complete frames decrypted, in order; partial frames wait for more bytes."""
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= 2:
            length = int.from_bytes(self._buffer[:2], "big")
            if length == 0 or length % 16 or length > MAX_FRAME_BYTES:
                raise ChannelError(f"bad frame length {length}")
            if len(self._buffer) < 2 + length:
                break
            ct = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            dec = Cipher(algorithms.AES(self._key), modes.CBC(self._recv_iv)).decryptor()
            padded = dec.update(ct) + dec.finalize()
            self._recv_iv = ct[:16]
            unpadder = sym_padding.PKCS7(128).unpadder()
            try:
                out.append(unpadder.update(padded) + unpadder.finalize())
            except ValueError:
                raise ChannelError("bad padding: wrong key or corrupted frame") from None
        return out
