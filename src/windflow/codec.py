"""Payload encryption: an AES-256-GCM ``PayloadCodec`` for every payload Temporal stores in its history.

Configs may hold secrets, and Temporal keeps every workflow input, result, signal and activity argument in
its history. With ``WINDFLOW_CODEC_KEYS`` set, client and worker encrypt each payload before it leaves the
process; the Temporal server (and its database) only ever see ciphertext.

Format of an encrypted payload
    metadata ``encoding: binary/encrypted`` and ``encryption-key-id: <id>``; data ``nonce (12 bytes) ||
    AES-GCM(ciphertext || tag)`` of the original payload's protobuf serialization (metadata included), with
    the key id as associated data (a payload cannot be relabelled to another key).

Key rotation
    Keys are a map ``id -> base64 32-byte key``; ``WINDFLOW_CODEC_KEY_ID`` names the one that encrypts.
    Decoding picks the key by the id in the payload, so to rotate: add the new key, switch the key id to it,
    and keep the old key in the map for as long as histories encrypted with it are kept.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_HEADER = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32


class PayloadDecryptionError(ValueError):
    """A payload could not be decrypted: unknown key id, malformed, or tampered with."""


def decode_key(value: str) -> bytes:
    """A base64 (standard or URL-safe) key; ``ValueError`` unless it is exactly 32 bytes."""
    text = value.strip()
    try:
        raw = base64.b64decode(
            text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True
        )
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"must decode to {KEY_BYTES} bytes (AES-256), got {len(raw)}")
    return raw


def new_key() -> str:
    """A fresh random key, base64-encoded (for ``WINDFLOW_CODEC_KEYS``)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


class EncryptionCodec(PayloadCodec):
    """AES-GCM with rotating keys; payloads not encrypted by it pass through ``decode`` unchanged."""

    def __init__(self, keys: Mapping[str, bytes], key_id: str) -> None:
        if key_id not in keys:
            raise ValueError(f"encryption key id {key_id!r} is not among the configured keys")
        for kid, key in keys.items():
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {kid!r} must be {KEY_BYTES} bytes")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self.key_id = key_id

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        aad = self.key_id.encode()
        sealed = self._ciphers[self.key_id].encrypt(nonce, payload.SerializeToString(), aad)
        return Payload(metadata={"encoding": ENCODING, KEY_ID_HEADER: aad}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_HEADER)
        if raw_id is None:
            raise PayloadDecryptionError(f"encrypted payload without an {KEY_ID_HEADER!r} metadata entry")
        key_id = raw_id.decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with unknown key id {key_id!r} (configured: {', '.join(self.key_ids)}); "
                "keep retired keys in WINDFLOW_CODEC_KEYS while histories use them"
            )
        data = payload.data
        if len(data) <= NONCE_BYTES:
            raise PayloadDecryptionError("encrypted payload is too short")
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], raw_id)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload does not decrypt with key {key_id!r}: tampered with or a different key"
            ) from None
        out = Payload()
        out.ParseFromString(plain)
        return out


def codec_from_keys(keys: Mapping[str, str], key_id: str | None) -> EncryptionCodec | None:
    """The codec for base64 keys (``None`` when no keys are configured)."""
    if not keys:
        return None
    if key_id is None:
        if len(keys) != 1:
            raise ValueError("several codec keys are configured: name the encrypting one with WINDFLOW_CODEC_KEY_ID")
        key_id = next(iter(keys))
    return EncryptionCodec({kid: decode_key(value) for kid, value in keys.items()}, key_id)
