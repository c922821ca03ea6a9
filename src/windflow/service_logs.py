"""Service logs: the tail of a service's stdout and stderr, and following it, wherever the API runs.

The ``process`` driver writes each service's output to ``data_dir/logs/{service}.out.log`` and ``.err.log``
on the worker's host (see ``windflow.drivers.process``). Two sources read them:

* **Files** (:class:`FileLogSource`): when the API runs on the host that holds the files (``windflow up``,
  one-host installs). Files carry no timestamps, so a tail returns stdout's lines, then stderr's; following
  returns lines as they are written, polled every ``poll`` seconds.
* **Redis Streams** (:class:`RedisLogSource`): for workers on other hosts. Each worker with ``redis_url``
  runs a :class:`LogShipper` that appends new lines to ``{prefix}{service}`` (capped at ``maxlen`` entries,
  approximately) and keeps how far it got per file in the hash ``{prefix}offsets``, so a restarted worker
  neither loses nor repeats lines. Entries carry the time they were shipped.

Both handle the driver's copy-truncate rotation: a file shorter than the offset read so far starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

log = logging.getLogger("windflow.service_logs")

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
SUFFIX: dict[Stream, str] = {"stdout": ".out.log", "stderr": ".err.log"}
MAX_LINE = 8192  # characters kept of one line; longer lines are cut (with a marker)
MAX_TAIL = 5000  # most lines one tail returns


@dataclass(frozen=True)
class LogLine:
    stream: Stream
    line: str
    at: datetime | None = None  # when the line was shipped (Redis); unknown for plain files

    def as_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "line": self.line, "at": self.at.isoformat() if self.at else None}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + " …[cut]"


def _decode(raw: bytes) -> str:
    return _clip(raw.decode("utf-8", errors="replace").rstrip("\r"))


def tail_file(path: Path, lines: int, *, block: int = 65536) -> list[str]:
    """The last ``lines`` lines of ``path`` (without newlines), read backwards in blocks; [] if missing."""
    if lines <= 0:
        return []
    try:
        f = path.open("rb")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return []
    with f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            if len(data) > lines * (MAX_LINE + 1) + block:  # enough for the lines asked, even long ones
                break
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()  # the final newline
    if pos > 0 and parts:
        parts = parts[1:]  # the first piece may be the end of a longer line
    return [_decode(p) for p in parts[-lines:]]


#: a failure's cause in a message: at most this many of the last stderr lines, this many characters in all
CAUSE_LINES = 5
CAUSE_CHARS = 1000


def last_error_lines(
    path: Path,
    *,
    since: int = 0,
    lines: int = CAUSE_LINES,
    max_chars: int = CAUSE_CHARS,
) -> str | None:
    """The last ``lines`` non-blank lines written to ``path`` after byte ``since``, joined with `` | `` and cut
    to ``max_chars`` (keeping the end, where the error usually is): a failure's cause for its message
    ("exited with code 1: Traceback (most recent call last): | … | FileNotFoundError: …"), or None."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size == since and since > 0:
        return None  # nothing written since the start
    got = tail_file(path, 20 + lines)
    if since and size > since and size - since < 65536:
        with contextlib.suppress(OSError), path.open("rb") as f:
            f.seek(since)
            got = [_decode(p) for p in f.read().split(b"\n")]
    kept = [line.strip()[:300] for line in got if line.strip()][-lines:]
    if not kept:
        return None
    text = " | ".join(kept)
    return text if len(text) <= max_chars else "…" + text[-max_chars:]


def log_path(log_dir: Path, service_id: str, stream: Stream) -> Path:
    return log_dir / f"{service_id.replace('/', '.')}{SUFFIX[stream]}"  # a replica web/2: web.2.*.log


#: how often a file follow looks for new lines when there were none (a read of an unchanged file is one stat and
#: one empty read: at 20 a second per follower it is noise, and it bounds the follow's latency)
FOLLOW_POLL = 0.05
#: how often the worker's shipper looks for new lines (one scan of the log directory per pass)
SHIP_INTERVAL = 0.1


class FileLogSource:
    """Logs read straight from this host's files."""

    name: Final = "file"

    def __init__(self, log_dir: Path, *, poll: float = FOLLOW_POLL) -> None:
        self.log_dir = Path(log_dir)
        self.poll = poll

    def has(self, service_id: str) -> bool:
        return any(log_path(self.log_dir, service_id, s).exists() for s in STREAMS)

    async def tail(self, service_id: str, lines: int, streams: Sequence[Stream] = STREAMS) -> list[LogLine]:
        out: list[LogLine] = []
        for stream in streams:
            path = log_path(self.log_dir, service_id, stream)
            text = await asyncio.to_thread(tail_file, path, lines)
            out.extend(LogLine(stream, t) for t in text)
        return out

    async def follow(self, service_id: str, streams: Sequence[Stream] = STREAMS) -> AsyncIterator[LogLine]:
        """New lines from now on, until the caller stops iterating."""
        readers = {s: _FileReader(log_path(self.log_dir, service_id, s), at_end=True) for s in streams}
        while True:
            got = False
            for stream, reader in readers.items():
                for raw in await asyncio.to_thread(reader.read_lines):
                    got = True
                    yield LogLine(stream, _decode(raw))
            if not got:
                await asyncio.sleep(self.poll)


