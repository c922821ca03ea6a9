"""The ``process`` driver: a local process started detached, logged to capped files, re-adopted after restarts.

How it works

* **Detached.** The child runs in its own session and process group (``start_new_session=True``) with
  stdin on ``/dev/null``, so it survives the worker that started it. Stop signals go to the whole group.
* **State file.** ``data_dir/run/{service}.json`` holds pid, pgid, the process start time (field 22 of
  ``/proc/PID/stat``, clock ticks since boot), the boot id and the command. A process is "ours" only if
  the pid is alive *and* its start time and boot id match, so a recycled pid is never mistaken for ours
  (this machine's pid_max can be as low as 32768). A new driver instance (a restarted worker) re-adopts
  the process from this file: status, stop and wait_exit work on it.
* **No second spawn after a crash.** Before it forks, the driver writes the state file with a fresh spawn
  token and no pid, and hands the token to the child in ``WINDFLOW_SPAWN_TOKEN``. A worker killed between the
  fork and recording the pid leaves that file behind; the next driver finds the process by its token in
  ``/proc/PID/environ`` and adopts it instead of starting the service a second time.
* **Exit seen at once.** Every tracked process gets a pidfd (``os.pidfd_open``) registered with the
  event loop (``loop.add_reader``). When it turns readable the process has exited; the driver then reaps
  it with ``waitid(P_PIDFD)`` if it is our child (exit code and signal known, no zombie left behind) or,
  for an adopted process, records the exit with an unknown code. A zombie (``Z`` in ``/proc/PID/stat``:
  its parent, here possibly a PID 1 that never reaps, has not collected it) counts as exited; liveness is
  never judged by ``kill(pid, 0)``. Where pidfds are unavailable the driver polls every 50 ms instead.
* **Logs.** stdout and stderr go straight to ``data_dir/logs/{service}.out.log`` / ``.err.log``, opened
  ``O_APPEND`` by the child, so logging keeps working while no worker runs. Size is capped by *copy-
  truncate*: when a file is over ``log_max_bytes`` its last ``log_max_bytes`` bytes are copied to
  ``{file}.1`` and the file is truncated in place (the child's O_APPEND writes continue at the new end).
  The check runs before each start, on every ``status`` call and every ``log_check_interval`` seconds
  while ``wait_exit`` is watching. Honest limits: between two checks a chatty service can overshoot the
  cap, and lines written during the copy itself may be lost (as with logrotate's ``copytruncate``).
  If a log file cannot be opened (unwritable directory) or the log file system is full (less than
  ``LOG_MIN_FREE`` left: the child's first write would fail, and many programs exit on that), the service
  still starts with that stream on ``/dev/null``; the start result's message and every ``status`` say so.
* **A stop survives its driver.** Before the stop signal is sent, the state file records it (signal, when,
  and the deadline of its grace). A driver killed during the grace (a worker SIGKILL) leaves the stop
  half-done; the next stop of that process, in a new driver, resumes it: no second stop signal, the SIGKILL of
  the group at the recorded deadline, not a whole new grace after it.
* **Concurrency.** start/stop/restart hold an ``asyncio.Lock`` per service; one driver instance is meant
  to be used from one event loop (the worker's).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid, DriverFailed
from windflow.domain.models import DriverKind, ProcessConfig, ServiceSpec, is_unit_id
from windflow.domain.results import DriverResult, ExitInfo, RunStatus, ServiceStatus
from windflow.drivers.environment import clean_env, identity
from windflow.service_logs import last_error_lines

__all__ = [
    "ProcStat",
    "ProcessDriver",
    "boot_id",
    "describe_exit",
    "group_members",
    "read_proc_stat",
    "resolve_command",
    "watch_exit",
]

T = TypeVar("T")

STATE_VERSION = 1
SPAWN_TOKEN_ENV = "WINDFLOW_SPAWN_TOKEN"
_Stream = IO[bytes] | int  # an open file handed to the child, or subprocess.DEVNULL
POLL_FALLBACK = 0.05
#: how long stop waits for the process to vanish after SIGKILL before giving up
KILL_WAIT = 5.0
#: a log file system with less free space than this counts as full: the streams go to /dev/null instead, or the
#: service's first write would fail (ENOSPC), and many programs exit on a failed write to stdout
LOG_MIN_FREE = 1 << 20


def file_name(service_id: str) -> str:
    """The name of a service's state and log files: its id, a replica's ``web/2`` as ``web.2`` (ids hold no '.')."""
    return service_id.replace("/", ".")


# ---------------------------------------------------------------------------------------------- /proc


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the driver needs."""

    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), T, ...
    pgid: int
    starttime: int  # clock ticks after boot

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X", "x")


