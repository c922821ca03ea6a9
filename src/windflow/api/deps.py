"""``Annotated`` dependency aliases used by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from windflow.api.resources import Resources
from windflow.domain.errors import ServiceUnavailable
from windflow.events.base import EventBus
from windflow.settings import Settings


# every dependency is ``async def``: FastAPI runs a plain ``def`` one in its thread pool, a hand-off to a worker
# thread and back on every request (tests/test_permissions.py checks)
async def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings_dep(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def read_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    async with resources.db.read() as session:
        yield session


async def write_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """The route's unit of work: committed when the route returns, rolled back when it raises."""
    async with resources.db.write() as session:
        yield session
    if resources.relay is not None:
        resources.relay.notify()


# scope="function": the transaction ends when the route function returns, before the response is sent, so a
# commit that fails is the client's error response (not a 200 for a write that never landed), and a read the
# client sends right after its write sees that write
ReadSessionDep = Annotated[AsyncSession, Depends(read_session, scope="function")]
WriteSessionDep = Annotated[AsyncSession, Depends(write_session, scope="function")]


async def get_temporal(resources: ResourcesDep) -> Client:
    try:
        return await resources.temporal.get()
    except Exception as exc:
        raise ServiceUnavailable(f"Temporal at {resources.settings.temporal_address} is unreachable: {exc}") from None


TemporalDep = Annotated[Client, Depends(get_temporal)]


async def get_bus(resources: ResourcesDep) -> EventBus:
    return resources.bus


BusDep = Annotated[EventBus, Depends(get_bus)]


async def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


RequestIdDep = Annotated[str, Depends(request_id)]
