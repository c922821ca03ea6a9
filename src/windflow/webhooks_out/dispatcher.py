"""The webhook dispatcher: bus events → persisted deliveries → signed POSTs, retried until they land.

Two loops run in each API process (``start_event_tasks``):

Intake
    Follows the event bus without taking events from anyone else. On Redis Streams it is a member of its own
    consumer group (``windflow-webhooks``, created at the stream's end), so each event goes to one API process
    and is acknowledged only once its deliveries are committed: an event is never lost to a crash, and one
    seen twice queues nothing new (a delivery's ``dedup_key`` is ``<subscription>:<event_id>``). On the
    in-process bus (one process, and the bus lives as long as it) it reads the bus from its beginning.
    For every enabled subscription whose event types match, it writes a ``pending`` delivery due now.
    An event no enabled subscription wants costs no query: the dispatcher keeps the event types of the
    enabled subscriptions in memory, read again after a change made through this process's API
    (:meth:`WebhookDispatcher.subscriptions_changed`) and at least every ``SUBSCRIPTIONS_REFRESH`` seconds
    (a change made through another process is seen within that). An event some subscription may want is
    matched against the store, in the transaction that queues it.

Sending
    Claims due deliveries in the store (a compare-and-set per attempt, see
    :mod:`windflow.persistence.webhooks_out_repositories`), so any number of API processes may send and no attempt
    goes out twice; a claim is a lease, and a delivery whose sender died is due again once it has passed.
    Each attempt POSTs the event envelope, signed as :mod:`windflow.webhooks_out.signing` describes, with the
    same ``webhook-id`` on every attempt. A 2xx answer delivers it; anything else (another
    status, a timeout, a refused connection) schedules the next attempt after an exponential backoff
    (``webhooks_backoff`` doubling up to ``webhooks_backoff_max``, a little jitter, at least what a
    ``Retry-After`` asks within that cap) until ``webhooks_max_attempts``, then the delivery is ``failed``.
    Outcomes are counted in ``windflow_webhook_deliveries{outcome}``.

Secrets never reach a log line or an error message; URLs are logged without their query and with any embedded
password redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx2

from windflow.domain.backoff import reconnect_delay
from windflow.domain.events import Event
from windflow.domain.redaction import redact_text
from windflow.escalation._http import transport_error
from windflow.events.base import EventBus
from windflow.metrics import WEBHOOK_DELIVERIES
from windflow.outbound import OutboundPolicy, guarded_client
from windflow.persistence.db import Database
from windflow.persistence.models import utcnow
from windflow.persistence.webhooks_out_repositories import (
    DELIVERED,
    FAILED,
    PENDING,
    Claim,
    WebhookDeliveryRepository,
    WebhookSubscriptionRepository,
)
from windflow.webhooks_out.signing import sign

log = logging.getLogger("windflow.webhooks_out")

CONSUMER_GROUP = "windflow-webhooks"
USER_AGENT = "windflow-webhooks/1"
ERROR_EXCERPT = 300
PURGE_EVERY = 600.0
LEASE_MARGIN = 30.0  # seconds a claim outlives the request timeout
MIN_WAIT = 0.01
SUBSCRIPTIONS_REFRESH = 1.0  # seconds the intake trusts its copy of the enabled subscriptions' event types


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout: float = 10.0
    max_attempts: int = 8
    backoff: float = 5.0
    backoff_max: float = 3600.0
    concurrency: int = 8
    poll_interval: float = 1.0
    retention: timedelta = timedelta(days=14)

    @classmethod
    def from_settings(cls, settings: Any) -> DeliveryPolicy:
        return cls(
            timeout=settings.webhooks_timeout,
            max_attempts=settings.webhooks_max_attempts,
            backoff=settings.webhooks_backoff,
            backoff_max=settings.webhooks_backoff_max,
            concurrency=settings.webhooks_concurrency,
            poll_interval=settings.webhooks_poll_interval,
            retention=timedelta(days=settings.webhooks_retention_days),
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.timeout + LEASE_MARGIN)

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        base = min(self.backoff_max, self.backoff * 2 ** max(0, attempts - 1))
        wait = min(self.backoff_max, base * (1 + 0.1 * random.random()))
        if retry_after is not None:
            wait = max(wait, min(self.backoff_max, retry_after))
        return wait


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after: float | None = None


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON of the event envelope."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _transport_error(exc: BaseException, timeout: float) -> str:
    return transport_error(exc, timeout)[:ERROR_EXCERPT]


def loggable_url(url: str) -> str:
    """The URL without query or fragment (they may carry tokens), with any embedded password redacted."""
    parts = urlsplit(url)
    return redact_text(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


async def attempt(
    client: httpx2.AsyncClient,
    *,
    url: str,
    secret: str,
    delivery_id: str,
    event_type: str,
    payload: dict[str, Any],
    timeout: float,
) -> AttemptResult:
    """One signed POST. Never raises for the receiver's sake: every outcome is an :class:`AttemptResult`."""
    body = encode_body(payload)
    headers = {"User-Agent": USER_AGENT, **sign(secret, body, event_type=event_type, delivery_id=delivery_id)}
    started = time.monotonic()
    try:
        response = await client.post(url, content=body, headers=headers, timeout=timeout)
    except (httpx2.HTTPError, OSError, TimeoutError) as exc:
        return AttemptResult(False, None, _transport_error(exc, timeout), (time.monotonic() - started) * 1000)
    duration = (time.monotonic() - started) * 1000
    if 200 <= response.status_code < 300:
        return AttemptResult(True, response.status_code, None, duration)
    excerpt = response.text[:ERROR_EXCERPT].strip()
    error = redact_text(f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else ""))
    return AttemptResult(False, response.status_code, error, duration, _retry_after(response))


