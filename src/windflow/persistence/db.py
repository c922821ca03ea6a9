"""Engine and sessions for PostgreSQL (psycopg 3) and SQLite (aiosqlite), behind the same code.

SQLite is a real default: WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for writers so that
concurrent API and worker writes queue instead of failing with "database is locked".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import CursorResult, Result, Row, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from windflow.settings import private

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: :meth:`Database.rows` on SQLite: how long a short read may wait on the event loop's thread for a lock
#: (in WAL mode readers wait only during a checkpoint that resets the log) before it retries in a session
SQLITE_QUICK_BUSY_MS = 20
T = TypeVar("T")

#: SQLite admits one writer at a time; writers of one process queue here, in order, instead of in SQLite's busy
#: handler, which polls with sleeps of up to 100 ms. Under a burst (an initialization starting 50 components)
#: that polling took p90 write latency from ~15 ms to 200–350 ms. Writers in other processes still meet in
#: the busy handler. Keyed by event loop, then by database file: a lock belongs to one loop.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _WriterLock]] = (
    weakref.WeakKeyDictionary()
)


class _WriterLock(asyncio.Lock):
    """The writer slot of one SQLite file; ``owner``: the task holding it (a nested write of the same task would
    wait for itself forever, so it fails at once instead)."""

    owner: asyncio.Task[Any] | None = None


def _sqlite_writer_lock(database: str) -> _WriterLock:
    locks = _SQLITE_WRITERS.setdefault(asyncio.get_running_loop(), {})
    lock = locks.get(database)
    if lock is None:
        lock = locks[database] = _WriterLock()
    return lock


def private_file(path: Path) -> None:
    """Create the SQLite file readable by this user only (0600; SQLite gives its -wal and -shm files the same
    mode), and tighten one that exists (an older instance made it 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        private(name)


def create_engine(url: str, *, echo: bool = False, **kwargs: Any) -> AsyncEngine:
    # errors name the statement, never its bound values (passwords, tokens' hashes, what a request carried)
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            private_file(Path(parsed.database).expanduser())
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
        _sqlite_setup(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_async_engine(url, echo=echo, **kwargs)


def _sqlite_setup(
    engine: AsyncEngine | Engine, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, checkpoint: bool = True
) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy, not the driver, decide when transactions begin
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cur.execute("PRAGMA synchronous=NORMAL")
        if not checkpoint:  # leave checkpoints (writing and syncing the database file) to other connections
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin_mode", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _sqlite_plain_engine(engine: AsyncEngine, *, timeout_ms: int, **kwargs: Any) -> Engine:
    """A plain (pysqlite, no thread of its own) engine on the same file as ``engine``."""
    kwargs.setdefault("hide_parameters", True)
    return create_sync_engine(
        engine.url.set(drivername="sqlite"),
        connect_args={"check_same_thread": False, "timeout": timeout_ms / 1000},
        **kwargs,
    )


def _sqlite_busy(exc: OperationalError) -> bool:
    """SQLite answered "busy" or "locked" (another connection holds a lock), not another failure."""
    return getattr(exc.orig, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _sqlite_quick_engine(async_engine: AsyncEngine) -> Engine:
    """The engine of :meth:`Database.rows`: autocommit, so one SELECT is one statement and its own snapshot,
    no BEGIN, no thread; read-only, and waiting at most ``SQLITE_QUICK_BUSY_MS`` for a lock (the driver's
    ``timeout``)."""
    engine = _sqlite_plain_engine(async_engine, timeout_ms=SQLITE_QUICK_BUSY_MS, isolation_level="AUTOCOMMIT")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only=ON")

    return engine


def _sqlite_writer_engine(async_engine: AsyncEngine, *, busy_timeout_ms: int, checkpoint: bool = True) -> Engine:
    """A plain engine of write transactions (``BEGIN IMMEDIATE``) on the same file as ``async_engine``, with its
    own connections. :meth:`Database.write_sync` has two: one for worker threads, which waits for the lock like
    every writer, and one for the event loop's thread, which never waits (``busy_timeout_ms=0``: busy means
    "another process writes now") and never checkpoints."""
    engine = _sqlite_plain_engine(async_engine, timeout_ms=busy_timeout_ms)
    _sqlite_setup(engine, busy_timeout_ms=busy_timeout_ms, checkpoint=checkpoint)
    return engine.execution_options(sqlite_begin_mode="IMMEDIATE")


def _transaction(engine: Engine, work: Callable[[Session], T]) -> T:
    """``work`` in one write transaction on ``engine``: committed, or rolled back when anything raises. The
    connection's return to the pool rolls back whatever is still open, so no path leaves SQLite's write lock
    held."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        return work(session)


async def _finish(session: AsyncSession, *, commit: bool) -> None:
    try:
        if commit:
            await session.commit()
        else:
            await session.rollback()
    finally:
        await session.close()


async def _acquire_writer(lock: _WriterLock) -> None:
    if lock.owner is not None and lock.owner is asyncio.current_task():
        raise RuntimeError("a SQLite write transaction was opened inside another one of the same task")
    try:
        async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
            await lock.acquire()
    except TimeoutError:
        raise TimeoutError(f"no SQLite write slot within {SQLITE_BUSY_TIMEOUT_MS / 1000:g}s") from None
    lock.owner = asyncio.current_task()


def _release_writer(lock: _WriterLock) -> None:
    lock.owner = None
    lock.release()


def affected_rows(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE run through a session matched (the session types its result as a plain
    ``Result``; for these statements it is the ``CursorResult`` that counts them)."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


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
        self._sqlite_file = (
            str(Path(database).expanduser().resolve())
            if self.dialect == "sqlite" and database not in ("", ":memory:")
            else None
        )
        self._batch: list[tuple[Callable[[AsyncSession], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._batcher: asyncio.Task[None] | None = None
        self._running: list[tuple[Callable[[AsyncSession], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._quick: Engine | None = None
        self._quick_conns: dict[int, Connection] = {}
        self._sync_writer: Engine | None = None
        self._loop_writer: Engine | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._reader() as session, session.begin():
            yield session

    async def rows(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Row[Any]]:
        """The rows of one short ``SELECT`` (a point lookup, an aggregate: a few rows) outside any session.

        For the reads on every request (token denylist, the read cache's change stamp, existence checks): on
        SQLite the statement runs right here on the event loop's thread, on a plain connection in autocommit
        mode. aiosqlite would hand each step (cursor, BEGIN, execute, fetch, ROLLBACK) to its thread and back,
        about ten hand-offs that cost the loop far more than the read itself (tens of microseconds on a file in
        the page cache). In WAL mode a reader never waits for writers; should it meet a lock anyway (a
        checkpoint resetting the log), it gives up after ``SQLITE_QUICK_BUSY_MS`` and reads in a session.
        The connection stays with the thread (no pool checkout and reset per read); in autocommit mode, with
        every result fetched whole, it holds no snapshot between reads, so it never keeps a checkpoint from
        resetting the log. On PostgreSQL: one statement on a pooled connection, no ORM session.
        """
        if self._sqlite_file is not None:
            conn = self._quick_connection()
            try:
                return conn.execute(stmt, params).all()
            except OperationalError as exc:
                if not _sqlite_busy(exc):
                    self._drop_quick_connection()
                    raise
            except BaseException:
                self._drop_quick_connection()
                raise
            async with self.read() as session:
                return (await session.execute(stmt, params)).all()
        async with self.engine.connect() as pooled:
            return (await pooled.execute(stmt, params)).all()

    def _quick_connection(self) -> Connection:
        """This thread's connection for :meth:`rows` (normally just the event loop's thread)."""
        conn = self._quick_conns.get(threading.get_ident())
        if conn is None:
            if self._quick is None:
                self._quick = _sqlite_quick_engine(self.engine)
            conn = self._quick_conns[threading.get_ident()] = self._quick.connect()
        return conn

    def _drop_quick_connection(self) -> None:
        """After a failure other than "busy": the next read opens a fresh connection."""
        conn = self._quick_conns.pop(threading.get_ident(), None)
        if conn is not None:
            conn.invalidate()

    async def write_sync(self, work: Callable[[Session], T]) -> T:
        """Run the synchronous ``work(session)`` in a write transaction, committed when this returns.

        For small writes on a request's path (an audit record and its event). On SQLite, once this process's
        earlier writers are done (it queues behind them like :meth:`write`), the transaction runs right here on
        the event loop's thread over a plain pysqlite connection that never waits for a lock: a few hundred
        microseconds, where :meth:`write` through aiosqlite hands each step (BEGIN, each INSERT, COMMIT, the
        reset) to its thread and back, several milliseconds under load. If another process holds the write
        lock, ``BEGIN IMMEDIATE`` fails at once and the transaction runs on a worker thread instead, which
        waits for the lock like every other writer; a cancelled caller does not end that one early. ``work``
        must only touch the session (it may run twice: a busy first try wrote nothing). On PostgreSQL it is
        :meth:`write` with ``work`` run on the session's synchronous facade.
        """
        if self._sqlite_file is None:
            async with self.write() as session:
                return await session.run_sync(work)
        if self._sync_writer is None or self._loop_writer is None:
            self._sync_writer = _sqlite_writer_engine(self.engine, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS)
            self._loop_writer = _sqlite_writer_engine(self.engine, busy_timeout_ms=0, checkpoint=False)
        lock = _sqlite_writer_lock(self._sqlite_file)
        await _acquire_writer(lock)
        busy = False
        try:
            return _transaction(self._loop_writer, work)
        except OperationalError as exc:
            if not _sqlite_busy(exc):
                raise
            busy = True  # another process writes now: wait for it on a thread, still holding this process's slot
        finally:
            if not busy:
                _release_writer(lock)
        done = asyncio.get_running_loop().run_in_executor(None, _transaction, self._sync_writer, work)
        done.add_done_callback(lambda _: _release_writer(lock))  # once the transaction has ended
        return await asyncio.shield(done)

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
            except Exception:  # one failed: find out which, alone
                for work, done in batch:
                    try:
                        async with self.write() as session:
                            result = await work(session)
                    except Exception as exc:  # handed to that writer
                        if not done.done():
                            done.set_exception(exc)
                    else:
                        if not done.done():
                            done.set_result(result)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)

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
        conns, self._quick_conns = list(self._quick_conns.values()), {}
        for conn in conns:
            conn.close()
        for engine in (self._quick, self._sync_writer, self._loop_writer):
            if engine is not None:
                engine.dispose()
        await self.engine.dispose()
