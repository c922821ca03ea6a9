"""Events over HTTP: the typed event models (OpenAPI) and a polling read of the stream.

Live updates go over the WebSocket ``/api/v1/ws`` (see :mod:`windflow.api.routers.ws`); both carry the same
messages ``{"type": "event", "id": <position>, "event": <envelope>}``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field, create_model

from windflow.api.deps import BusDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.event_hub import build_filter, encode_event
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import ServiceUnavailable
from windflow.domain.events import EVENT_DATA_MODELS, Event, EventType
from windflow.events.base import InvalidPosition, parse_position

log = logging.getLogger("windflow.api.events")
router = APIRouter(prefix="/events", tags=["events"], responses=ERROR_RESPONSES)

CanRead = Annotated[Principal, Depends(require(Permission.SERVICES_READ))]
MAX_SCAN = 10_000  # stream entries one polling request may look at while filtering


class _EnvelopeBase(BaseModel):
    event_id: str = Field(description="Unique id; consumers de-duplicate on it")
    timestamp: datetime


def _typed_envelope(event_type: EventType, model: type[BaseModel]) -> type[BaseModel]:
    name = model.__name__.removesuffix("Event") + "Event"
    return create_model(
        name,
        __base__=_EnvelopeBase,
        __doc__=f"A {event_type.value} event: the envelope with {model.__name__} data.",
        event_type=(Literal[event_type.value], ...),  # type: ignore[arg-type]  # a Literal built at run time
        data=(model, ...),
    )


TYPED_ENVELOPES = [_typed_envelope(t, m) for t, m in EVENT_DATA_MODELS.items()]
TypedEvent = Annotated[Union[tuple(TYPED_ENVELOPES)], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007


class EventMessage(BaseModel):
    """One event as the WebSocket and ``GET /events`` deliver it."""

    type: Literal["event"] = "event"
    id: str = Field(description="Stream position; pass it back as `after` / `last_event_id` to resume")
    event: TypedEvent  # type: ignore[valid-type]


class EventPage(BaseModel):
    items: list[EventMessage]
    next_after: str | None = Field(
        description="Pass as `after` to continue (the last position examined); "
        "fewer than `limit` items means the end of the stream was reached"
    )
    gap: bool = Field(False, description="Events after `after` were trimmed by retention before this read")


class EventSchemas(BaseModel):
    envelope: dict[str, Any] = Field(description="JSON Schema of the envelope")
    types: dict[str, dict[str, Any]] = Field(description="JSON Schema of `data`, per event_type")


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(
            422,
            f"{name}: instant out of range",
            code="validation_error",
            details=[{"loc": ["query", name], "msg": "out of range in UTC"}],
        ) from None


def _within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    if start is None and end is None:
        return True
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return (start is None or at >= start) and (end is None or at < end)


@router.get("/schema", response_model=EventSchemas, summary="JSON Schemas of the event envelope and data models")
async def event_schemas(_: CanRead) -> EventSchemas:
    return EventSchemas(
        envelope=Event.model_json_schema(),
        types={t.value: m.model_json_schema() for t, m in EVENT_DATA_MODELS.items()},
    )


@router.get("", response_model=EventPage, summary="Read retained events after a position (polling clients)")
async def list_events(
    bus: BusDep,
    principal: CanRead,
    after: str | None = Query(None, max_length=64, description="Stream position; omit to start at the oldest"),
    limit: int = Query(100, ge=1, le=1000, description="Most events to return (after filtering)"),
    types: Annotated[list[str], Query(description="Event types; repeat or comma-separate")] = [],  # noqa: B006
    services: Annotated[list[str], Query(description="Service ids; repeat or comma-separate")] = [],  # noqa: B006
    since: datetime | None = Query(None, description="Only events stamped at or after this instant (no zone: UTC)"),
    until: datetime | None = Query(None, description="Only events stamped before this instant (no zone: UTC)"),
) -> Response:
    """Events after `after`, filtered by type, service and time (`since`/`until` filter the events read; they
    do not seek: page on with `next_after`)."""
    start, end = _utc(since, "since"), _utc(until, "until")
    if start is not None and end is not None and start >= end:
        raise ApiError(
            422,
            "since must be before until",
            code="validation_error",
            details=[{"loc": ["query", "since"], "msg": "must be before until"}],
        )
    if after is not None:
        try:
            parse_position(after)
        except InvalidPosition as exc:
            raise ApiError(
                422, str(exc), code="validation_error", details=[{"loc": ["query", "after"], "msg": str(exc)}]
            ) from None
    try:
        flt = build_filter(types, services, principal)
    except PermissionError as exc:
        raise ApiError(403, str(exc), code="forbidden") from None
    except ValueError as exc:
        raise ApiError(422, str(exc), code="validation_error") from None
    items: list[str] = []
    cursor = after
    try:
        gap = await bus.missed(after) if after is not None else False
        scanned = 0
        while len(items) < limit and scanned < MAX_SCAN:
            batch = await bus.read(after=cursor, limit=limit)
            for position, event in batch:
                cursor = position
                if flt.matches(event) and _within(event.timestamp, start, end):
                    items.append(encode_event(position, event))
                    if len(items) >= limit:
                        break
            scanned += len(batch)
            if len(batch) < limit:
                break  # the end of the stream
    except Exception as exc:
        log.warning("reading events failed: %s: %s", type(exc).__name__, exc)
        raise ServiceUnavailable(f"the event bus is unreachable: {type(exc).__name__}") from None
    next_after = cursor
    body = (
        '{"items":['
        + ",".join(items)
        + '],"next_after":'
        + (f'"{next_after}"' if next_after else "null")
        + ',"gap":'
        + ("true" if gap else "false")
        + "}"
    )
    return Response(content=body, media_type="application/json")