def new_client(outbound: OutboundPolicy | None = None) -> httpx2.AsyncClient:
    """Redirects are not followed (a signed delivery goes where it was subscribed, nowhere else), proxy
    settings from the environment are ignored, and every connection is checked against the outbound policy
    (default: no loopback, private, link-local or metadata addresses)."""
    return guarded_client(
        outbound or OutboundPolicy.notify_default(),
        limits=httpx2.Limits(max_connections=100, max_keepalive_connections=20),
    )


Handler = Callable[[Event], Awaitable[object]]  # what it returns is not used


class GroupConsumer(Protocol):
    """A durable consumer-group member (the Redis bus's ``StreamConsumer``)."""

    async def ensure_group(self) -> None: ...

    async def run(self, handler: Handler, *, stop: asyncio.Event | None = None) -> None: ...


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WebhookDispatcher:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        *,
        policy: DeliveryPolicy | None = None,
        consumer: GroupConsumer | None = None,
        client: httpx2.AsyncClient | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self._db = db
        self.outbound = outbound
        self._bus = bus
        self.policy = policy or DeliveryPolicy()
        self._consumer = consumer
        self._client = client
        self._subscriptions = WebhookSubscriptionRepository()
        self._deliveries = WebhookDeliveryRepository()
        # event types of each enabled subscription (empty: every type), when read, and the generation read
        self._wanted: list[frozenset[str]] | None = None
        self._wanted_at = 0.0
        self._wanted_generation = 0
        self._generation = 0
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._next_due: datetime | None = None  # the earliest pending delivery's due time, as claim() last read it
        self.started = asyncio.Event()  # set once the intake follows the bus
        self.position: str | None = None  # in-process bus: the last event taken in
        self.queued = 0
        self.sent = 0
        self.failures = 0

    def notify(self) -> None:
        """Look for due deliveries now (after a local commit queued one)."""
        self._wake.set()

    def subscriptions_changed(self) -> None:
        """A subscription was added, changed or removed (and committed): read them again before the next event."""
        self._generation += 1

    async def _may_want(self, event_type: str) -> bool:
        """Whether some enabled subscription may want ``event_type``, from the in-memory copy (read again when
        stale). A stale "yes" costs one query; a "no" can be stale only for another process's recent change."""
        if (
            self._wanted is None
            or self._wanted_generation != self._generation
            or time.monotonic() - self._wanted_at > SUBSCRIPTIONS_REFRESH
        ):
            generation, read_at = self._generation, time.monotonic()  # a change during the read: read again
            async with self._db.read() as session:
                rows = await self._subscriptions.get_all(session=session, enabled=True)
            self._wanted = [frozenset(row.event_types) for row in rows]
            self._wanted_generation, self._wanted_at = generation, read_at
        return any(not types or event_type in types for types in self._wanted)

    # ------------------------------------------------------------------ intake

    async def enqueue(self, event: Event) -> int:
        """Queue ``event`` for every enabled subscription that wants it; returns how many deliveries were added."""
        event_type = event.event_type.value
        if not await self._may_want(event_type):
            return 0
        async with self._db.write() as session:
            wanted = [row.id for row in await self._subscriptions.matching(session=session, event_type=event_type)]
            added = await self._deliveries.enqueue(
                session=session,
                subscription_ids=wanted,
                event_id=event.event_id,
                event_type=event_type,
                payload=event.model_dump(mode="json"),
            )
        if added:
            self.queued += added
            self.notify()
        return added

    async def _intake(self) -> None:
        if self._consumer is not None:
            await self._group_intake(self._consumer)
            return
        failures = 0
        while True:
            try:
                if self.position is None:
                    # the in-process bus lives as long as this process: all it holds is this process's events,
                    # including those the outbox relay publishes at start-up (committed before a crash)
                    self.position = "0-0"
                self.started.set()
                async for position, event in self._bus.subscribe(after=self.position):
                    await self._enqueue_until_stored(event)
                    self.position = position
                    failures = 0
                return  # the bus was closed
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("webhook intake lost the bus (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(reconnect_delay(failures))

    async def _group_intake(self, consumer: GroupConsumer) -> None:
        failures = 0
        while True:
            try:
                await consumer.ensure_group()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("webhook intake cannot join its consumer group (%s); retrying", exc)
                await asyncio.sleep(reconnect_delay(failures))
        self.started.set()
        await consumer.run(self.enqueue)  # acknowledges after enqueue returned; a failure is redelivered

    async def _enqueue_until_stored(self, event: Event) -> None:
        """In-process bus: nothing would give the event again, so keep trying while the store is away."""
        failures = 0
        while True:
            try:
                await self.enqueue(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("webhook intake could not queue event %s (%s); retrying", event.event_id, exc)
                await asyncio.sleep(reconnect_delay(failures, cap=5.0))

    # ------------------------------------------------------------------ sending

    async def claim(self, limit: int) -> list[Claim]:
        """Claim up to ``limit`` due deliveries. Looks first without the write lock (SQLite has one writer),
        so an idle dispatcher never takes it."""
        async with self._db.read() as session:
            due = self._next_due = await self._deliveries.next_due(session=session)
        if due is None or due > utcnow():
            return []
        async with self._db.write() as session:
            return await self._deliveries.claim_due(session=session, limit=limit, lease=self.policy.lease)

    async def deliver(self, claim: Claim) -> AttemptResult:
        """Send one claimed attempt and store its outcome."""
        client = self._client or new_client(self.outbound)
        try:
            result = await attempt(
                client,
                url=claim.url,
                secret=claim.secret,
                delivery_id=claim.delivery_id,
                event_type=claim.event_type,
                payload=claim.payload,
                timeout=self.policy.timeout,
            )
        finally:
            if self._client is None:
                await client.aclose()
        next_at: datetime | None = None
        if result.ok:
            state, outcome = DELIVERED, "delivered"
        elif claim.attempts >= self.policy.max_attempts:
            state, outcome = FAILED, "failed"
        else:
            state, outcome = PENDING, "retrying"
            next_at = utcnow() + timedelta(seconds=self.policy.delay(claim.attempts, result.retry_after))
        async with self._db.write() as session:
            kept = await self._deliveries.record(
                session=session,
                claim=claim,
                state=state,
                next_attempt_at=next_at,
                status_code=result.status_code,
                error=result.error,
                duration_ms=round(result.duration_ms, 3),
            )
        WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
        self.sent += 1
        if not kept:
            log.info(
                "webhook delivery %s: outcome of attempt %d not stored (the delivery was taken over after its "
                "claim expired, or deleted)",
                claim.delivery_id,
                claim.attempts,
            )
        elif not result.ok:
            log.log(
                logging.WARNING if state == FAILED else logging.INFO,
                "webhook delivery %s to %s: attempt %d/%d %s (%s)",
                claim.delivery_id,
                loggable_url(claim.url),
                claim.attempts,
                self.policy.max_attempts,
                outcome,
                result.error,
            )
        return result

    async def run_once(self) -> int:
        """Claim what is due (up to the free concurrency) and start sending it; returns how many were started."""
        free = self.policy.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        claims = await self.claim(free)
        for claim in claims:
            task = asyncio.create_task(self._deliver_logged(claim), name=f"webhook-{claim.delivery_id}")
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(claims)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free, and a retry may be due sooner than the next poll

    async def _deliver_logged(self, claim: Claim) -> None:
        try:
            await self.deliver(claim)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed while recording: the lease makes the delivery due again
            log.warning("webhook delivery %s: outcome not stored (%s); it will be retried", claim.delivery_id, exc)

    def _wait_time(self) -> float:
        """Until the next due delivery :meth:`claim` saw (when it claimed nothing), at most the poll interval."""
        due = self._next_due
        if due is None:
            return self.policy.poll_interval
        return max(0.0, min(self.policy.poll_interval, (due - utcnow()).total_seconds()))

    async def purge(self) -> int:
        async with self._db.write() as session:
            return await self._deliveries.purge(session=session, older_than=self.policy.retention)

    async def _send_loop(self) -> None:
        next_purge = time.monotonic() + PURGE_EVERY
        failures = 0
        while True:
            self._wake.clear()
            try:
                started = await self.run_once()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY
                    await self.purge()
                if len(self._inflight) >= self.policy.concurrency:
                    wait = self.policy.poll_interval  # a finishing send wakes the loop
                elif started:
                    wait = 0.0  # there may be more due
                else:
                    wait = max(MIN_WAIT, self._wait_time())  # claim() just read the next due time
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.failures += 1
                if failures == 1:
                    log.warning("webhook dispatcher cannot reach the store (%s: %s); retrying", type(exc).__name__, exc)
                wait = reconnect_delay(failures, cap=5.0)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def run(self) -> None:
        own_client = self._client is None
        if own_client:
            self._client = new_client(self.outbound)
        intake = asyncio.create_task(self._intake(), name="webhook-intake")
        try:
            await self._send_loop()
        finally:
            intake.cancel()
            pending = {intake, *self._inflight}
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)  # their outcomes stay with them; a cancellation of ours still propagates
            if own_client and self._client is not None:
                await self._client.aclose()
                self._client = None
