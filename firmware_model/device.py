"""The device façade: one emulated Photon in listening mode.

Theory of operation: transports decode bytes into ``(command name, body)`` pairs and
call :meth:`Device.execute`; the returned :class:`Reply` carries the firmware's
individual writes and the effects the transport must carry out (persist the DCT,
take the access point down). The model never does I/O, never reads a clock and
never draws randomness (house-style.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence

from firmware_model import security as sec
from firmware_model.app import UserApp, default_app
from firmware_model.commands import (
    ANTENNA_COMMANDS,
    BODY_COMMANDS,
    NO_JSON,
    UNKNOWN,
    Reply,
    ReplyKind,
    c_atoi,
    hex_decode,
    json_unescape,
    result_reply,
)
from firmware_model.credentials import CredentialStore, EnterpriseConfig, WifiCredential
from firmware_model.dct import Dct
from firmware_model.eras import ERAS, CryptoErrors, EraProfile, FirmwareEra
from firmware_model.errors import FirmwareError
from firmware_model.events import (
    DctChanged,
    Effect,
    Event,
    EventReceived,
    JoinFinished,
    JoinOutcome,
    SoftApShutdown,
)
from firmware_model.faults import FaultKind, FaultPlan
from firmware_model.jsmn import (
    JsmnError,
    ParsedRequest,
    Token,
    TokenType,
    parse_json_request,
    token_array_sizes,
    tokenize,
)
from firmware_model.keys import (
    CIPHERTEXT_BUFFER_BYTES,
    MBEDTLS_ERR_RSA_PRIVATE_FAILED,
    DeviceKey,
)
from firmware_model.led import Led
from firmware_model.memory import (
    JSON_TOKEN_BYTES,
    RSA_WORK_BYTES,
    SCAN_QUEUE_BYTES,
    Heap,
)
from firmware_model.radio import RadioEnvironment
from firmware_model.replies import device_id_reply, public_key_reply, public_key_variant, scan_reply
from firmware_model.secret import Secret
from firmware_model.state import DeviceState, Lifecycle
from firmware_model.timing import FAST, TimingProfile
from firmware_model.wlan import (
    MAX_IDENTITY_BYTES,
    association_lost,
    check_credentials,
    decrypt_private_key,
    join_result,
)

#: ``MBEDTLS_ERR_MPI_ALLOC_FAILED``: the RSA working memory could not be allocated
MBEDTLS_ERR_MPI_ALLOC_FAILED = -0x0010
TROPICSSL_ERR_RSA_PRIVATE_FAILED = -0x0450

_S, _P = TokenType.STRING, TokenType.PRIMITIVE
CONFIGURE_KEYS = (
    b"idx",
    b"ssid",
    b"pwd",
    b"ch",
    b"sec",
    b"eap",
    b"oi",
    b"ii",
    b"crt",
    b"ek",
    b"key",
    b"ca",
)
CONFIGURE_TYPES = (_P, _S, _S, _P, _P, _P, _S, _S, _S, _S, _S, _S)
SET_KEYS = (b"k", b"v")
SET_TYPES = (_S, _S)


#: kept for callers that type effects loosely
DeviceEffect = Effect


class Device:
    """A Photon in listening mode: state, radio and the seven commands."""

    def __init__(
        self,
        dct: Dct,
        key: DeviceKey,
        radio: RadioEnvironment | None = None,
        era: FirmwareEra = FirmwareEra.CURRENT,
        *,
        heap: Heap | None = None,
        timing: TimingProfile = FAST,
        faults: FaultPlan | None = None,
        cloud_available: bool = True,
        app: UserApp | None = None,
        cloud_link: bool = False,
    ) -> None:
        self.dct = dct
        self.key = key
        self.radio = radio if radio is not None else RadioEnvironment()
        self.profile: EraProfile = ERAS[era]
        self.heap = heap if heap is not None else Heap()
        self.timing = timing
        self.faults = faults if faults is not None else FaultPlan()
        #: whether the cloud answers; with ``cloud_link`` a real connection is made
        self.cloud_available = cloud_available
        #: the host runs a real device-to-cloud connection (ConnectCloud effects)
        self.cloud_link = cloud_link
        #: the user application's cloud functions and variables
        self.app = app if app is not None else default_app()
        #: ``wifi_creds_changed``: set when configure-ap saved a network in this session
        self.credentials_changed = False
        #: last antenna selected with ``ant-internal``/``ant-external`` (TCP only)
        self.antenna = "auto"
        self.connect_requested = False
        self.lifecycle = Lifecycle(self)
        self._join_delay_s = 0.0
        #: Wi-Fi scans run so far (scan-ap, and configure-ap's security sniffing)
        self.scans = 0
        self._version = Reply(ReplyKind.JSON, (b'{"v":2}',))
        self._public_key: Reply | None = None
        self._device_id: dict[bool, Reply] = {}
        #: (body, tokenize result) of the request being executed (one jsmn run each)
        self._tokenised: tuple[bytes, tuple[list[Token], int]] | None = None
        self._scan: tuple[tuple[object, ...], Reply] | None = None

    # -- lifecycle -----------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        return self.lifecycle.state

    @property
    def led(self) -> Led:
        return self.lifecycle.led

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Apply a lifecycle event (power, button, timers ...); returns the effects."""
        effects = self.lifecycle.handle(event, now)
        if self._dct_dirty:
            self._dct_dirty = False
            effects.append(DctChanged())
        return effects

    _dct_dirty = False

    def clear_credentials(self) -> None:
        """SETUP held 10 s in listening mode: the stored networks are erased."""
        self.dct.credentials.clear()
        self._dct_dirty = True

    def factory_reset(self) -> None:
        """Back to the factory DCT: no networks, no claim code, not claimed.

        The identity and the RSA key stay, as on a Photon: they are programmed at the
        factory and survive a reset. Only while powered off (the host resets, then
        powers on), so no state holds on to what is erased.
        """
        if self.state is not DeviceState.OFF:
            raise FirmwareError(f"a factory reset needs the device off, not {self.state.value}")
        self.dct.credentials.clear()
        self.dct.claim_code_field = bytes(len(self.dct.claim_code_field))
        self.dct.claimed = False
        self.credentials_changed = False
        self.antenna = "auto"
        self.connect_requested = False
        self.lifecycle = Lifecycle(self)
        self._dct_dirty = True

    def join_attempt(self) -> tuple[JoinFinished, int]:
        """The outcome of the next join: a scripted ``join`` fault, else the radio."""
        fault = self.faults.first(FaultKind.JOIN)
        if fault is None:
            self._join_delay_s = 0.0
            return join_result(self.dct.credentials.list(), self.radio)
        self._join_delay_s = self.faults.delay_s(fault)
        creds = self.dct.credentials.list()
        ssid = creds[0].ssid if creds else b""
        return JoinFinished(JoinOutcome(fault.outcome), ssid), 1

    def association_lost(self) -> str | None:
        """Why the joined network no longer holds the device after a radio change, or None."""
        lc = self.lifecycle
        return association_lost(
            lc.associated, lc.last_join, self.dct.credentials.list(), self.radio
        )

    def join_delay_s(self) -> float:
        return self._join_delay_s

    def cloud_reachable(self) -> bool:
        if self.faults.first(FaultKind.CLOUD_UNREACHABLE) is not None:
            return False
        return self.cloud_available

    # -- the cloud side of the firmware (system_cloud_internal.cpp) -----------------
    def claim_code_to_publish(self) -> bytes | None:
        """After a full handshake: the stored code if its first byte is not 0 or 0xFF."""
        field = self.dct.claim_code_field
        if field[:1] in (b"\x00", b"\xff"):
            return None
        return self.dct.claim_code

    def receive_cloud_event(self, name: str, data: str = "") -> list[Effect]:
        """An event from the cloud (the system subscribes to ``spark``/``particle``, the
        application to its own prefixes).

        Any name starting with ``spark/device/claim/`` clears the claim code and sets
        claimed (``HAL_Set_Claim_Code(NULL)``, softap-protocol.md §6). An event matching
        an application subscription reaches its handler (:class:`EventReceived`).
        """
        effects: list[Effect] = []
        if name.startswith("spark/device/claim/"):
            self.dct.mark_claimed()
            effects.append(DctChanged())
        if self.app.subscribed(name):
            effects.append(EventReceived(name, data))
        return effects

    @property
    def saves_lost(self) -> bool:
        """Listening mode was entered below the memory gate: DCT writes get lost."""
        health = self.lifecycle.health
        return self.state is DeviceState.LISTENING and health is not None and not health.gate_passed

    @property
    def era(self) -> FirmwareEra:
        return self.profile.era

    # -- dispatch ------------------------------------------------------------------
    @staticmethod
    def reads_body(name: str) -> bool:
        """Whether the handler reads the request body (only configure-ap and set)."""
        return name in BODY_COMMANDS

    def can_allocate_body(self, length: int) -> bool:
        """``malloc(length + 1)`` for the body copy; fails for garbage or huge lengths."""
        return length >= 0 and length + 1 <= self.heap.free_bytes

    def execute(self, name: str, body: bytes | None = b"") -> Reply:
        """Run one command. ``body`` is ``None`` when reading or allocating it failed."""
        if name == "device-id":  # the hot path: no allocation, a cached reply
            return self._device_id.get(self.dct.claimed) or self._device_id_reply()
        try:
            return self._execute(name, body)
        finally:
            self.heap.end_request()

    def _parse(
        self, body: bytes, keys: Sequence[bytes], types: Sequence[TokenType]
    ) -> ParsedRequest | None:
        """``parse_json_request`` over the tokens :meth:`_allocate_tokens` made of ``body``."""
        kept, self._tokenised = self._tokenised, None
        tokenised = kept[1] if kept is not None and kept[0] is body else None
        return parse_json_request(body, keys, types, tokenised)

    def _execute(self, name: str, body: bytes | None) -> Reply:
        if name == "version":
            return self._version
        if name == "device-id":
            return self._device_id_reply()
        if name == "scan-ap":
            return self._scan_ap()
        if name == "public-key":
            return self._public_key_reply()
        if name == "connect-ap":
            self.connect_requested = True
            if self.faults.first(FaultKind.AP_STAYS_UP, name) is not None:
                return result_reply(0)
            return result_reply(0, SoftApShutdown())
        if name in BODY_COMMANDS:
            # Reader::fetch_as_string copies the body into malloc(len + 1)
            if body is None or not self.heap.try_transient(len(body) + 1):
                return NO_JSON
            if not self._allocate_tokens(body):
                return NO_JSON
            before = (
                self.dct.credentials.list(),
                self.dct.claim_code_field,
                self.credentials_changed,
            )
            reply = self._configure_ap(body) if name == "configure-ap" else self._set(body)
            if any(isinstance(e, DctChanged) for e in reply.effects) and (
                self.saves_lost or self.faults.first(FaultKind.SAVE_LOST, name) is not None
            ):
                # the reply says saved, the DCT never sees it (spec §7, seed text)
                self.dct.credentials = CredentialStore(before[0])
                self.dct.claim_code_field = before[1]
                self.credentials_changed = before[2]
                return result_reply(0)
            return reply
        if name in ANTENNA_COMMANDS:
            self.antenna = ANTENNA_COMMANDS[name]
        return UNKNOWN

    def _allocate_tokens(self, body: bytes) -> bool:
        """``json_tokenise``: 64 tokens, grown by realloc while jsmn reports NOMEM.

        The tokens are kept for the command's ``parse_json_request`` (:meth:`_parse`).
        """
        js = body.split(b"\x00", 1)[0]
        tokens, ret = tokenize(js)
        self._tokenised = (body, (tokens, ret))
        needed = len(tokens) if ret != JsmnError.NOMEM else len(tokens) + 1
        final = token_array_sizes(needed)[-1]
        return self.heap.try_transient(final * JSON_TOKEN_BYTES)

    # -- commands ------------------------------------------------------------------
    def _device_id_reply(self) -> Reply:
        claimed = self.dct.claimed
        cached = self._device_id.get(claimed)
        if cached is None:
            cached = device_id_reply(self.dct.identity.device_id_hex, claimed)
            self._device_id[claimed] = cached
        return cached

    def _public_key_reply(self) -> Reply:
        fault = self.faults.first(FaultKind.KEY_VARIANT, "public-key")
        if fault is not None:
            # key shapes apps must survive (pain-points.md #6)
            return public_key_reply(public_key_variant(self.key.public_key_area, fault.variant))
        if self._public_key is None:
            self._public_key = public_key_reply(self.key.public_key_area)
        return self._public_key

    def _scan_ap(self) -> Reply:
        self.scans += 1
        if not self.heap.try_transient(SCAN_QUEUE_BYTES):
            return Reply(ReplyKind.JSON, (b'{"scans":[', b"]}"))  # the scan cannot start
        aps = tuple(self.radio.scan())
        partial = self.faults.first(FaultKind.SCAN_PARTIAL, "scan-ap")
        if partial is not None:
            aps = tuple(ap for ap in aps if ap.advertised_ssid)[: partial.count]
        if self._scan is not None and self._scan[0] == aps:
            return self._scan[1]
        reply = scan_reply(aps)
        self._scan = (aps, reply)
        return reply

    def _set(self, body: bytes) -> Reply:
        parsed = self._parse(body, SET_KEYS, SET_TYPES)
        if parsed is None:
            return NO_JSON
        k = (parsed.last(0) or b"")[:2]
        v = (parsed.last(1) or b"")[:63]
        if not k or not v or k != b"cc":
            return result_reply(-1)
        self.dct.set_claim_code(v)
        return result_reply(0, DctChanged())

    def _decrypt(self, hex_text: bytes, max_output: int) -> tuple[int, bytes]:
        """``decrypt()``: hex into the 256-byte buffer, then RSA. (result, plaintext)."""
        buf = hex_decode(hex_text, CIPHERTEXT_BUFFER_BYTES).ljust(CIPHERTEXT_BUFFER_BYTES, b"\x00")
        if not self.heap.try_transient(RSA_WORK_BYTES):
            if self.profile.crypto_errors is CryptoErrors.MBEDTLS:
                return MBEDTLS_ERR_RSA_PRIVATE_FAILED + MBEDTLS_ERR_MPI_ALLOC_FAILED, b""
            return TROPICSSL_ERR_RSA_PRIVATE_FAILED, b""
        res = self.key.decrypt_pkcs1v15(buf, max_output, self.profile.crypto_errors)
        if not res.ok:
            return res.error, b""
        return len(res.plaintext), res.plaintext

    def _configure_ap(self, body: bytes) -> Reply:
        if not self.profile.enterprise_keys:
            return self._configure_ap_legacy(body)
        parsed = self._parse(body, CONFIGURE_KEYS, CONFIGURE_TYPES)
        if parsed is None:
            return NO_JSON
        ssid = b""
        password = b""
        family = sec.SecurityFamily.UNSEC
        channel = 0
        eap_type = 0
        outer = inner = cert = ca = b""
        private_key_hex = b""
        ekey: bytes | None = None
        decrypt_result = 0
        heap = self.heap
        for key, value in parsed.values:
            if key == 1 and value:
                # WiFiAllocatedCredentials::setSsid: new (std::nothrow); silently missing
                if heap.try_transient(len(value)):
                    ssid = value
            elif key == 2:
                text = value
                if len(value) // 2:
                    decrypt_result, plain = self._decrypt(value, len(value))
                    text = plain.split(b"\x00", 1)[0]
                if text and heap.try_transient(len(text)):
                    password = text
            elif key == 3:
                channel = c_atoi(value)
            elif key == 4:
                family = sec.family_of(c_atoi(value))
            elif key == 5:
                eap_type = c_atoi(value)
            elif key == 6:
                outer = value
            elif key == 7:
                inner = value
            elif key == 8:
                cert = json_unescape(value)
            elif key == 9:
                if len(value) // 2:
                    decrypt_result, plain = self._decrypt(value, len(value))
                    ekey = plain.ljust(len(value) // 2 + 1, b"\x00")
            elif key == 10:
                private_key_hex = value
                password = b"1"
            elif key == 11:
                ca = json_unescape(value)
        private_key = b""
        if private_key_hex and ekey is not None:
            private_key = decrypt_private_key(private_key_hex, ekey)
            decrypt_result = 1
        if decrypt_result < 0:
            return result_reply(decrypt_result)
        enterprise = None
        if eap_type:
            enterprise = EnterpriseConfig(
                eap_type,
                outer[:MAX_IDENTITY_BYTES],
                inner[:MAX_IDENTITY_BYTES],
                cert,
                ca,
                Secret(private_key),
            )
        r = self._set_credentials(ssid, password, family, channel, enterprise)
        if r != 0:
            return result_reply(r)
        return result_reply(0, DctChanged())

    def _set_credentials(
        self,
        ssid: bytes,
        password: bytes,
        family: sec.SecurityFamily,
        channel: int,
        enterprise: EnterpriseConfig | None,
    ) -> int:
        """``wlan_set_credentials``: validate (:func:`~firmware_model.wlan.check_credentials`),
        then save."""
        r, wiced, sniffs = check_credentials(ssid, password, family, enterprise, self.radio.sniff)
        self.scans += sniffs
        if r != 0:
            return r
        self.dct.credentials.add(WifiCredential(ssid, Secret(password), wiced, channel, enterprise))
        self.credentials_changed = True
        return 0

    def _configure_ap_legacy(self, body: bytes) -> Reply:
        """0.4.x - 0.6.x: five keys, no validation, ``sec`` kept verbatim."""
        parsed = self._parse(body, CONFIGURE_KEYS[:5], CONFIGURE_TYPES[:5])
        if parsed is None:
            return NO_JSON
        ssid = b""
        password = b""
        security = 0
        channel = 0
        decrypt_result = 0
        for key, value in parsed.values:
            if key == 1:
                ssid = value[:32]
            elif key == 2:
                decrypt_result, plain = self._decrypt(value, 65)
                password = plain.split(b"\x00", 1)[0][:64]
            elif key == 3:
                channel = c_atoi(value)
            elif key == 4:
                security = c_atoi(value)
        if decrypt_result < 0:
            return result_reply(decrypt_result)
        self.dct.credentials.add(WifiCredential(ssid, Secret(password), security, channel))
        self.credentials_changed = True
        return result_reply(0, DctChanged())


__all__ = ["CryptoErrors", "DctChanged", "Device", "DeviceEffect", "SoftApShutdown"]
