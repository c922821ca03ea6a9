"""Remote payload codec for the Temporal Web UI: ``POST /api/v1/codec/decode`` and ``/encode``.

Point the UI's "Codec Server" setting (or ``TEMPORAL_CODEC_ENDPOINT``) at ``<api>/api/v1/codec`` and turn on
"pass access token": the UI then shows decrypted payloads to callers holding ``configs:read``. Bodies are
Temporal's remote-codec JSON (``{"payloads": [{"metadata": {k: base64}, "data": base64}]}``).

CORS applies to these paths only (:class:`CodecCORSMiddleware`), for the origins in
``WINDFLOW_CODEC_CORS_ORIGINS``; the rest of the API sends no CORS headers.
"""

from __future__ import annotations

import base64
import binascii
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
from windflow.temporal_client import payload_codec

router = APIRouter(prefix="/codec", tags=["codec"], responses=ERROR_RESPONSES)

CanRead = Annotated[Principal, Depends(require(Permission.CONFIGS_READ))]


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
    return CodecPayloads(payloads=[
        CodecPayload(metadata={k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                     data=base64.b64encode(p.data).decode())
        for p in payloads
    ])


@router.post("/decode", summary="Decrypt payloads (Temporal remote codec)", response_model=CodecPayloads)
async def decode(body: CodecPayloads, settings: SettingsDep, _: CanRead) -> CodecPayloads:
    codec = payload_codec(settings)
    payloads = _to_proto(body)
    if codec is None:
        return _to_json(payloads)
    try:
        return _to_json(await codec.decode(payloads))
    except PayloadDecryptionError as exc:
        raise ApiError(422, str(exc), code="undecryptable_payload") from None


@router.post("/encode", summary="Encrypt payloads (Temporal remote codec)", response_model=CodecPayloads)
async def encode(body: CodecPayloads, settings: SettingsDep, _: CanRead) -> CodecPayloads:
    codec = payload_codec(settings)
    payloads = _to_proto(body)
    return _to_json(await codec.encode(payloads) if codec is not None else payloads)


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
