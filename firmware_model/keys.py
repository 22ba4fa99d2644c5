"""The device's RSA key and the RSA/AES primitives of ``configure-ap``.

This is the only module that imports :mod:`cryptography`. The PKCS#1 v1.5 decryption
is done on the raw RSA primitive so that failures carry exactly the error codes the
firmware's crypto library returns (softap-protocol.md §4.4): mbedTLS on current
firmware, tropicssl on 0.4.x - 0.6.x.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from firmware_model.eras import CryptoErrors
from firmware_model.errors import DctFormatError

#: bytes of the DCT public-key area that ``public-key`` prints
#: (``EXTERNAL_FLASH_SERVER_PUBLIC_KEY_LENGTH``)
PUBLIC_KEY_AREA_BYTES = 294
#: the firmware's hex-decode buffer for ``pwd``/``ek`` (``decrypt()`` in softap.cpp)
CIPHERTEXT_BUFFER_BYTES = 256


def _load_powmod() -> Callable[[int, int, int], int]:
    """GMP's modular exponentiation when gmpy2 is installed, else the builtin ``pow``.

    The private operation of every ``configure-ap`` is the largest single CPU cost of an
    onboarding (RSA-1024 CRT: 0.89 ms with ``pow``, 0.11 ms with GMP, scripts/bench_setup.py).
    Both give the same integers; the fallback keeps the model usable without the wheel.
    """
    try:
        gmpy2 = importlib.import_module("gmpy2")
    except ImportError:
        return pow
    powmod = gmpy2.powmod

    def gmp_pow(base: int, exp: int, mod: int) -> int:
        return int(powmod(base, exp, mod))

    return gmp_pow


_powmod = _load_powmod()
#: what :func:`use_powmod` accepts
POWMOD_BACKENDS = ("auto", "gmp", "builtin")


def use_powmod(backend: str = "auto") -> str:
    """Choose the modular exponentiation of the RSA private operation; returns the choice.

    ``auto`` (the choice at import): GMP when gmpy2 is installed, else the builtin ``pow``;
    ``gmp`` (:class:`ImportError` without gmpy2); ``builtin``. A knob for measuring what
    gmpy2 buys (scripts/bench_setup.py ``--what-if python-rsa``) in one process: every
    private operation looks the function up anew.
    """
    global _powmod
    if backend not in POWMOD_BACKENDS:
        raise ValueError(f"unknown powmod backend {backend!r}; choose from {POWMOD_BACKENDS}")
    chosen = pow if backend == "builtin" else _load_powmod()
    if backend == "gmp" and chosen is pow:
        raise ImportError("the gmp powmod backend needs gmpy2")
    _powmod = chosen
    return "builtin" if chosen is pow else "gmp"

# mbedTLS 2.x error codes
MBEDTLS_ERR_RSA_BAD_INPUT_DATA = -0x4080
MBEDTLS_ERR_RSA_INVALID_PADDING = -0x4100
MBEDTLS_ERR_RSA_PRIVATE_FAILED = -0x4300
MBEDTLS_ERR_RSA_OUTPUT_TOO_LARGE = -0x4400
MBEDTLS_ERR_MPI_BAD_INPUT_DATA = -0x0004
# tropicssl error codes (device-os <= 0.6.x)
TROPICSSL_ERR_RSA_BAD_INPUT_DATA = -0x0400
TROPICSSL_ERR_RSA_INVALID_PADDING = -0x0410
TROPICSSL_ERR_RSA_OUTPUT_TOO_LARGE = -0x0470


@dataclass(frozen=True, slots=True)
class DecryptResult:
    """Plaintext on success, otherwise the negative library error code."""

    plaintext: bytes = b""
    error: int = 0

    @property
    def ok(self) -> bool:
        return self.error == 0


class DeviceKey:
    """The device's RSA private key (RSA-1024, e=65537 on a real Photon)."""

    __slots__ = ("_crt", "_key", "_modulus_bytes", "_n", "_public_area")

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key
        numbers = key.private_numbers()
        pub = numbers.public_numbers
        self._n = pub.n
        self._modulus_bytes = (pub.n.bit_length() + 7) // 8
        self._crt = (numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._public_area = der[:PUBLIC_KEY_AREA_BYTES].ljust(PUBLIC_KEY_AREA_BYTES, b"\x00")

    @classmethod
    def generate(cls, bits: int = 1024) -> DeviceKey:
        """A fresh key, as the device makes on first boot (OS randomness)."""
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_pem(cls, pem: bytes, *, trusted: bool = False) -> DeviceKey:
        """Load a PKCS#8 or PKCS#1 PEM private key; :class:`DctFormatError` if unusable.

        ``trusted`` skips OpenSSL's ~4 ms consistency check, for keys this program wrote
        itself (a state directory's 0600 files); a fleet of 1,000 loads in well under 5 s.
        """
        try:
            key = serialization.load_pem_private_key(
                pem, password=None, unsafe_skip_rsa_key_validation=trusted
            )
        except (ValueError, TypeError) as err:
            raise DctFormatError(f"not a PEM RSA private key ({err})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DctFormatError("the device key must be an RSA private key")
        return cls(key)

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted (the file holding it is mode 0600)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def crypto_key(self) -> rsa.RSAPrivateKey:
        """The ``cryptography`` key, for the device-to-cloud handshake (softap_sim)."""
        return self._key

    @property
    def bits(self) -> int:
        return self._n.bit_length()

    @property
    def public_key_area(self) -> bytes:
        """SPKI DER padded with zeros to 294 bytes: what ``public-key`` prints in hex."""
        return self._public_area

    @property
    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def _private_op(self, c: int) -> int:
        p, q, dmp1, dmq1, iqmp = self._crt
        m1 = _powmod(c % p, dmp1, p)
        m2 = _powmod(c % q, dmq1, q)
        h = (iqmp * (m1 - m2)) % p
        return m2 + h * q

    def decrypt_pkcs1v15(
        self, ciphertext: bytes, max_output: int, errors: CryptoErrors = CryptoErrors.MBEDTLS
    ) -> DecryptResult:
        """``decrypt_rsa``: PKCS#1 v1.5 decryption of the first ``k`` bytes of ``ciphertext``.

        ``ciphertext`` is the firmware's 256-byte decode buffer; the library always reads
        exactly the modulus length from it. ``max_output`` is the output buffer size.
        """
        k = self._modulus_bytes
        block = ciphertext[:k].ljust(k, b"\x00")
        c = int.from_bytes(block, "big")
        if c >= self._n:
            if errors is CryptoErrors.MBEDTLS:
                return DecryptResult(
                    error=MBEDTLS_ERR_RSA_PRIVATE_FAILED + MBEDTLS_ERR_MPI_BAD_INPUT_DATA
                )
            return DecryptResult(error=TROPICSSL_ERR_RSA_BAD_INPUT_DATA)
        em = self._private_op(c).to_bytes(k, "big")
        if errors is CryptoErrors.MBEDTLS:
            return _unpad_mbedtls(em, max_output)
        return _unpad_tropicssl(em, max_output)


def _unpad_mbedtls(em: bytes, max_output: int) -> DecryptResult:
    """mbedTLS 2.x ``rsa_rsaes_pkcs1_v15_decrypt`` padding rules."""
    k = len(em)
    bad = em[0] != 0 or em[1] != 0x02
    try:
        sep = em.index(0, 2)
    except ValueError:
        return DecryptResult(error=MBEDTLS_ERR_RSA_INVALID_PADDING)
    pad_count = sep - 2
    if bad or pad_count < 8:
        return DecryptResult(error=MBEDTLS_ERR_RSA_INVALID_PADDING)
    plaintext = em[sep + 1 :]
    if len(plaintext) > min(max_output, k - 11):
        return DecryptResult(error=MBEDTLS_ERR_RSA_OUTPUT_TOO_LARGE)
    return DecryptResult(plaintext=plaintext)


def _unpad_tropicssl(em: bytes, max_output: int) -> DecryptResult:
    """tropicssl ``rsa_pkcs1_decrypt``: no minimum padding length is enforced."""
    if em[0] != 0 or em[1] != 0x02:
        return DecryptResult(error=TROPICSSL_ERR_RSA_INVALID_PADDING)
    try:
        sep = em.index(0, 2, len(em) - 1)
    except ValueError:
        return DecryptResult(error=TROPICSSL_ERR_RSA_INVALID_PADDING)
    plaintext = em[sep + 1 :]
    if len(plaintext) > max_output:
        return DecryptResult(error=TROPICSSL_ERR_RSA_OUTPUT_TOO_LARGE)
    return DecryptResult(plaintext=plaintext)


def aes128_cbc_decrypt_blocks(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CBC decryption without unpadding (the firmware never unpads ``key``)."""
    usable = len(data) - len(data) % 16
    if usable == 0:
        return b""
    decryptor = Cipher(
        algorithms.AES(key.ljust(16, b"\x00")[:16]), modes.CBC(iv.ljust(16, b"\x00")[:16])
    ).decryptor()
    return decryptor.update(data[:usable]) + decryptor.finalize()
