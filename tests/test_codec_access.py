"""Who may decode and encode Temporal payloads: ``codec:decode`` / ``codec:encode`` (admin only by default), and
the Temporal Web UI through its own token (``WINDFLOW_CODEC_AUTH_TOKEN``), never a viewer."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from tests.auth_helpers import assert_envelope, bearer, create_user, login
from tests.test_codec import K1, as_json, codec, from_json, plain
from windflow.api.routers.codec import HideCodecToken
from windflow.auth.permissions import BUILTIN_ROLES, Permission

ASYNC = pytest.mark.asyncio(loop_scope="session")
UI_TOKEN = "ui-" + "t" * 40
UI = "http://127.0.0.1:8233"


@pytest.fixture
def settings(settings):
    return settings.model_copy(
        update={
            "codec_keys": {"k1": SecretStr(K1)},
            "codec_key_id": "k1",
            "codec_auth_token": SecretStr(UI_TOKEN),
            "login_attempts_per_address": 10_000,
            "login_attempts_per_user": 10_000,
        }
    )


async def sealed_secret() -> dict:
    return as_json(await codec({"k1": K1}, "k1").encode([plain("DB_PASSWORD=hunter2")]))


def test_only_admin_holds_the_codec_permissions():
    for perm in (Permission.CODEC_DECODE, Permission.CODEC_ENCODE):
        assert perm in BUILTIN_ROLES["admin"]
        assert perm not in BUILTIN_ROLES["operator"] and perm not in BUILTIN_ROLES["viewer"]


@ASYNC
async def test_viewer_and_operator_cannot_decode_nor_encode(api, anon):
    body = await sealed_secret()
    for role in ("viewer", "operator"):
        await create_user(api, f"u-{role}", [role])
        headers = bearer((await login(anon, f"u-{role}"))["access_token"])
        err = assert_envelope(await anon.post("/api/v1/codec/decode", json=body, headers=headers), 403, "forbidden")
        assert err["details"] == {"required": "codec:decode"}
        err = assert_envelope(
            await anon.post("/api/v1/codec/encode", json=as_json([plain("x")]), headers=headers), 403, "forbidden"
        )
        assert err["details"] == {"required": "codec:encode"}
    r = await api.post("/api/v1/codec/decode", json=body)  # admin
    assert r.status_code == 200 and from_json(r.json()) == [plain("DB_PASSWORD=hunter2")]


@ASYNC
async def test_temporal_ui_decodes_with_its_token_only(anon):
    body = await sealed_secret()
    # what the UI does: a preflight from its origin, then a POST without any windflow login
    preflight = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    r = await anon.options(f"/api/v1/codec/ui/{UI_TOKEN}/decode", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == UI
    r = await anon.post(
        f"/api/v1/codec/ui/{UI_TOKEN}/decode", json=body, headers={"Origin": UI, "X-Namespace": "windflow"}
    )
    assert r.status_code == 200, r.text
    assert from_json(r.json()) == [plain("DB_PASSWORD=hunter2")]
    assert r.headers["access-control-allow-origin"] == UI
    # another origin gets no CORS grant (the browser drops the answer)
    r = await anon.options(
        f"/api/v1/codec/ui/{UI_TOKEN}/decode", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in r.headers
    # a wrong token, or encode on the UI path: nothing
    assert_envelope(await anon.post("/api/v1/codec/ui/wrong-token/decode", json=body), 404)
    assert (await anon.post(f"/api/v1/codec/ui/{UI_TOKEN}/encode", json=body)).status_code in (404, 405)


@ASYNC
async def test_ui_path_does_not_exist_without_a_token(app_resources, anon):
    app_resources.settings = app_resources.settings.model_copy(update={"codec_auth_token": None})
    body = await sealed_secret()
    assert_envelope(await anon.post(f"/api/v1/codec/ui/{UI_TOKEN}/decode", json=body), 404)


def test_the_ui_token_is_masked_in_access_logs():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", f"/api/v1/codec/ui/{UI_TOKEN}/decode", "1.1", 200),
        None,
    )
    assert HideCodecToken().filter(record)
    assert UI_TOKEN not in record.getMessage() and "/codec/ui/***/decode" in record.getMessage()
