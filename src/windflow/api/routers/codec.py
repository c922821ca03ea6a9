"""Remote payload codec: ``POST /api/v1/codec/decode`` and ``/encode`` (Temporal's remote-codec JSON).

Decoding a payload reads every secret a config or a workflow input holds, and encoding signs with the production
key, so each has its own permission, ``codec:decode`` and ``codec:encode``, held by ``admin`` only by default
(``configs:read`` is not enough: redacted reads must stay redacted).

The Temporal Web UI calls a codec endpoint from the browser and, without its own single sign-on, sends no
windflow token. For it there is ``POST /api/v1/codec/ui/<WINDFLOW_CODEC_AUTH_TOKEN>/decode``: the token in the
path is the credential (compared in constant time; unset, the path does not exist), decode only. Set the UI's
``TEMPORAL_CODEC_ENDPOINT`` to ``<api>/api/v1/codec/ui/<token>``. CORS applies to the codec paths only
(:class:`CodecCORSMiddleware`), for the origins in ``WINDFLOW_CODEC_CORS_ORIGINS`` (the UI's).
Bodies are ``{"payloads": [{"metadata": {k: base64}, "data": base64}]}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload

from windflow.api.deps import SettingsDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.codec import PayloadDecryptionError
from windflow.settings import Settings
from windflow.temporal.client import payload_codec

router = APIRouter(prefix="/codec", tags=["codec"], responses=ERROR_RESPONSES)

CanDecode = Annotated[Principal, Depends(require(Permission.CODEC_DECODE))]
CanEncode = Annotated[Principal, Depends(require(Permission.CODEC_ENCODE))]


class CodecPayload(BaseModel):
    metadata: dict[str, str] = Field(default_factory=dict, description="metadata values, base64")
    data: str = Field("", description="payload bytes, base64")


class CodecPayloads(BaseModel):
    payloads: list[CodecPayload] = Field(default_factory=list)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "payload fields must be base64", code="invalid_payload") from None


def _to_proto(body: CodecPayloads) -> list[Payload]:
    return [Payload(metadata={k: _b64(v) for k, v in p.metadata.items()}, data=_b64(p.data)) for p in body.payloads]


def _to_json(payloads: list[Payload]) -> CodecPayloads:
    return CodecPayloads(
        payloads=[
            CodecPayload(
                metadata={k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                data=base64.b64encode(p.data).decode(),
            )
            for p in payloads
        ]
    )


async def _decode(body: CodecPayloads, settings: Settings) -> CodecPayloads:
    codec = payload_codec(settings)
    payloads = _to_proto(body)
    if codec is None:
        return _to_json(payloads)
    try:
        return _to_json(await codec.decode(payloads))
    except PayloadDecryptionError as exc:
        raise ApiError(422, str(exc), code="undecryptable_payload") from None


@router.post("/decode", summary="Decrypt payloads (Temporal remote codec; codec:decode)", response_model=CodecPayloads)
async def decode(body: CodecPayloads, settings: SettingsDep, _: CanDecode) -> CodecPayloads:
    return await _decode(body, settings)


@router.post(
    "/ui/{token}/decode",
    response_model=CodecPayloads,
    summary="Decrypt payloads for the Temporal Web UI (the path's token is WINDFLOW_CODEC_AUTH_TOKEN)",
)
async def ui_decode(token: str, body: CodecPayloads, settings: SettingsDep) -> CodecPayloads:
    expected = settings.codec_auth_token
    if expected is None or not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise ApiError(404, "not found", code="not_found")  # the same answer whether it is unset or wrong
    return await _decode(body, settings)


@router.post("/encode", summary="Encrypt payloads (Temporal remote codec; codec:encode)", response_model=CodecPayloads)
async def encode(body: CodecPayloads, settings: SettingsDep, _: CanEncode) -> CodecPayloads:
    codec = payload_codec(settings)
    payloads = _to_proto(body)
    return _to_json(await codec.encode(payloads) if codec is not None else payloads)


_UI_TOKEN = re.compile(r"(/codec/ui/)[^/?\s]+")


class HideCodecToken(logging.Filter):
    """Masks the UI codec token in access-log lines (uvicorn logs the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("/codec/ui/" in str(a) for a in record.args):
            record.args = tuple(_UI_TOKEN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        elif "/codec/ui/" in str(record.msg):
            record.msg = _UI_TOKEN.sub(r"\1***", str(record.msg))
        return True


def hide_codec_token_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideCodecToken) for f in access.filters):
        access.addFilter(HideCodecToken())


class CodecCORSMiddleware:
    """CORS (with credentials) for the codec paths only, so the Temporal UI's origin can call them."""

    def __init__(self, app: ASGIApp, *, prefix: str, origins: list[str]) -> None:
        self.app = app
        self.prefix = prefix
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
