"""Service logs: ``GET /services/{id}/logs`` (tail) and ``?follow=true`` (NDJSON stream), see windflow.service_logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from windflow.api.deps import ReadSessionDep, ResourcesDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.resources import Resources
from windflow.api.security import bearer_token, require, revalidator
from windflow.auth.permissions import Permission, Principal
from windflow.events.redis_streams import RedisStreamsBus
from windflow.persistence.repositories import ServiceRepository
from windflow.service_logs import STREAMS, FileLogSource, LogLine, RedisLogSource, Stream

router = APIRouter(prefix="/services", tags=["logs"], responses=ERROR_RESPONSES)
services = ServiceRepository()

log = logging.getLogger("windflow.api.logs")

CanReadLogs = Annotated[Principal, Depends(require(Permission.LOGS_READ))]


class LogLinePublic(BaseModel):
    stream: Stream
    line: str
    at: str | None = Field(None, description="When the line was shipped (Redis source); null for files")


class LogTail(BaseModel):
    service: str
    source: Literal["file", "redis"] = Field(description="file: this host's log files; redis: shipped by a worker")
    lines: list[LogLinePublic]


def _streams(stream: Literal["all", "stdout", "stderr"]) -> tuple[Stream, ...]:
    return STREAMS if stream == "all" else (stream,)


async def _source(resources: Resources, service_id: str) -> FileLogSource | RedisLogSource:
    files = FileLogSource(resources.settings.resolved_data_dir / "logs")
    if files.has(service_id):
        return files
    bus = resources.bus
    if isinstance(bus, RedisStreamsBus):
        return RedisLogSource(bus.redis, prefix=resources.settings.logs_prefix)
    raise ApiError(
        404,
        f"no logs of service {service_id!r} on this host; workers on other hosts ship their "
        "services' logs when WINDFLOW_REDIS_URL is set",
        code="not_found",
    )


@router.get(
    "/{service_id}/logs",
    response_model=LogTail,
    summary="Tail (and follow) a service's stdout and stderr",
    responses={
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "JSON; with follow=true, one JSON line per log line (NDJSON)",
        }
    },
)
async def service_logs(
    service_id: str,
    request: Request,
    resources: ResourcesDep,
    session: ReadSessionDep,
    _: CanReadLogs,
    lines: int = Query(100, ge=0, le=5000, description="How many of the last lines to return first"),
    stream: Literal["all", "stdout", "stderr"] = "all",
    follow: bool = Query(False, description="Keep the response open and send new lines as they are written"),
    replica: int | None = Query(
        None,
        ge=0,
        le=99,
        description="A replicated service: the replica K (`SERVICE/K`) whose output to show (required for one)",
    ),
) -> LogTail | StreamingResponse:
    row = await services.get(session=session, service_id=service_id)
    if row is None:
        raise ApiError(404, f"service {service_id!r} not found", code="not_found")
    if replica is not None or row.replicated:
        count = int((row.spec or {}).get("replicas") or 0) if row.replicated else 0
        if (
            replica is None
            or not row.replicated
            or await services.get(session=session, service_id=f"{service_id}/{replica}") is None
        ):
            why = (
                f"{service_id} has no replicas"
                if not row.replicated
                else f"{service_id} runs {count} replicas: name one with replica=0…{count - 1}"
                if replica is None
                else f"{service_id} has no replica {replica}"
            )
            raise ApiError(
                422,
                why,
                code="validation_error",
                details=[{"loc": ["query", "replica"], "msg": why, "type": "value_error"}],
            )
        service_id = f"{service_id}/{replica}"
    await session.close()  # a follow may last hours: hold no database connection
    streams = _streams(stream)
    source = await _source(resources, service_id)
    try:
        tail = await source.tail(service_id, lines, streams)
    except OSError as exc:
        raise ApiError(503, f"logs unavailable: {exc}", code="unavailable") from None
    except Exception as exc:  # Redis unreachable
        raise ApiError(503, f"logs unavailable: {type(exc).__name__}: {exc}", code="unavailable") from None
    if not follow:
        return LogTail(service=service_id, source=source.name, lines=[LogLinePublic(**t.as_dict()) for t in tail])

    body = _follow(request, resources, source, service_id, streams, tail)
    return StreamingResponse(
        body, media_type="application/x-ndjson", headers={"Cache-Control": "no-store", "X-Log-Source": source.name}
    )


async def _still_allowed(request: Request, resources: Resources, token: str | None) -> bool:
    """A follow may last hours: it ends once its token is revoked or its owner signed out or lost logs:read."""
    if token is None:
        return True
    try:
        principal = await revalidator(request.app, resources.settings.ws_revalidate_interval).check(request, token)
    except ApiError:
        return False
    except Exception as exc:  # the store cannot answer now: ask again at the next check
        log.warning("could not re-check a log follower's token: %s: %s", type(exc).__name__, exc)
        return True
    return principal.can(Permission.LOGS_READ.value)


async def _follow(
    request: Request,
    resources: Resources,
    source: FileLogSource | RedisLogSource,
    service_id: str,
    streams: Sequence[Stream],
    tail: Sequence[LogLine],
) -> AsyncIterator[bytes]:
    """The tail, then new lines as they are written (NDJSON), until the client goes or may no longer read."""
    token = bearer_token(request)
    for item in tail:
        yield _ndjson(item)
    next_check = time.monotonic() + resources.settings.ws_revalidate_interval
    queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=10_000)

    async def pump() -> None:
        async for item in source.follow(service_id, streams):
            await queue.put(item)

    task = asyncio.create_task(pump())
    idle = 0.0
    next_probe = 0.0
    try:
        while True:
            # one disconnect probe per DISCONNECT_PROBE, not one per line: at thousands of lines a second the probe
            # (a receive under a cancel scope) costs more than the lines
            now = time.monotonic()
            if now >= next_probe:
                if await request.is_disconnected():
                    break
                next_probe = now + DISCONNECT_PROBE
            if time.monotonic() >= next_check:
                if not await _still_allowed(request, resources, token):
                    break
                next_check = time.monotonic() + resources.settings.ws_revalidate_interval
            try:
                item = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                if task.done():  # the source failed (Redis gone): end the stream, the client may retry
                    break
                idle += 1.0
                if idle >= 15:
                    idle = 0.0
                    yield b"\n"  # keep-alive through proxies; clients skip blank lines
                continue
            idle = 0.0
            # what else is queued goes in the same chunk: one send (and one HTTP chunk) per burst, not per line
            chunk = [_ndjson(item)]
            while len(chunk) < CHUNK_LINES and not queue.empty():
                chunk.append(_ndjson(queue.get_nowait()))
            yield b"".join(chunk)
    finally:
        task.cancel()


#: a follow checks that its client is still there at most this often (seconds)
DISCONNECT_PROBE = 0.5
#: most lines sent in one chunk of a follow
CHUNK_LINES = 1000


def _ndjson(item: LogLine) -> bytes:
    return json.dumps(item.as_dict(), ensure_ascii=False).encode() + b"\n"
