"""Secrets sealed in the store: webhook signing secrets, notification channel configs, rollout proposals.

Columns typed :class:`SealedText` / :class:`SealedJSON` are AES-256-GCM encrypted with the payload codec's keys
(``WINDFLOW_CODEC_KEYS``, or the key an embedded instance generated in its data dir) before they are written, and
decrypted when read: a copy of the database alone does not give them away. A sealed value names its key id
(``wfenc:v1:<key id>:<base64 nonce+ciphertext>``), so key rotation works as for Temporal payloads: keep retired
keys configured while sealed values use them (rewriting a value seals it with the current key).

The keys are the process's: :func:`configure` is called once where the API and the worker are built. Without keys
(``WINDFLOW_CODEC_DISABLED=true``) values are written in clear; values written in clear earlier are read as they
are, and sealed on their next write.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import JSON, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

PREFIX = "wfenc:v1:"
_NONCE = 12
_SEALED_KEY = "sealed"  # a sealed JSON document is stored as {"sealed": "wfenc:v1:..."}


class UnsealError(ValueError):
    """A sealed value could not be opened: no keys configured, an unknown key id, or tampered with."""


class Sealer:
    def __init__(self, keys: Mapping[str, bytes], key_id: str) -> None:
        if key_id not in keys:
            raise ValueError(f"sealing key id {key_id!r} is not among the keys")
        self.key_id = key_id
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}

    def seal(self, text: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self.key_id].encrypt(nonce, text.encode(), self.key_id.encode())
        return f"{PREFIX}{self.key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, value: str) -> str:
        key_id, _, blob = value[len(PREFIX) :].partition(":")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnsealError(f"value sealed with unknown key id {key_id!r}: keep retired keys in WINDFLOW_CODEC_KEYS")
        raw = base64.b64decode(blob)
        try:
            return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], key_id.encode()).decode()
        except InvalidTag:
            raise UnsealError(f"value does not open with key {key_id!r}: tampered with or another key") from None


_current: Sealer | None = None


def configure(keys: Mapping[str, str], key_id: str | None) -> None:
    """Use these base64 keys (the codec's) for sealing from now on; empty: write in clear."""
    global _current
    if not keys:
        _current = None
        return
    from windflow.codec import decode_key

    kid = key_id or next(iter(keys))
    _current = Sealer({k: decode_key(v) for k, v in keys.items()}, kid)


def configure_from(settings: Any) -> None:
    configure(*settings.codec_key_map())


def seal(text: str) -> str:
    return _current.seal(text) if _current is not None else text


def unseal(value: str) -> str:
    if not value.startswith(PREFIX):
        return value  # written in clear (before sealing, or with the codec disabled)
    if _current is None:
        raise UnsealError("a sealed value was read but no codec keys are configured (WINDFLOW_CODEC_KEYS)")
    return _current.open(value)


class SealedText(TypeDecorator[str]):
    """Text sealed at rest (see the module docstring)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:  # noqa: ARG002
        return None if value is None else seal(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:  # noqa: ARG002
        return None if value is None else unseal(value)


class SealedJSON(TypeDecorator[Any]):
    """A JSON document sealed at rest as ``{"sealed": "wfenc:v1:..."}`` (a plain document when no keys)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else JSON())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:  # noqa: ARG002
        if value is None or _current is None:
            return value
        return {_SEALED_KEY: _current.seal(json.dumps(value, separators=(",", ":")))}

    def process_result_value(self, value: Any, dialect: Any) -> Any:  # noqa: ARG002
        if (
            isinstance(value, dict)
            and set(value) == {_SEALED_KEY}
            and isinstance(value[_SEALED_KEY], str)
            and value[_SEALED_KEY].startswith(PREFIX)
        ):
            return json.loads(unseal(value[_SEALED_KEY]))
        return value