class _FileReader:
    """Complete lines appended to one file since the last call; survives copy-truncate and late creation."""

    def __init__(
        self, path: Path, *, at_end: bool, offset: int | None = None, inode: int | None = None, mid_line: bool = False
    ) -> None:
        self.path = path
        self.mid_line = mid_line  # the offset may fall inside a line: drop the first piece read
        self.inode = inode
        self.offset = offset if offset is not None else (self._size() if at_end else 0)
        if self.inode is None:
            with contextlib.suppress(OSError):
                self.inode = path.stat().st_ino
        self.partial = b""

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read_lines(self, limit: int = 1 << 20) -> list[bytes]:
        try:
            st = self.path.stat()
        except OSError:
            return []
        if self.inode is not None and st.st_ino != self.inode:  # a new file under the same name
            self.offset, self.partial = 0, b""
        self.inode = st.st_ino
        if st.st_size < self.offset:  # truncated by rotation: read the new content from the start
            self.offset, self.partial, self.mid_line = 0, b"", False
        if st.st_size == self.offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(min(limit, st.st_size - self.offset))
        self.offset += len(data)
        data = self.partial + data
        parts = data.split(b"\n")
        self.partial = parts.pop()
        if self.mid_line and parts:
            parts, self.mid_line = parts[1:], False
        if len(self.partial) > MAX_LINE:  # a line with no end in sight: hand out what we have
            parts.append(self.partial)
            self.partial = b""
        return parts


class RedisLogSource:
    """Logs shipped to Redis Streams by the workers (:class:`LogShipper`)."""

    name: Final = "redis"

    def __init__(self, redis: Any, *, prefix: str = "windflow:logs:") -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, service_id: str) -> str:
        return f"{self.prefix}{service_id}"

    async def has(self, service_id: str) -> bool:
        return bool(await self.redis.exists(self.key(service_id)))

    @staticmethod
    def _line(entry_id: Any, fields: dict[Any, Any]) -> LogLine:
        def text(name: str) -> str:
            value = fields.get(name.encode(), fields.get(name, b""))
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

        stream: Stream = "stderr" if text("stream") == "stderr" else "stdout"
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        at = datetime.fromtimestamp(int(eid.split("-", 1)[0]) / 1000, UTC)
        return LogLine(stream, text("line"), at)

    async def tail(self, service_id: str, lines: int, streams: Sequence[Stream] = STREAMS) -> list[LogLine]:
        wanted = set(streams)
        out: list[LogLine] = []
        last = "+"
        while len(out) < lines:
            batch = await self.redis.xrevrange(self.key(service_id), max=last, min="-", count=max(lines, 100))
            if not batch:
                break
            for entry_id, fields in batch:
                item = self._line(entry_id, fields)
                if item.stream in wanted:
                    out.append(item)
            eid = batch[-1][0].decode() if isinstance(batch[-1][0], bytes) else str(batch[-1][0])
            last = "(" + eid
            if len(batch) < max(lines, 100):
                break
        return list(reversed(out[:lines]))

    async def follow(self, service_id: str, streams: Sequence[Stream] = STREAMS) -> AsyncIterator[LogLine]:
        wanted = set(streams)
        last = "$"
        while True:
            reply = await self.redis.xread({self.key(service_id): last}, block=1000, count=500)
            for _key, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    item = self._line(entry_id, fields)
                    if item.stream in wanted:
                        yield item


class LogShipper:
    """Worker side: append new lines of every service log in ``log_dir`` to its Redis stream."""

    def __init__(
        self,
        redis: Any,
        log_dir: Path,
        *,
        prefix: str = "windflow:logs:",
        maxlen: int = 5000,
        interval: float = SHIP_INTERVAL,
    ) -> None:
        self.redis = redis
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self.maxlen = maxlen
        self.interval = interval
        self._readers: dict[str, _FileReader] = {}

    @property
    def offsets_key(self) -> str:
        return f"{self.prefix}offsets"

    def _files(self) -> Iterable[tuple[str, Stream, Path]]:
        try:
            entries = list(os.scandir(self.log_dir))
        except OSError:
            return []
        out = []
        for entry in entries:
            for stream, suffix in SUFFIX.items():
                if entry.name.endswith(suffix) and entry.is_file():
                    # a replica's file web.2.out.log is service web/2 (service ids hold no '.')
                    out.append((entry.name[: -len(suffix)].replace(".", "/"), stream, Path(entry.path)))
        return out

    async def _reader(self, name: str, path: Path) -> _FileReader:
        reader = self._readers.get(name)
        if reader is None:
            saved = await self.redis.hget(self.offsets_key, name)
            offset = inode = None
            if saved:
                text = saved.decode() if isinstance(saved, bytes) else str(saved)
                with contextlib.suppress(ValueError):
                    ino, off = text.split(":", 1)
                    inode, offset = int(ino), int(off)
            # first sight without a saved offset: ship the file's recent past too (its last 64 KiB)
            start = offset if offset is not None else max(0, _size(path) - 65536)
            reader = self._readers[name] = _FileReader(
                path, at_end=False, offset=start, inode=inode, mid_line=offset is None and start > 0
            )
        return reader

    async def ship_once(self) -> int:
        """One pass over the log files; returns the number of lines shipped."""
        shipped = 0
        for service_id, stream, path in self._files():
            name = path.name
            reader = await self._reader(name, path)
            raw_lines = await asyncio.to_thread(reader.read_lines)
            if not raw_lines:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for raw in raw_lines:
                pipe.xadd(
                    f"{self.prefix}{service_id}",
                    {"stream": stream, "line": _decode(raw)},
                    maxlen=self.maxlen,
                    approximate=True,
                )
            pipe.hset(self.offsets_key, name, f"{reader.inode or 0}:{reader.offset - len(reader.partial)}")
            await pipe.execute()
            shipped += len(raw_lines)
        return shipped

    async def run(self) -> None:
        """Ship until cancelled; Redis errors are logged and retried on the next pass."""
        while True:
            try:
                await self.ship_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: keep the offsets, try again later
                log.warning("log shipping failed: %s", exc)
            await asyncio.sleep(self.interval)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
