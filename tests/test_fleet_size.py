"""Fleet size: an initialization of hundreds of services stays within the engine's limits."""

from __future__ import annotations

import json
import uuid

import pytest
from temporalio.api.enums.v1 import EventType

from tests.helpers import register, running_worker
from windflow.domain.contracts import ComponentStatus, InitInput, InitOptions, InitState, InitStatus
from windflow.domain.models import ServiceSpec
from windflow.persistence.repositories import RunSummaryRepository
from windflow.temporal import search_attributes as sa
from windflow.workflows.initialization import SystemInitialization

pytestmark = pytest.mark.asyncio(loop_scope="session")


def test_bounded_keywords_stay_within_the_budget():
    values = [f"service-number-{i:04d}" for i in range(1000)]
    kept = sa.bounded_keywords(values)
    assert 0 < len(kept) < len(values) and kept == values[: len(kept)]
    assert len(sa.json.dumps(kept).encode()) <= sa.LIST_VALUE_BUDGET
    assert sa.bounded_keywords(["a", "b"]) == ["a", "b"]
    assert sa.bounded_keywords(["x" * 2000]) == []


async def test_an_initialization_whose_ids_exceed_a_search_attribute_starts_them_all(
    temporal_env, wsettings, sqlite_db, task_queue
):
    """80 services with long ids: together far more than the engine takes in one search attribute value (2 KiB,
    as 300 short ones are); the run still starts every one, and its search attributes hold a bounded list and the
    exact count."""
    names = [f"a-service-with-a-rather-long-name-{i:04d}" for i in range(80)]
    await register(
        sqlite_db,
        *(
            ServiceSpec.model_validate(
                {"id": n, "driver": "noop", "config": {}, "monitored": False, "depends_on": [names[0]] if i else []}
            )
            for i, n in enumerate(names)
        ),
    )
    client = temporal_env.client
    async with running_worker(client, wsettings, sqlite_db):
        run_id = uuid.uuid4().hex[:12]
        handle = await client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=run_id, options=InitOptions(), actor="t"),
            id=f"init/{run_id}",
            task_queue=task_queue,
        )
        result: InitState = await handle.result()
    assert result.status == InitStatus.SUCCEEDED
    assert len(result.components) == 80
    assert all(c.status == ComponentStatus.HEALTHY for c in result.components.values())
    # the records in between carry only what changed; the stored run is whole
    partial = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "record_initialization_changes":
                partial.append(len(json.loads(attrs.input.payloads[0].data)["state"]["components"]))
    assert partial and sum(partial) < 80 * len(partial), partial  # not every record carried everything
    async with sqlite_db.read() as session:
        row = await RunSummaryRepository().get(session=session, run_id=run_id)
    assert len(row.summary["components"]) == 80 and len(row.summary["plan"]) == 2
    assert {c["status"] for c in row.summary["components"].values()} == {"HEALTHY"}
    attrs = (await handle.describe()).typed_search_attributes
    listed = attrs.get(sa.SERVICES)
    assert listed and listed == names[: len(listed)] and len(listed) < 80
    assert attrs.get(sa.SERVICE_COUNT) == 80
