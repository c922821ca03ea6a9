"""Secrets at rest: Temporal's history is encrypted by default, the data dir and the database are private.

Without ``WINDFLOW_CODEC_KEYS`` an embedded instance generates a key in its data dir (``codec_key``, 0600) and
every client and worker of that data dir encrypts with it; production mode refuses to start without keys unless
``WINDFLOW_CODEC_DISABLED=true`` says so on purpose. (The rest of the suite runs with the opt-out: see conftest.)
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest

from tests.helpers import register, running_worker, worker_settings
from tests.test_codec import collect_payloads
from windflow.codec import ENCODING, KEY_ID_HEADER
from windflow.domain.contracts import InitInput, InitOptions, InitState, InitStatus
from windflow.domain.models import ServiceSpec
from windflow.persistence.db import Database, create_engine
from windflow.settings import Mode, Settings, SettingsError, load_settings
from windflow.temporal.client import connect, payload_codec
from windflow.workflows.initialization import SystemInitialization

ASYNC = pytest.mark.asyncio(loop_scope="session")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_default_generates_a_private_key_once(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", codec_disabled=False, _env_file=None)
    codec = payload_codec(settings)
    assert codec is not None and codec.key_id == "local"
    key_file = tmp_path / "data" / "codec_key"
    assert mode_of(key_file) == 0o600 and mode_of(tmp_path / "data") == 0o700
    again = payload_codec(Settings(data_dir=tmp_path / "data", codec_disabled=False, _env_file=None))
    assert again is not None and key_file.read_text().strip() == settings.codec_key_map()[0]["local"]
    # the opt-out: no key, no codec
    assert payload_codec(Settings(data_dir=tmp_path / "other", codec_disabled=True, _env_file=None)) is None
    assert not (tmp_path / "other" / "codec_key").exists()


def test_production_requires_keys_or_an_explicit_opt_out(tmp_path, monkeypatch):
    monkeypatch.delenv("WINDFLOW_CODEC_DISABLED", raising=False)
    monkeypatch.chdir(tmp_path)
    base = {
        "WINDFLOW_MODE": "production",
        "WINDFLOW_JWT_SECRET": "j" * 48,
        "WINDFLOW_DATABASE_URL": "postgresql://u@db/x",
    }
    for key, value in base.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match="WINDFLOW_CODEC_KEYS is required"):
        load_settings()
    monkeypatch.setenv("WINDFLOW_CODEC_DISABLED", "true")
    assert load_settings().mode == Mode.PRODUCTION


def test_a_loose_data_dir_and_database_are_tightened(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    db_file = data / "windflow.db"
    db_file.touch()
    db_file.chmod(0o644)
    Settings(data_dir=data, _env_file=None).ensure_data_dir()
    assert mode_of(data) == 0o700
    create_engine(f"sqlite+aiosqlite:///{db_file}")
    assert mode_of(db_file) == 0o600


@ASYNC
async def test_new_sqlite_store_files_are_private(tmp_path):
    path = tmp_path / "data" / "windflow.db"
    db = Database(create_engine(f"sqlite+aiosqlite:///{path}"))
    try:
        from windflow.persistence.models import Base

        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    finally:
        await db.dispose()
    assert mode_of(path) == 0o600
    for extra in (path.with_name("windflow.db-wal"), path.with_name("windflow.db-shm")):
        if extra.exists():
            assert mode_of(extra) & 0o077 == 0, extra


@ASYNC
async def test_history_is_encrypted_by_default(temporal_env, tmp_path, sqlite_db, task_queue):
    marker = f"s3cr3t-{uuid.uuid4().hex[:10]}"
    wsettings = worker_settings(tmp_path, task_queue, temporal_env, sqlite_db).model_copy(
        update={"codec_disabled": False, "codec_keys": {}}
    )
    await register(
        sqlite_db, ServiceSpec.model_validate({"id": "vault", "driver": "noop", "description": f"password {marker}"})
    )
    client = await connect(wsettings)
    assert client.data_converter.payload_codec is not None
    async with running_worker(client, wsettings, sqlite_db):
        handle = await client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=uuid.uuid4().hex[:12], options=InitOptions(), actor=f"tester {marker}"),
            id=f"init/default-codec-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        result: InitState = await handle.result()
    assert result.status == InitStatus.SUCCEEDED
    bare = temporal_env.client
    history = await bare.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=bare.namespace, execution=WorkflowExecution(workflow_id=handle.id, run_id=handle.result_run_id)
        )
    )
    payloads = collect_payloads(history.history)
    assert payloads and all(p.metadata.get("encoding") == ENCODING for p in payloads)
    assert {p.metadata[KEY_ID_HEADER] for p in payloads} == {b"local"}
    assert marker.encode() not in history.history.SerializeToString()


def test_a_shared_directory_is_not_locked(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    Settings(data_dir=shared, _env_file=None).ensure_data_dir()
    assert mode_of(shared) == 0o1777
    other = tmp_path / "other-files"
    other.mkdir()
    other.chmod(0o755)
    (other / "notes.txt").write_text("not windflow's")
    Settings(data_dir=other, _env_file=None).ensure_data_dir()
    assert mode_of(other) == 0o755
