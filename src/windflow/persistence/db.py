"""Engine and sessions for PostgreSQL (psycopg 3) and SQLite (aiosqlite), behind the same code.

SQLite is a real default: WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for writers so that
concurrent API and worker writes queue instead of failing with "database is locked".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


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


class Database:
    """One engine, two session factories: readers (plain BEGIN) and writers (BEGIN IMMEDIATE on SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._reader = async_sessionmaker(engine, expire_on_commit=False)
        writer_bind = engine.execution_options(sqlite_begin_mode="IMMEDIATE") if self.dialect == "sqlite" else engine
        self._writer = async_sessionmaker(writer_bind, expire_on_commit=False)

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
        session = self._writer()
        ok = False
        try:
            await session.begin()
            yield session
            ok = True
        finally:
            await asyncio.shield(asyncio.ensure_future(_finish(session, commit=ok)))

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
