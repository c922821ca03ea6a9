"""Whoever reaches Temporal's port cannot make a worker run a config: workflow inputs carry references.

A ``ConfigRollout`` started on Temporal directly, with a config of its own in the input, runs nothing, saves no
version, and ends with an error naming why (``config not stored``). The rollouts the API starts carry only the
rollout id; the author of what is saved is the API's caller stored with the rollout, whatever the input says.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.helpers import create, running_worker, terminate_quietly
from windflow.domain.models import ServiceSpec
from windflow.domain.rollout import RolloutInput, RolloutState, RolloutStatus
from windflow.persistence.models import ConfigVersionRow
from windflow.persistence.rollout_models import ConfigRolloutRow
from windflow.settings import Settings
from windflow.workflows.rollout import ConfigRollout

pytestmark = pytest.mark.asyncio(loop_scope="session")
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(temporal_settings: Settings) -> Settings:
    return temporal_settings


@pytest.fixture(autouse=True)
async def no_stray_workflows(temporal_env):
    yield
    await terminate_quietly(temporal_env.client, "rollout/svc")


def spec(command: list[str]) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "id": "svc",
            "driver": "command",
            "config": {"start": {"run": command}, "stop": {"run": ["true"]}, "status": {"run": ["true"]}},
        }
    )


async def stored_versions(db) -> list[ConfigVersionRow]:
    async with db.read() as session:
        stmt = select(ConfigVersionRow).where(ConfigVersionRow.service_id == "svc").order_by(ConfigVersionRow.version)
        return list((await session.execute(stmt)).scalars())


@SQLITE_ONLY
async def test_forged_rollout_on_temporal_runs_nothing(temporal_env, settings, db, api, tmp_path):
    client = temporal_env.client
    marker = tmp_path / "pwned"
    await create(api, spec(["true"]))
    forged = spec(["sh", "-c", f"id > {marker}"]).content()
    async with running_worker(client, settings, db):
        for rollout_id in ("forged-1", ""):
            result: RolloutState = await client.execute_workflow(
                ConfigRollout.run,
                RolloutInput(rollout_id=rollout_id, service_id="svc", config=forged, actor="admin", verify_window=1),
                id="rollout/svc",
                task_queue=settings.task_queue,
            )
            assert result.status == RolloutStatus.FAILED, result
            assert "config not stored" in result.message, result.message
            assert result.new_version is None
    assert not marker.exists()
    assert [v.version for v in await stored_versions(db)] == [1]
    async with db.read() as session:
        rows = (await session.execute(select(ConfigRolloutRow))).scalars().all()
    assert rows == []  # nothing the API did not accept is recorded as a rollout


@SQLITE_ONLY
async def test_rollout_reuses_only_what_the_api_stored_and_its_author(temporal_env, settings, db, api, tmp_path):
    """A rollout through the API saves the stored proposal under the caller's name; starting it again on Temporal
    with the same id (and a forged config, or as someone else) runs nothing more."""
    client = temporal_env.client
    marker = tmp_path / "ran"
    await create(api, spec(["true"]))
    proposal = spec(["sh", "-c", f"echo x >> {marker}"]).content()
    async with running_worker(client, settings, db):
        r = await api.post(
            "/api/v1/services/svc/rollouts",
            json={"config": proposal, "verify_window": 0.5, "wait": True, "timeout": 60},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "SUCCEEDED", body
        rollout_id = body["rollout_id"]
        desc = await client.get_workflow_handle("rollout/svc").describe()
        history = await client.get_workflow_handle("rollout/svc", run_id=desc.run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        assert b"echo x" not in started.input.payloads[0].data  # the input holds the reference only
        runs = marker.read_text().count("x")
        for config in ({}, spec(["sh", "-c", f"echo y >> {marker}"]).content()):
            again: RolloutState = await client.execute_workflow(
                ConfigRollout.run,
                RolloutInput(
                    rollout_id=rollout_id, service_id="svc", config=config, actor="mallory", verify_window=0.5
                ),
                id="rollout/svc",
                task_queue=settings.task_queue,
            )
            assert again.status == RolloutStatus.FAILED and "config not stored" in again.message, again
    assert marker.read_text().count("x") == runs and "y" not in marker.read_text()
    found = await stored_versions(db)
    assert [(v.version, v.author) for v in found] == [(1, "tester"), (2, "tester")]
    async with db.read() as session:
        row = await session.get(ConfigRolloutRow, rollout_id)
    assert row.status == "SUCCEEDED" and row.actor == "tester"