def read_proc_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/PID/stat``; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or ')'
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcStat(pid=pid, state=fields[0].decode(), pgid=int(fields[2]), starttime=int(fields[19]))
    except (IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, found by scanning /proc."""
    try:
        os.killpg(pgid, 0)  # cheap: no process at all in the group means no /proc scan
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # someone else's processes are in it: scan to tell
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_proc_stat(int(entry))
            if stat is not None and stat.pgid == pgid and not stat.exited:
                members.append(stat.pid)
    return members


def spawned_with(token: str) -> int | None:
    """The live process group leader started with ``SPAWN_TOKEN_ENV=token`` in its environment (a /proc scan,
    only after a crash in the middle of a spawn)."""
    needle = f"{SPAWN_TOKEN_ENV}={token}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                found = needle in fh.read().split(b"\0")
        except OSError:
            continue
        if found:
            stat = read_proc_stat(int(entry))
            if stat is not None and stat.pgid == stat.pid and not stat.exited:  # its children inherit the token
                return stat.pid
    return None


def _has_token(pid: int, token: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"{SPAWN_TOKEN_ENV}={token}".encode() in fh.read().split(b"\0")
    except OSError:
        return False


_BOOT_ID: str | None = None
_BOOT_TIME: float | None = None
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def boot_id() -> str:
    """This boot's random id: start times are relative to boot, so they only compare within one boot."""
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            _BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            _BOOT_ID = ""
    return _BOOT_ID


def _boot_time() -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        _BOOT_TIME = 0.0
        with contextlib.suppress(OSError), open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    _BOOT_TIME = float(line.split()[1])
                    break
    return _BOOT_TIME


def _started_at(starttime: int) -> datetime:
    return datetime.fromtimestamp(_boot_time() + starttime / _CLK_TCK, tz=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------- exits


def describe_exit(exit_code: int | None, sig: int | None) -> str:
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by signal {sig} ({name})"
    if exit_code is None:
        return "exited (not our child: exit status unknown)"
    return f"exited with code {exit_code}"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _reap(pid: int, pidfd: int | None) -> tuple[bool, int | None, int | None]:
    """Collect the exit status of ``pid`` if it is our child: (reaped, exit_code, signal)."""
    try:
        if pidfd is not None:
            res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        else:
            res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return False, None, None  # not our child (adopted), or already reaped elsewhere
    except OSError:
        return False, None, None
    if res is None:
        return False, None, None
    if res.si_code == os.CLD_EXITED:
        return True, res.si_status, None
    return True, None, res.si_status  # CLD_KILLED / CLD_DUMPED


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


@dataclass(slots=True)
class _ExitWatch:
    """Calls ``on_exit(exit_code, signal)`` once, as soon as ``pid`` exits (reaping it if it is our child)."""

    pid: int
    starttime: int | None
    on_exit: Callable[[int | None, int | None], None]
    loop: asyncio.AbstractEventLoop
    pidfd: int | None = None
    poller: asyncio.Task[None] | None = None
    done: bool = False

    def start(self) -> None:
        self.pidfd = _pidfd_open(self.pid)
        if self.pidfd is not None:
            # the pid may have been recycled between our identity check and pidfd_open: check again
            stat = read_proc_stat(self.pid)
            if self.starttime is not None and (stat is None or stat.starttime != self.starttime):
                os.close(self.pidfd)
                self.pidfd = None
                self._fire(None, None)
                return
            self.loop.add_reader(self.pidfd, self._on_readable)
        else:
            self.poller = self.loop.create_task(self._poll())

    def _on_readable(self) -> None:
        reaped, code, sig = _reap(self.pid, self.pidfd)
        self._fire(code, sig)

    async def _poll(self) -> None:
        while not self.done:
            stat = read_proc_stat(self.pid)
            if stat is None or (self.starttime is not None and stat.starttime != self.starttime):
                self._fire(None, None)  # gone (reaped elsewhere), or the pid now belongs to someone else
                return
            if stat.exited:
                _, code, sig = _reap(self.pid, None)  # identity checked above: safe to reap by pid
                self._fire(code, sig)
                return
            await asyncio.sleep(POLL_FALLBACK)

    def _fire(self, code: int | None, sig: int | None) -> None:
        if self.done:
            return
        self.close()
        self.on_exit(code, sig)

    def close(self) -> None:
        """Stop watching (the process is left alone)."""
        self.done = True
        if self.pidfd is not None:
            if not self.loop.is_closed():
                self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if self.poller is not None and not self.poller.done() and self.poller is not asyncio.current_task():
            self.poller.cancel()


def watch_exit(
    pid: int, on_exit: Callable[[int | None, int | None], None], *, starttime: int | None = None
) -> _ExitWatch:
    """Watch ``pid`` on the running loop; returns the watch (``close()`` it to stop watching)."""
    watch = _ExitWatch(pid=pid, starttime=starttime, on_exit=on_exit, loop=asyncio.get_running_loop())
    watch.start()
    return watch


# ---------------------------------------------------------------------------------------------- commands


def resolve_command(argv: list[str], env: dict[str, str], cwd: str | None = None) -> list[str]:
    """Resolve ``argv[0]`` without a slash on the PATH of the *final* environment (not the worker's)."""
    exe = argv[0]
    if "/" in exe:
        return list(argv)
    path = env.get("PATH", os.defpath)
    found = shutil.which(exe, path=path)
    if found is None:
        where = f" (cwd {cwd})" if cwd else ""
        raise DriverFailed(f"executable {exe!r} not found on PATH {path!r}{where}", details={"path": path})
    return [found, *argv[1:]]


# ---------------------------------------------------------------------------------------------- logs


def cap_log(path: Path, max_bytes: int) -> bool:
    """Copy-truncate ``path`` when it is over ``max_bytes``: keep its tail in ``path.1``. True if rotated."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size <= max_bytes:
        return False
    backup = path.with_name(path.name + ".1")
    tmp = path.with_name(path.name + ".1.tmp")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            src.seek(max(0, size - max_bytes))
            remaining = max_bytes
            while remaining > 0:
                chunk = src.read(min(1 << 20, remaining))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
        os.replace(tmp, backup)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
    # truncate even if the backup failed: a full disk is exactly when the cap matters most
    try:
        os.truncate(path, 0)
    except OSError:
        return False
    return True


def _free_bytes(path: Path) -> int | None:
    """Space an unprivileged writer may still use on ``path``'s file system; None when unknown."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------------------------------- driver


@dataclass(eq=False)
class _Proc:
    """One process this driver tracks: started here (``own``) or re-adopted from a state file."""

    service_id: str
    pid: int
    pgid: int
    starttime: int
    command: list[str]
    started_at: datetime
    own: bool
    popen: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    log_max_bytes: int = 10 * 1024 * 1024
    err_start: int | None = None  # size of the stderr log when this process started (None: unknown, adopted)
    out_start: int | None = None  # the same for stdout
    exit: ExitInfo | None = None
    exited: asyncio.Future[ExitInfo] | None = None
    watch: _ExitWatch | None = None
    stopping: bool = False
    notes: list[str] = field(default_factory=list)  # what went wrong at start (logs), repeated by status()
    token: str | None = None  # the spawn token in its environment (and its children's): see _kill_leftovers

    def is_alive(self) -> bool:
        if self.exit is not None:
            return False
        stat = read_proc_stat(self.pid)
        return stat is not None and stat.starttime == self.starttime and not stat.exited


async def _finish_despite_cancel(work: Awaitable[T]) -> tuple[T, bool]:
    """Await ``work`` to its end even if the caller is cancelled meanwhile; returns (result, was_cancelled).

    For a spawn: once the fork has begun the process will exist, and it must not exist untracked."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(future), cancelled
        except asyncio.CancelledError:
            if future.cancelled():
                raise
            cancelled = True


class ProcessDriver:
    """Starts, stops and watches local processes; see the module docstring for the design."""

    kind = DriverKind.PROCESS

    def __init__(self, *, data_dir: Path, log_check_interval: float = 5.0, kill_wait: float = KILL_WAIT) -> None:
        self.data_dir = Path(data_dir)
        self.run_dir = self.data_dir / "run"
        self.log_dir = self.data_dir / "logs"
        self.log_check_interval = log_check_interval
        self.kill_wait = kill_wait
        self._procs: dict[str, _Proc] = {}
        self._spawning: set[str] = set()  # services this driver is forking right now (their state says "spawning")
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ public API

    async def start(self, service: ServiceSpec) -> DriverResult:
        cfg = self._config(service)
        async with self._lock(service.id):
            proc, _ = self._lookup(service.id)
            if proc is not None and proc.is_alive():
                return DriverResult(
                    ok=True,
                    action="start",
                    changed=False,
                    pid=proc.pid,
                    started_at=proc.started_at,
                    message=f"already running (pid {proc.pid})",
                )
            self._kill_leftovers(service.id)  # what a main that died unseen left behind holds ports and files
            return await self._spawn(service, cfg, action="start")

    async def stop(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        cfg = self._config(service)
        async with self._lock(service.id):
            return await self._stop(service.id, cfg, grace=grace, action="stop")

    async def restart(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        cfg = self._config(service)
        async with self._lock(service.id):
            stopped = await self._stop(service.id, cfg, grace=grace, action="restart")
            result = await self._spawn(service, cfg, action="restart")
            before = f"{stopped.message}; " if stopped.changed else ""
            return result.model_copy(update={"message": f"{before}{result.message}"})

    async def status(self, service: ServiceSpec) -> ServiceStatus:
        cfg = self._config(service)
        proc, note = self._lookup(service.id)
        if proc is None:
            return ServiceStatus(status=RunStatus.STOPPED, message=note or "not started")
        self._cap_logs(proc, cfg.log_max_bytes)
        if proc.is_alive():
            return ServiceStatus(
                status=RunStatus.RUNNING,
                pid=proc.pid,
                started_at=proc.started_at,
                message="; ".join([f"running (pid {proc.pid})", *proc.notes]),
            )
        reason = proc.exit.message if proc.exit is not None else "exited"
        return ServiceStatus(
            status=RunStatus.STOPPED, pid=proc.pid, started_at=proc.started_at, message=f"pid {proc.pid} {reason}"
        )

    async def kill_leftovers(self, service: ServiceSpec) -> int:
        """After the service's main process died: SIGKILL what is left of its process group (a child it started),
        also for a process adopted from an earlier worker. Returns how many processes were in the group."""
        async with self._lock(service.id):
            return self._kill_leftovers(service.id)

    async def wait_exit(self, service: ServiceSpec) -> ExitInfo | None:
        """Return as soon as the service's process exits; at once if it is not running."""
        cfg = self._config(service)
        proc, note = self._lookup(service.id)
        if proc is None:
            return ExitInfo(pid=0, exited_at=_now(), message=note or "not running")
        fut = self._exit_future(proc)
        while not fut.done():
            # asyncio.wait never cancels ``fut``: a cancelled waiter leaves the watch for the others
            await asyncio.wait([fut], timeout=self.log_check_interval)
            if not fut.done():
                self._cap_logs(proc, cfg.log_max_bytes)
        return fut.result()

    def close(self) -> None:
        """Stop watching every process (they keep running; a new driver instance can re-adopt them)."""
        for proc in self._procs.values():
            if proc.watch is not None:
                proc.watch.close()
                proc.watch = None
        self._procs.clear()

    # ------------------------------------------------------------------ paths and state

    def state_path(self, service_id: str) -> Path:
        return self.run_dir / f"{file_name(service_id)}.json"

    def log_paths(self, service_id: str) -> tuple[Path, Path]:
        name = file_name(service_id)
        return self.log_dir / f"{name}.out.log", self.log_dir / f"{name}.err.log"

    def log_tail(
        self,
        service_id: str,
        *,
        lines: int = 20,
        stream: str = "stderr",
        max_bytes: int = 16 * 1024,
        max_line: int = 500,
    ) -> list[str]:
        """The last ``lines`` lines of a service's log (``stdout`` or ``stderr``), each cut to ``max_line``
        characters: of its current (or last) process's output when this driver started it, else of the file;
        read from the file's last ``max_bytes`` only. Empty when there is no log."""
        out, err = self.log_paths(service_id)
        path = err if stream == "stderr" else out
        proc = self._procs.get(service_id)
        start = (proc.err_start if stream == "stderr" else proc.out_start) if proc is not None else None
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                if start is None or start > size:  # unknown (adopted), or the log was rotated since
                    start = 0
                begin = max(start, size - max_bytes)
                fh.seek(begin)
                data = fh.read()
        except OSError:
            return []
        text = data.decode("utf-8", "replace").splitlines()
        if begin > start and text:
            text = text[1:]  # the first line was cut by the seek
        kept = [line if len(line) <= max_line else line[:max_line] + "…" for line in text if line.strip()]
        return kept[-lines:] if lines > 0 else []

    def _lock(self, service_id: str) -> asyncio.Lock:
        lock = self._locks.get(service_id)
        if lock is None:
            lock = self._locks[service_id] = asyncio.Lock()
        return lock

    @staticmethod
    def _config(service: ServiceSpec) -> ProcessConfig:
        if not isinstance(service.config, ProcessConfig):
            raise ConfigInvalid(f"service {service.id!r}: the process driver needs a process config")
        if not is_unit_id(service.id):
            raise ConfigInvalid(f"invalid service id {service.id!r}")
        return service.config

    def _read_state(self, service_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_path(service_id).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return None
        return data

    def _write_state(self, proc: _Proc, *, cwd: str | None) -> None:
        self._store_state(
            proc.service_id,
            {
                "pid": proc.pid,
                "pgid": proc.pgid,
                "starttime": proc.starttime,
                "started_at": proc.started_at.isoformat(),
                "command": proc.command,
                "cwd": cwd,
                "logs": [str(p) for p in proc.logs],
                "notes": proc.notes,
                "token": proc.token,
            },
        )

    def _store_state(self, service_id: str, fields: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = {"version": STATE_VERSION, "service": service_id, "boot_id": boot_id(), **fields}
        path = self.state_path(service_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _adopt_spawn(self, service_id: str, state: dict[str, Any]) -> dict[str, Any] | None:
        """A state file written just before a fork whose driver died before recording the pid: the process it
        started, found by its spawn token and recorded now; None when that spawn never got a process running."""
        if state.get("boot_id") != boot_id():
            return None
        pid = spawned_with(str(state["spawning"]))
        stat = read_proc_stat(pid) if pid is not None else None
        if stat is None:  # nothing came of it: forget it, so the next lookup does not scan /proc again
            with contextlib.suppress(OSError):
                self.state_path(service_id).unlink()
            return None
        recorded = ("version", "service", "boot_id", "spawning")  # _store_state writes the first three itself
        fields = {key: value for key, value in state.items() if key not in recorded}
        fields.update({"pid": stat.pid, "pgid": stat.pid, "starttime": stat.starttime, "token": state["spawning"]})
        with contextlib.suppress(OSError):
            self._store_state(service_id, fields)
        return {**state, **fields}

    def _forget_state(self, service_id: str, pid: int) -> None:
        state = self._read_state(service_id)
        if state is not None and state.get("pid") == pid:
            with contextlib.suppress(OSError):
                self.state_path(service_id).unlink()

    def _lookup(self, service_id: str) -> tuple[_Proc | None, str]:
        """The tracked process of ``service_id`` (live or exited), adopting it from the state file if needed.

        Returns ``(None, reason)`` when nothing of ours is there.
        """
        known = self._procs.get(service_id)
        if known is not None and known.exit is None:
            return known, ""
        state = self._read_state(service_id)
        if state is not None and "spawning" in state:
            if service_id in self._spawning:  # this driver's own fork, not recorded yet
                return known, "starting"
            state = self._adopt_spawn(service_id, state)
        if state is None:
            return known, "" if known is not None else "not started"
        try:
            pid, pgid, starttime = int(state["pid"]), int(state["pgid"]), int(state["starttime"])
        except (KeyError, TypeError, ValueError):
            return known, "state file unreadable"
        if known is not None and known.pid == pid and known.starttime == starttime:
            return known, ""  # the one we already saw exit
        if state.get("boot_id") != boot_id():
            return known, f"pid {pid} is from an earlier boot"
        stat = read_proc_stat(pid)
        if stat is None:
            return known, f"pid {pid} is gone"
        if stat.starttime != starttime:
            return known, f"pid {pid} now belongs to another process (start time differs)"
        started = state.get("started_at")
        proc = _Proc(
            service_id=service_id,
            pid=pid,
            pgid=pgid,
            starttime=starttime,
            command=list(state.get("command") or []),
            started_at=datetime.fromisoformat(started) if isinstance(started, str) else _started_at(starttime),
            own=False,
            logs=[Path(p) for p in state.get("logs") or []],
            notes=[str(n) for n in state.get("notes") or []],
            token=state.get("token") if isinstance(state.get("token"), str) else None,
        )
        self._procs[service_id] = proc
        if stat.exited:
            # a zombie: exited for all purposes. Reap it if it happens to be our child (same process as the
            # driver that started it); otherwise its parent (maybe a PID 1 that never reaps) keeps it.
            proc.exited = asyncio.get_running_loop().create_future()
            reaped, code, sig = _reap(pid, None)
            self._mark_exited(proc, code, sig, note="" if reaped else "zombie")
        else:
            self._watch(proc)
        return proc, ""

    # ------------------------------------------------------------------ exit tracking

    def _watch(self, proc: _Proc) -> None:
        loop = asyncio.get_running_loop()
        proc.exited = loop.create_future()

        def on_exit(code: int | None, sig: int | None) -> None:
            self._mark_exited(proc, code, sig)

        proc.watch = watch_exit(proc.pid, on_exit, starttime=proc.starttime)

    def _exit_future(self, proc: _Proc) -> asyncio.Future[ExitInfo]:
        loop = asyncio.get_running_loop()
        if proc.exited is None or proc.exited.get_loop() is not loop:
            # first use on this loop (e.g. the driver was built before the worker's loop ran)
            if proc.watch is not None:
                proc.watch.close()
            fut: asyncio.Future[ExitInfo] = loop.create_future()
            if proc.exit is not None:
                fut.set_result(proc.exit)
                proc.exited = fut
            else:
                self._watch(proc)
        assert proc.exited is not None
        return proc.exited

    def _mark_exited(self, proc: _Proc, code: int | None, sig: int | None, *, note: str = "") -> None:
        if proc.exit is not None:
            return
        if proc.popen is not None and proc.popen.returncode is None:
            # tell subprocess we reaped it, or it would waitpid() a possibly recycled pid later
            proc.popen.returncode = -sig if sig is not None else (code if code is not None else -1)
        message = describe_exit(code, sig)
        if note == "zombie":
            message = "exited (zombie not reaped by its parent; exit status unknown)"
        if proc.stopping:
            message = f"stopped by windflow: {message}"
        elif sig is not None or code not in (0, None):
            # the reason is usually the last things the service said on stderr ("can't open file …"): up to 5
            # lines, capped in size
            cause = last_error_lines(self.log_paths(proc.service_id)[1], since=proc.err_start or 0)
            if cause:
                message = f"{message}: {cause}"
        proc.exit = ExitInfo(pid=proc.pid, exit_code=code, signal=sig, exited_at=_now(), message=message)
        if proc.watch is not None:
            proc.watch.close()
            proc.watch = None
        if proc.exited is not None and not proc.exited.done():
            proc.exited.set_result(proc.exit)

    # ------------------------------------------------------------------ start / stop

    def _open_logs(self, service_id: str, max_bytes: int) -> tuple[_Stream, _Stream, list[str], list[Path]]:
        """Open (append) the two log files; a stream that cannot be opened goes to /dev/null, with a note."""
        notes: list[str] = []
        opened: list[_Stream] = []
        paths: list[Path] = []
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            notes.append(f"log directory {self.log_dir} unusable ({exc.strerror or exc}): output goes to /dev/null")
            return subprocess.DEVNULL, subprocess.DEVNULL, notes, paths
        for path in self.log_paths(service_id):
            cap_log(path, max_bytes)
        free = _free_bytes(self.log_dir)
        if free is not None and free < LOG_MIN_FREE:
            notes.append(f"log disk full ({free} bytes free in {self.log_dir}): output goes to /dev/null")
            return subprocess.DEVNULL, subprocess.DEVNULL, notes, paths
        for path in self.log_paths(service_id):
            try:
                opened.append(open(path, "ab", buffering=0))  # handed to the child, closed below
                paths.append(path)
            except OSError as exc:
                notes.append(f"cannot open log {path} ({exc.strerror or exc}): that stream goes to /dev/null")
                opened.append(subprocess.DEVNULL)
        return opened[0], opened[1], notes, paths

    async def _spawn(self, service: ServiceSpec, cfg: ProcessConfig, *, action: str) -> DriverResult:
        who = identity(cfg.user, cfg.group)
        env = clean_env(extra=cfg.env, inherit=cfg.inherit_env, env_file=cfg.env_file, cwd=cfg.cwd, home=who.home)
        argv = resolve_command(cfg.command, env, cfg.cwd)
        out, err, notes, log_paths = self._open_logs(service.id, cfg.log_max_bytes)
        out_start, err_start = (_file_size(p) for p in self.log_paths(service.id))
        # recorded before the fork: a driver killed before it records the pid leaves what finds the process (a
        # failure to write it is reported by the write after the fork, which fails the same way)
        env[SPAWN_TOKEN_ENV] = token = uuid.uuid4().hex
        with contextlib.suppress(OSError):
            self._store_state(
                service.id,
                {
                    "spawning": token,
                    "started_at": _now().isoformat(),
                    "command": argv,
                    "cwd": cfg.cwd,
                    "logs": [str(p) for p in log_paths],
                    "notes": notes,
                },
            )
        self._spawning.add(service.id)
        try:
            # in a thread: a fork-exec from this big, many-threaded process takes milliseconds, and a burst of
            # starts (an initialization's level) would hold the event loop for all of them
            popen, cancelled = await _finish_despite_cancel(
                asyncio.to_thread(
                    subprocess.Popen,  # argv list, never a shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=cfg.cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                    user=who.uid,
                    group=who.gid,
                    extra_groups=who.extra_groups,
                )
            )
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.state_path(service.id).unlink()  # nothing was started
            detail = exc.strerror or str(exc)
            where = f" in {cfg.cwd}" if cfg.cwd and exc.errno == errno.ENOENT else ""
            raise DriverFailed(f"cannot start {argv[0]!r}{where}: {detail}", details={"command": argv}) from None
        finally:
            self._spawning.discard(service.id)  # from here on self._procs knows the process
            for stream in (out, err):
                if not isinstance(stream, int):
                    stream.close()
        stat = read_proc_stat(popen.pid)
        starttime = stat.starttime if stat is not None else 0
        proc = _Proc(
            service_id=service.id,
            pid=popen.pid,
            pgid=popen.pid,  # start_new_session: the child leads its own group
            starttime=starttime,
            command=argv,
            started_at=_now(),  # exact; the boot-time-derived one is only a fallback for adoption
            own=True,
            popen=popen,
            logs=log_paths,
            log_max_bytes=cfg.log_max_bytes,
            err_start=err_start,
            out_start=out_start,
            notes=list(notes),
            token=token,
        )
        self._procs[service.id] = proc
        self._watch(proc)
        try:
            self._write_state(proc, cwd=cfg.cwd)
        except OSError as exc:
            notes.append(f"state file not written ({exc.strerror or exc}): a restarted worker will not re-adopt it")
        if cancelled:  # the process exists and is tracked (a later stop finds it); now honour the cancel
            raise asyncio.CancelledError
        message = "; ".join([f"started pid {proc.pid}", *notes])
        return DriverResult(
            ok=True, action=action, changed=True, pid=proc.pid, started_at=proc.started_at, message=message
        )

    async def _stop(self, service_id: str, cfg: ProcessConfig, *, grace: float | None, action: str) -> DriverResult:
        proc, note = self._lookup(service_id)
        if proc is None or not proc.is_alive():
            changed = False
            if proc is not None:
                self._forget_state(service_id, proc.pid)
            message = f"not running ({proc.exit.message})" if proc is not None and proc.exit else "not running"
            if note and proc is None:
                message = f"not running ({note})"
            if proc is None:
                killed = self._kill_leftovers(service_id)
                if killed:
                    changed = True
                    message += f"; killed {killed} leftover process(es) of its group"
            if proc is not None and proc.pgid == proc.pid:
                # the leader died on its own; what it left in its group (a server a wrapper script started)
                # still holds ports and files. While any member lives the group id cannot be reused.
                leftovers = group_members(proc.pgid)
                if leftovers:
                    self._killpg(proc.pgid, signal.SIGKILL)
                    changed = True
                    message += f"; killed {len(leftovers)} leftover process(es) of its group"
            return DriverResult(ok=True, action=action, changed=changed, message=message)
        grace = cfg.stop_grace if grace is None else max(0.0, grace)
        sig = signal.Signals[cfg.stop_signal]
        fut = self._exit_future(proc)
        proc.stopping = True
        begun = self._stop_begun(proc)
        if begun is not None:  # a driver before this one sent the signal and died in the grace: resume its stop
            sig, deadline = begun
            grace = float(deadline - time.time())
            resumed = True
        else:
            resumed = False
            self._record_stop(proc, sig, grace)
            self._signal(proc, sig)
        forced = False
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, grace))
        except TimeoutError:
            forced = True
            self._signal(proc, signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout=self.kill_wait)
            except TimeoutError:
                raise DriverFailed(
                    f"pid {proc.pid} did not exit {format_duration(self.kill_wait)} after SIGKILL "
                    "(uninterruptible sleep?)",
                    details={"pid": proc.pid},
                ) from None
        # the leader is gone: take down anything it left in its group (workers, shells' children)
        if proc.pgid == proc.pid:
            self._killpg(proc.pgid, signal.SIGKILL)
        info = fut.result()
        self._forget_state(service_id, proc.pid)
        how = f"SIGKILL after {format_duration(grace)} grace" if forced else sig.name
        if resumed:
            how = f"{sig.name} sent before a worker restart; " + (
                "SIGKILL at the end of its grace" if forced else "exited within its grace"
            )
        outcome = info.message.removeprefix("stopped by windflow: ")
        return DriverResult(
            ok=True,
            action=action,
            changed=True,
            pid=proc.pid,
            exit_code=info.exit_code,
            message=f"stopped pid {proc.pid} ({how}; {outcome})",
        )

    def _record_stop(self, proc: _Proc, sig: signal.Signals, grace: float) -> None:
        """Write into the state file that the stop of ``proc`` begins now (signal, deadline of its grace)."""
        state = self._read_state(proc.service_id)
        if state is None or state.get("pid") != proc.pid or state.get("starttime") != proc.starttime:
            return  # not the process the state file describes (or none): nothing to resume later
        fields = {k: v for k, v in state.items() if k not in ("version", "service", "boot_id")}
        fields["stop"] = {"signal": sig.name, "at": time.time(), "deadline": time.time() + grace}
        with contextlib.suppress(OSError):
            self._store_state(proc.service_id, fields)

    def _stop_begun(self, proc: _Proc) -> tuple[signal.Signals, float] | None:
        """The signal and grace deadline of a stop of ``proc`` that an earlier driver began (see the module
        docstring); None when no stop of this very process was recorded."""
        state = self._read_state(proc.service_id)
        if (
            state is None
            or state.get("pid") != proc.pid
            or state.get("starttime") != proc.starttime
            or state.get("boot_id") != boot_id()
            or not isinstance(state.get("stop"), dict)
        ):
            return None
        stop = state["stop"]
        try:
            return signal.Signals[str(stop["signal"])], float(stop["deadline"])
        except (KeyError, TypeError, ValueError):
            return None

    def _kill_leftovers(self, service_id: str) -> int:
        """SIGKILL the group of a recorded process whose leader died while no driver watched it (a worker restart):
        its children (a server a wrapper script started) still hold ports and files. The group is known to be the
        service's only if a member carries the spawn token in its environment: while any member lives, its group
        id cannot be reused. Returns how many processes were in it."""
        state = self._read_state(service_id)
        if state is None or state.get("boot_id") != boot_id() or "spawning" in state:
            return 0
        token, pgid = state.get("token"), state.get("pgid")
        if not isinstance(token, str) or not isinstance(pgid, int):
            return 0
        leader = read_proc_stat(pgid)
        if leader is not None and not leader.exited and leader.starttime == state.get("starttime"):
            return 0  # the leader lives: a stop handles it
        members = group_members(pgid)
        if not any(_has_token(pid, token) for pid in members):
            return 0
        self._killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.state_path(service_id).unlink()
        return len(members)

    def _signal(self, proc: _Proc, sig: int) -> None:
        """Signal the process group, but only if the process still leads it (it did when we started it).

        A state file we did not write (or a process that is somehow not a group leader) gets the signal
        on its pid alone: never a group that may hold unrelated processes.
        """
        stat = read_proc_stat(proc.pid)
        if stat is None or stat.starttime != proc.starttime:
            return
        if stat.pgid == proc.pid == proc.pgid:
            self._killpg(proc.pgid, sig)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, sig)

    @staticmethod
    def _killpg(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _cap_logs(self, proc: _Proc, max_bytes: int) -> None:
        for path in proc.logs:
            cap_log(path, max_bytes)
