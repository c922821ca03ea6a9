"""Read a run live from its workflow, else from its stored record.

A running workflow knows its state better than the store, which it updates in batches; but Temporal may be
down, the run may have closed a moment ago, or no worker may be there to answer the query. Every such case
answers from the store, at once, and says so (``live=False``): a read never fails, nor waits long, because
the engine cannot answer it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

from temporalio.client import Client

from windflow.temporal.handles import QUERY_TIMEOUT, query_status

T = TypeVar("T")


class ClientSource(Protocol):
    """Where the client comes from (the API's lazily connecting client): ``get`` raises while Temporal is down."""

    async def get(self) -> Client: ...


@dataclass(frozen=True)
class Read(Generic[T]):
    state: T | None
    #: True when ``state`` came from the running workflow, False when from the store
    live: bool


async def live_or_stored(
    temporal: ClientSource | Client,
    workflow_id: str,
    result_type: type[T],
    *,
    stored: T | None,
    running: bool = True,
    accept: Callable[[T], bool] | None = None,
    timeout: timedelta | None = QUERY_TIMEOUT,
) -> Read[T]:
    """The workflow's ``status`` answer when ``running`` and it answers within ``timeout`` (and ``accept``
    takes it: a later run may reuse the workflow id), else ``stored``."""
    state = await _ask(temporal, workflow_id, result_type, timeout) if running else None
    if state is not None and (accept is None or accept(state)):
        return Read(state, live=True)
    return Read(stored, live=False)


async def _ask(
    temporal: ClientSource | Client, workflow_id: str, result_type: type[T], timeout: timedelta | None
) -> T | None:
    try:
        client = temporal if isinstance(temporal, Client) else await temporal.get()
        return await query_status(client, workflow_id, result_type, timeout=timeout)
    except Exception:  # Temporal down, closed or unknown run, no worker: the store answers
        return None
