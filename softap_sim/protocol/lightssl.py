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
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from softap_sim.errors import SimulatorError

NONCE_BYTES = 40
DEVICE_ID_BYTES = 12
SESSION_BYTES = 40  # AES key 16 ‖ IV 16 ‖ salt 8
#: the largest frame either side accepts; anything bigger ends the session
MAX_FRAME_BYTES = 16 * 1024

#: the largest ciphertext whose length fits the 2-byte prefix (a multiple of 16)
_MAX_SENDABLE = 0xFFFF & ~15
#: PKCS#7 padding strings, indexed by their length (1..16; index 0 unused)
_PADS = tuple(bytes((n,)) * n for n in range(17))
#: 2-byte big-endian length prefixes of every sendable ciphertext size
_LENGTHS = {size: size.to_bytes(2, "big") for size in range(16, _MAX_SENDABLE + 1, 16)}


class ChannelError(SimulatorError):
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
    """One end of the AES-128-CBC message channel.

    The IV rule (the next IV is the *first* ciphertext block of the previous message in
    that direction) means a standard CBC context, which chains from the *last* block,
    cannot simply be kept across messages, and a fresh ``Cipher(...)`` per frame costs
    ~3 µs. So each direction keeps one long-lived CBC context (one key schedule) and
    steers it back onto the rule, which leaves the ciphertext byte-for-byte the same:

    * sending: after a multi-block message the context's chaining value is the last
      block ``C_n`` where the rule wants ``C_1``; XOR-ing ``C_1 ^ C_n`` (``_send_fix``)
      into the next message's first plaintext block gives ``E(P_1 ^ C_1)``, as required;
    * receiving: before a frame that follows a multi-block frame the context is fed the
      wanted IV ``C_1`` as one throw-away block (``_recv_reseed``), whose output is dropped.

    After a one-block message both are already right (``C_1 == C_n``) and cost nothing.
    PKCS#7 is done with bytes operations; ``receive_data`` walks the buffer (or, when
    nothing is pending, the caller's ``bytes`` themselves) with an offset and deletes the
    consumed bytes once. ``tests/protocol/test_lightssl_fast.py`` holds all of this to the old
    Cipher-per-frame version (``tests/protocol/lightssl_reference.py``), errors included.
    """

    def __init__(self, session: bytes) -> None:
        if len(session) != SESSION_BYTES:
            raise ValueError("session material is 40 bytes")
        self._key = session[:16]
        aes = algorithms.AES(self._key)
        iv = session[16:32]
        self._encrypt_blocks = Cipher(aes, modes.CBC(iv)).encryptor().update
        self._decrypt_blocks = Cipher(aes, modes.CBC(iv)).decryptor().update
        #: XOR mask (as an int) for the next plaintext's first block; 0 when none is due
        self._send_fix = 0
        #: block to feed the decryptor before the next frame; empty when none is due
        self._recv_reseed: bytes | bytearray = b""
        self.salt = session[32:40]
        self._buffer = bytearray()

    def encrypt(self, plaintext: bytes) -> bytes:
        # bytes or bytearray; TypeError for anything else (memoryview included, as the
        # padder-object version did), before any check or state change
        padded = plaintext + _PADS[16 - len(plaintext) % 16]
        size = len(padded)
        if size > _MAX_SENDABLE:
            # before any state moves, as the old encrypt-then-check had no side effects
            raise ChannelError("message too large for the 2-byte length")
        fix = self._send_fix
        if fix:
            head = (int.from_bytes(padded[:16], "big") ^ fix).to_bytes(16, "big")
            ct = self._encrypt_blocks(head + padded[16:] if size > 16 else head)
        else:
            ct = self._encrypt_blocks(padded)
        if size > 16:
            self._send_fix = int.from_bytes(ct[:16], "big") ^ int.from_bytes(ct[-16:], "big")
        else:
            self._send_fix = 0
        return _LENGTHS[size] + ct

    def receive_data(self, data: bytes) -> list[bytes]:
        """Complete frames decrypted, in order; partial frames wait for more bytes."""
        buf = self._buffer
        src: bytes | bytearray
        if buf or data.__class__ is not bytes:
            buf += data  # (a TypeError for a non-buffer, before anything moves)
            src = buf
        else:
            src = data  # nothing pending: parse the caller's bytes without copying them
        end = len(src)
        out: list[bytes] = []
        if end < 2:
            if src is data:
                buf += data
            return out
        decrypt = self._decrypt_blocks
        reseed = self._recv_reseed
        pos = 0
        while end - pos >= 2:
            length = src[pos] << 8 | src[pos + 1]
            if length == 0 or length & 15 or length > MAX_FRAME_BYTES:
                self._consumed(src, pos, reseed)
                raise ChannelError(f"bad frame length {length}")
            start = pos + 2
            stop = start + length
            if stop > end:
                break
            ct = src[start:stop]
            padded = decrypt(reseed + ct)[16:] if reseed else decrypt(ct)
            reseed = ct[:16] if length > 16 else b""
            pos = stop
            n = padded[-1]
            if n > 16 or n == 0 or not padded.endswith(_PADS[n]):
                self._consumed(src, pos, reseed)
                raise ChannelError("bad padding: wrong key or corrupted frame")
            out.append(padded[:-n])
        self._consumed(src, pos, reseed)
        return out

    def _consumed(self, src: bytes | bytearray, pos: int, reseed: bytes | bytearray) -> None:
        """Drop the first ``pos`` bytes of ``src`` and keep the rest (and the IV) for later.

        On an error too, so the channel is left exactly where the frame-at-a-time version
        stopped: frames before the bad one (and a badly padded one itself) consumed.
        """
        self._recv_reseed = reseed
        if src is self._buffer:
            del self._buffer[:pos]
        elif pos < len(src):
            self._buffer += src[pos:]
