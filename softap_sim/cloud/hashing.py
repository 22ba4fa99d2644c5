"""Secrets: generation, hashing and constant-time verification.

Tokens, client secrets and claim codes are random with at least 160 bits, so a single
SHA-256 is a sound way to store them (lookups go by hash); customer and user passwords
are low-entropy and get scrypt with a per-password salt. Plain values are never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

TOKEN_BYTES = 20  # 160 bits -> 40 hex chars, the shape of Particle's tokens
CLAIM_CODE_LENGTH = 63
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def new_client_secret() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def new_claim_code() -> str:
    """63 characters of the base64 alphabet (the docs' example shape): 378 random bits.

    48 random bytes in base64 are 64 characters, each uniform over the 64-letter
    alphabet (6 bits each, no padding); the first 63 are the code.
    """
    return base64.b64encode(secrets.token_bytes(48)).decode("ascii")[:CLAIM_CODE_LENGTH]


def digest(secret: str) -> str:
    """The stored form of a high-entropy secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_digest(secret: str, stored: str) -> bool:
    return hmac.compare_digest(digest(secret), stored)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    salt_b64 = base64.b64encode(salt).decode()
    dk_b64 = base64.b64encode(dk).decode()
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt_b64}${dk_b64}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check; a missing hash (shadow customer) never matches."""
    if not stored:
        hashlib.scrypt(b"x", salt=b"0" * 16, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
        return False
    try:
        scheme, n, r, p, salt_b64, dk_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    dk = hashlib.scrypt(
        password.encode("utf-8"),
        salt=base64.b64decode(salt_b64),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=32,
    )
    return hmac.compare_digest(dk, base64.b64decode(dk_b64))
