"""Payload encryption: the AES-GCM codec, key rotation, settings, the codec endpoint, and payloads at rest in a
real Temporal dev server's history."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from tests.helpers import register, running_worker, worker_settings
from windflow.codec import ENCODING, KEY_ID_HEADER, EncryptionCodec, PayloadDecryptionError, new_key
from windflow.domain.contracts import InitInput, InitOptions, InitState, InitStatus
from windflow.domain.models import ServiceSpec
from windflow.settings import Settings, SettingsError, load_settings
from windflow.temporal.client import DATA_CONVERTER, connect, data_converter
from windflow.workflows.initialization import SystemInitialization

ASYNC = pytest.mark.asyncio(loop_scope="session")

K1, K2 = new_key(), new_key()


def codec(keys: dict[str, str], key_id: str) -> EncryptionCodec:
    return EncryptionCodec({k: base64.b64decode(v) for k, v in keys.items()}, key_id)


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"secret": text}).encode())


@ASYNC
async def test_round_trip_encrypts_with_a_fresh_nonce_and_restores_the_payload():
    c = codec({"k1": K1}, "k1")
    original = [plain("hunter2"), plain("hunter2")]
    sealed = await c.encode(original)
    for p in sealed:
        assert p.metadata["encoding"] == ENCODING and p.metadata[KEY_ID_HEADER] == b"k1"
        assert b"hunter2" not in p.data and b"json/plain" not in p.data
    assert sealed[0].data != sealed[1].data  # random 12-byte nonce per payload
    assert await c.decode(sealed) == original
    assert await c.decode(original) == original  # unencrypted payloads pass through


@ASYNC
async def test_key_rotation_old_payloads_still_decode_new_ones_use_the_new_key():
    old = await codec({"k1": K1}, "k1").encode([plain("before")])
    rotated = codec({"k1": K1, "k2": K2}, "k2")
    new = await rotated.encode([plain("after")])
    assert new[0].metadata[KEY_ID_HEADER] == b"k2"
    assert await rotated.decode(old + new) == [plain("before"), plain("after")]
    with pytest.raises(PayloadDecryptionError, match="unknown key id 'k1'"):
        await codec({"k2": K2}, "k2").decode(old)  # k1 retired too early: a clear refusal


@ASYNC
async def test_tampered_or_relabelled_ciphertext_is_refused():
    c = codec({"k1": K1, "k2": K2}, "k1")
    [sealed] = await c.encode([plain("x")])
    flipped = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(PayloadDecryptionError, match="tampered"):
        await c.decode([flipped])
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID_HEADER: b"k2"}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError):
        await c.decode([relabelled])


def test_settings_validate_keys_and_key_id(tmp_path):
    base = {"data_dir": tmp_path, "_env_file": None}
    ok = load_settings(**base, codec_keys={"k1": K1, "k2": K2}, codec_key_id="k2")
    assert data_converter(ok).payload_codec.key_id == "k2"  # type: ignore[union-attr]
    single = load_settings(**base, codec_keys=json.loads(json.dumps({"only": K1})))
    assert data_converter(single).payload_codec.key_id == "only"  # type: ignore[union-attr]
    assert data_converter(load_settings(**base)) is DATA_CONVERTER
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(SettingsError, match="WINDFLOW_CODEC_KEYS.*32 bytes"):
        load_settings(**base, codec_keys={"k1": short})
    with pytest.raises(SettingsError, match="not valid base64"):
        load_settings(**base, codec_keys={"k1": "not base64!"})
    with pytest.raises(SettingsError, match="WINDFLOW_CODEC_KEY_ID 'nope'"):
        load_settings(**base, codec_keys={"k1": K1}, codec_key_id="nope")
    with pytest.raises(SettingsError, match="must name the encrypting key"):
        load_settings(**base, codec_keys={"k1": K1, "k2": K2})


def test_keys_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WINDFLOW_CODEC_KEYS", json.dumps({"a": K1, "b": K2}))
    monkeypatch.setenv("WINDFLOW_CODEC_KEY_ID", "b")
    monkeypatch.setenv("WINDFLOW_CODEC_CORS_ORIGINS", '["https://temporal.example.com"]')
    s = Settings(data_dir=tmp_path, _env_file=None)
    assert sorted(s.codec_keys) == ["a", "b"] and s.codec_key_id == "b"
    assert s.codec_cors_origins == ["https://temporal.example.com"]
    assert K1 not in repr(s)  # keys are secrets


# --------------------------------------------------------------------------- the endpoint


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"codec_keys": {"k1": SecretStr(K1), "k2": SecretStr(K2)}, "codec_key_id": "k2"})


def as_json(payloads: list[Payload]) -> dict:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def from_json(body: dict) -> list[Payload]:
    return [
        Payload(
            metadata={k: base64.b64decode(v) for k, v in p.get("metadata", {}).items()},
            data=base64.b64decode(p.get("data", "")),
        )
        for p in body["payloads"]
    ]


@ASYNC
async def test_codec_endpoint_encodes_and_decodes_for_permitted_callers(api, anon, settings):
    from tests.conftest import mint_token

    r = await api.post("/api/v1/codec/encode", json=as_json([plain("pw")]))
    assert r.status_code == 200, r.text
    sealed = from_json(r.json())
    assert sealed[0].metadata[KEY_ID_HEADER] == b"k2" and b"pw" not in sealed[0].data
    old = await codec({"k1": K1}, "k1").encode([plain("older")])
    r = await api.post("/api/v1/codec/decode", json=as_json(sealed + old), headers={"X-Namespace": "default"})
    assert r.status_code == 200, r.text
    assert from_json(r.json()) == [plain("pw"), plain("older")]

    assert (await anon.post("/api/v1/codec/decode", json=as_json(sealed))).status_code == 401
    no_perm = {"Authorization": f"Bearer {mint_token(settings, permissions=['services:read', 'configs:read'])}"}
    r = await anon.post("/api/v1/codec/decode", json=as_json(sealed), headers=no_perm)
    assert r.status_code == 403 and r.json()["error"]["details"] == {"required": "codec:decode"}

    foreign = await codec({"k9": new_key()}, "k9").encode([plain("x")])
    r = await api.post("/api/v1/codec/decode", json=as_json(foreign))
    assert r.status_code == 422 and "unknown key id 'k9'" in r.text


@ASYNC
async def test_codec_cors_is_limited_to_the_codec_paths_and_the_ui_origin(anon):
    ui = "http://127.0.0.1:8233"
    preflight = {
        "Origin": ui,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    r = await anon.options("/api/v1/codec/decode", headers=preflight)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ui
    assert r.headers["access-control-allow-credentials"] == "true"
    allowed = r.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "x-namespace"} <= {h.strip() for h in allowed.split(",")}

    r = await anon.options("/api/v1/codec/decode", headers={**preflight, "Origin": "https://evil.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = await anon.post("/api/v1/codec/decode", json={"payloads": []}, headers={"Origin": ui})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ui  # the UI can read the 401
    # elsewhere in the API: no CORS at all
    r = await anon.options("/api/v1/services", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = await anon.get("/healthz", headers={"Origin": ui})
    assert "access-control-allow-origin" not in r.headers


# --------------------------------------------------------------------------- at rest in Temporal


@ASYNC
async def test_history_payloads_are_encrypted_at_rest_and_the_endpoint_decodes_them(
    temporal_env, tmp_path, sqlite_db, task_queue, api
):
    marker = f"s3cr3t-{uuid.uuid4().hex[:10]}"
    wsettings = worker_settings(tmp_path, task_queue, temporal_env, sqlite_db).model_copy(
        update={"codec_keys": {"k1": SecretStr(K1), "k2": SecretStr(K2)}, "codec_key_id": "k2"}
    )
    await register(
        sqlite_db, ServiceSpec.model_validate({"id": "vault", "driver": "noop", "description": f"password {marker}"})
    )
    client = await connect(wsettings)  # the production factory: codec from settings
    assert client.data_converter.payload_codec is not None
    async with running_worker(client, wsettings, sqlite_db):
        handle = await client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=uuid.uuid4().hex[:12], options=InitOptions(), actor=f"tester {marker}"),
            id=f"init/codec-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        result: InitState = await handle.result()
    assert result.status == InitStatus.SUCCEEDED and result.actor == f"tester {marker}"

    # read the raw history with a client that has no codec: what the server stores
    bare = temporal_env.client
    assert isinstance(bare, Client) and bare.data_converter.payload_codec is None
    history = await bare.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=bare.namespace, execution=WorkflowExecution(workflow_id=handle.id, run_id=handle.result_run_id)
        )
    )
    payloads = collect_payloads(history.history)
    assert len(payloads) >= 4  # input, activity inputs and results, the workflow's result
    blob = history.history.SerializeToString()
    assert marker.encode() not in blob and b"vault" not in b"".join(p.data for p in payloads)
    readable = [(dict(p.metadata), p.data[:120]) for p in payloads if p.metadata.get("encoding") != ENCODING]
    assert not readable
    assert {p.metadata[KEY_ID_HEADER] for p in payloads} == {b"k2"}

    r = await api.post("/api/v1/codec/decode", json=as_json(payloads))
    assert r.status_code == 200, r.text
    decoded = from_json(r.json())
    assert len(decoded) == len(payloads) and all(p.metadata["encoding"] != ENCODING for p in decoded)
    text = b"\n".join(p.data for p in decoded)
    assert marker.encode() in text and b'"vault"' in text


def collect_payloads(message) -> list[Payload]:
    """Every codec-encoded ``Payload`` in a protobuf message (history events nest them in many fields).

    Left out, as readable by design: search attributes (the server indexes them), headers, and the SDK core's
    own patch markers (``workflow.patched`` ids, no user data)."""
    out: list[Payload] = []
    if isinstance(message, Payload):
        return [message]
    if getattr(message, "marker_name", None) == "core_patch":
        return []
    for field, value in message.ListFields():
        if field.message_type is None or field.name in ("search_attributes", "header"):
            continue
        if field.is_repeated:
            items = value.values() if field.message_type.GetOptions().map_entry else value
            for item in items:
                if hasattr(item, "ListFields"):
                    out.extend(collect_payloads(item))
        else:
            out.extend(collect_payloads(value))
    return out
