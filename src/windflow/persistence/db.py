"""Engine and sessions for PostgreSQL (psycopg 3) and SQLite (aiosqlite), behind the same code.

SQLite is a real default: WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for writers so that
concurrent API and worker writes queue instead of failing with "database is locked".
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")

#: SQLite admits one writer at a time; writers of one process queue here, in order, instead of in SQLite's busy
#: handler, which polls with sleeps of up to 100 ms. Under a burst (an initialization starting 50 components)
#: that polling took p90 write latency from ~15 ms to 200–350 ms. Writers in other processes still meet in
#: the busy handler. Keyed by event loop, then by database file: a lock belongs to one loop.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _sqlite_writer_lock(database: str) -> asyncio.Lock:
    locks = _SQLITE_WRITERS.setdefault(asyncio.get_running_loop(), {})
    lock = locks.get(database)
    if lock is None:
        lock = locks[database] = asyncio.Lock()
    return lock


def create_engine(url: str, *, echo: bool = False, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                                     **kwargs)
        _sqlite_setup(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_async_engine(url, echo=echo, **kwargs)


def _sqlite_setup(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy, not the driver, decide when transactions begin
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin_mode", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


async def _finish(session: AsyncSession, *, commit: bool) -> None:
    try:
        if commit:
            await session.commit()
        else:
            await session.rollback()
    finally:
        await session.close()


async def _acquire_writer(lock: asyncio.Lock) -> None:
    owner = getattr(lock, "windflow_owner", None)
    if owner is not None and owner is asyncio.current_task():
        raise RuntimeError("a SQLite write transaction was opened inside another one of the same task")
    try:
        async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
            await lock.acquire()
    except TimeoutError:
        raise TimeoutError(f"no SQLite write slot within {SQLITE_BUSY_TIMEOUT_MS / 1000:g}s") from None
    lock.windflow_owner = asyncio.current_task()  # type: ignore[attr-defined]


def _release_writer(lock: asyncio.Lock) -> None:
    lock.windflow_owner = None  # type: ignore[attr-defined]
    lock.release()


class Database:
    """One engine, two session factories: readers (plain BEGIN) and writers (BEGIN IMMEDIATE on SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._reader = async_sessionmaker(engine, expire_on_commit=False)
        writer_bind = engine.execution_options(sqlite_begin_mode="IMMEDIATE") if self.dialect == "sqlite" else engine
        self._writer = async_sessionmaker(writer_bind, expire_on_commit=False)
        database = engine.url.database or ""
        # an in-memory database is private to its connection: nothing to queue for
        self._sqlite_file = (str(Path(database).expanduser().resolve())
                             if self.dialect == "sqlite" and database not in ("", ":memory:") else None)
        self._batch: list[tuple[Callable[[AsyncSession], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._batcher: asyncio.Task[None] | None = None
        self._running: list[tuple[Callable[[AsyncSession], Awaitable[Any]], asyncio.Future[Any]]] = []

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._reader() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on success, rolls back on any error.

        The commit or rollback and the close run shielded from cancellation: a cancelled caller (an activity
        cancelled at worker shutdown, say) must not leave its transaction open, which on SQLite would hold the
        database's write lock until the connection is garbage-collected.
        """
        lock = _sqlite_writer_lock(self._sqlite_file) if self._sqlite_file else None
        if lock is not None:
            await _acquire_writer(lock)
        session = self._writer()
        ok = False
        try:
            await session.begin()
            yield session
            ok = True
        finally:
            done = asyncio.ensure_future(_finish(session, commit=ok))
            if lock is not None:  # released once the transaction has ended, even if this caller was cancelled
                done.add_done_callback(lambda _: _release_writer(lock))
            await asyncio.shield(done)

    async def write_batched(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work(session)`` in a write transaction, committed when this returns (group commit on SQLite).

        On SQLite, writers that arrive while a transaction is under way are gathered and run one after another
        in the next single transaction: one BEGIN and one COMMIT for the lot instead of a queue of separate
        transactions (a burst of 10 small writes costs about what 2 cost). If any of them fails, each is re-run
        alone, so only the failing one fails. ``work`` must be safe to run again after a rollback (it only
        touches the session). On PostgreSQL, where writers run concurrently, it is a plain ``write()``.
        The write is not abandoned when the caller is cancelled: it is already queued.
        """
        if self._sqlite_file is None:
            async with self.write() as session:
                return await work(session)
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._batch.append((work, done))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches(), name="sqlite-group-commit")
        return await asyncio.shield(done)

    async def _run_batches(self) -> None:
        try:
            await self._drain_batches()
        except BaseException:  # cancelled (the loop is closing): nobody may wait forever
            for _, done in [*self._running, *self._batch]:
                if not done.done():
                    done.cancel()
            self._batch = []
            raise

    async def _drain_batches(self) -> None:
        while self._batch:
            batch = self._running = self._batch
            self._batch = []
            try:
                async with self.write() as session:
                    results = [await work(session) for work, _ in batch]
            except Exception:  # noqa: BLE001 - one failed: find out which, alone
                for work, done in batch:
                    try:
                        async with self.write() as session:
                            result = await work(session)
                    except Exception as exc:  # noqa: BLE001 - handed to that writer
                        if not done.done():
                            done.set_exception(exc)
                    else:
                        if not done.done():
                            done.set_result(result)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)

    def reader_session(self) -> AsyncSession:
        return self._reader()

    def writer_session(self) -> AsyncSession:
        return self._writer()

    async def notifications(self, channel: str) -> AsyncIterator[str]:
        """PostgreSQL only: LISTEN on ``channel`` over a dedicated connection and yield each payload.

        Ends with an error when the connection drops; the caller reconnects (and re-checks what it may have
        missed meanwhile, since NOTIFY is not queued for absent listeners)."""
        if self.dialect != "postgresql":
            raise RuntimeError("LISTEN/NOTIFY needs PostgreSQL")
        import psycopg
        from psycopg import sql

        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield ""  # listening: anything committed from now on is announced
            async for note in conn.notifies():
                yield note.payload

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
