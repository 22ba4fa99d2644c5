"""Oracle: a verbatim copy of ``softap_sim.protocol.lightssl.Channel`` before its speed-up.

Only the class name changed (``Channel`` -> ``ReferenceChannel``); :class:`ChannelError`
is imported from the real module so ``pytest.raises(ChannelError)`` matches both. The
constants it uses are copied, so the oracle does not move if the module's do.
Used by ``tests/protocol/test_lightssl_fast.py``; do not "optimise" this file.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from softap_sim.protocol.lightssl import ChannelError

SESSION_BYTES = 40  # AES key 16 ‖ IV 16 ‖ salt 8
#: the largest frame either side accepts; anything bigger ends the session
MAX_FRAME_BYTES = 16 * 1024

__all__ = ["MAX_FRAME_BYTES", "SESSION_BYTES", "ChannelError", "ReferenceChannel"]


class ReferenceChannel:
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
