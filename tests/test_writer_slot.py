"""No store transaction is held across a call to Temporal.

On SQLite one writer at a time holds the write slot (``BEGIN IMMEDIATE``, and this process's queue in front
of it). A route that opened its write transaction and then waited for Temporal (``POST /initializations``
did) held that slot for as long as Temporal took: every other write of the API and of the worker waited
behind a slow or unreachable Temporal. Here Temporal stalls on the start until the test lets it go, then
fails as an unreachable server does; meanwhile another writer must get through at once, and afterwards
nothing of the run that never started may stay in the store.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from tests.helpers import register
from windflow.domain.models import ServiceSpec
from windflow.persistence.repositories import RunSummaryRepository
from windflow.temporal.client import DATA_CONVERTER, LazyClient

pytestmark = pytest.mark.asyncio(loop_scope="session")


class StalledTemporal(Interceptor):
    """Every workflow start waits until ``release`` is set, then fails as an unreachable server does."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Stall(next, self)


class _Stall(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, owner: StalledTemporal) -> None:
        super().__init__(next)
        self.owner = owner

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle:
        self.owner.entered.set()
        await self.owner.release.wait()
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/initializations", {}),
        ("/api/v1/shutdowns", {"reason": "maintenance"}),
    ],
)
async def test_a_slow_temporal_blocks_no_other_writer(api, app_resources, db, settings, path, body):
    await register(db, ServiceSpec(id="db", driver="noop"))
    stall = StalledTemporal()
    # never connects to anything: the interceptor answers every start
    client = await Client.connect("127.0.0.1:1", lazy=True, data_converter=DATA_CONVERTER, interceptors=[stall])
    app_resources.temporal = LazyClient(settings, client=client)

    start = asyncio.create_task(api.post(path, json=body))
    await asyncio.wait_for(stall.entered.wait(), 10)
    other = str(uuid.uuid4())

    async def another_writer() -> None:
        async with db.write() as session:
            await RunSummaryRepository().upsert(
                session=session,
                run_id=other,
                kind="recovery",
                workflow_id=f"elsewhere/{other}",
                status="running",
                started_at=datetime.now(UTC),
            )

    try:  # while the route waits for Temporal, the store takes other writes
        await asyncio.wait_for(another_writer(), 3)
    finally:
        stall.release.set()
    answer = await asyncio.wait_for(start, 10)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "temporal_unavailable"

    # nothing half-saved: the run whose workflow never started is not in the store
    kind = path.rsplit("/", 1)[1].removesuffix("s")
    async with db.read() as session:
        page = await RunSummaryRepository().get_all(session=session, kind=kind)
    assert page.items == []
    listed = (await api.get(path)).json()
    assert listed["items"] == []
