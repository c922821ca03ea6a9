"""Exec health checks: run ``spec.command``; healthy if it exits 0 within ``spec.timeout``.

The command runs in its own process group; on timeout the whole group gets SIGKILL and the probe returns
at once (the exit is reaped later through a pidfd, so no zombie is left). No thread per probe: output is
read with ``loop.add_reader`` and the exit is seen through ``os.pidfd_open`` (polling where missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid, DriverFailed
from windflow.domain.models import ExecHealth, HealthSpec, ProbeKind
from windflow.domain.redaction import redact_text
from windflow.domain.results import ProbeResult
from windflow.drivers.environment import clean_env, identity

OUTPUT_TAIL = 2048
MESSAGE_TAIL = 300
POLL_FALLBACK = 0.02


def _exit_status(pidfd: int | None, popen: subprocess.Popen[bytes]) -> tuple[int | None, int | None] | None:
    """Reap the child if it exited: (exit_code, signal), or None while it runs."""
    try:
        if pidfd is not None:
            res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        else:
            res = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return (None, None)
    if res is None:
        return None
    if res.si_code == os.CLD_EXITED:
        popen.returncode = res.si_status
        return (res.si_status, None)
    popen.returncode = -res.si_status
    return (None, res.si_status)


class _Child:
    """A spawned probe command: its exit future, output tail, and clean-up."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.popen = popen
        self.loop = loop
        self.exited: asyncio.Future[tuple[int | None, int | None]] = loop.create_future()
        self.tail = bytearray()
        assert popen.stdout is not None
        self.out_fd = popen.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        loop.add_reader(self.out_fd, self._on_output)
        self.reading = True
        self.poller: asyncio.Task[None] | None = None
        try:
            self.pidfd: int | None = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        if self.pidfd is not None:
            loop.add_reader(self.pidfd, self._on_exit)
        else:
            self.poller = loop.create_task(self._poll())

    def _on_output(self) -> None:
        try:
            chunk = os.read(self.out_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._stop_reading()
            return
        self.tail += chunk
        if len(self.tail) > 2 * OUTPUT_TAIL:
            del self.tail[:-OUTPUT_TAIL]

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.out_fd)
            assert self.popen.stdout is not None
            self.popen.stdout.close()

    def _on_exit(self) -> None:
        status = _exit_status(self.pidfd, self.popen)
        if status is None:
            return
        self._done(status)

    async def _poll(self) -> None:
        while not self.exited.done():
            status = _exit_status(None, self.popen)
            if status is not None:
                self._done(status)
                return
            await asyncio.sleep(POLL_FALLBACK)

    def _done(self, status: tuple[int | None, int | None]) -> None:
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if not self.exited.done():
            self.exited.set_result(status)

    def kill(self) -> None:
        """SIGKILL the group; the exit watch stays registered and reaps the leader when it dies."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._stop_reading()

    def output(self) -> str:
        # drain what is already buffered in the pipe
        if self.reading:
            with contextlib.suppress(OSError):
                while chunk := os.read(self.out_fd, 65536):
                    self.tail += chunk
            self._stop_reading()
        return bytes(self.tail[-OUTPUT_TAIL:]).decode("utf-8", errors="replace")


class ExecProbe:
    kind = ProbeKind.EXEC

    async def check(self, spec: HealthSpec) -> ProbeResult:
        if not isinstance(spec, ExecHealth):
            raise ConfigInvalid(f"{type(self).__name__} cannot run a {spec.kind} check")
        started = time.perf_counter()
        try:
            who = identity(spec.user, spec.group)
        except DriverFailed as exc:
            return _result(False, started, exc.message)
        env = clean_env(extra=spec.env, home=who.home)  # never the worker's environment
        argv = list(spec.command)
        if "/" not in argv[0]:
            found = shutil.which(argv[0], path=env.get("PATH", os.defpath))
            if found is None:
                return _result(False, started, f"executable {argv[0]!r} not found on PATH")
            argv[0] = found
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            return _result(False, started, f"working directory {spec.cwd!r} does not exist")
        loop = asyncio.get_running_loop()
        try:
            popen = subprocess.Popen(  # argv list, never a shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                user=who.uid,
                group=who.gid,
                extra_groups=who.extra_groups,
            )
        except OSError as exc:
            return _result(False, started, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
        child = _Child(popen, loop)
        try:
            async with asyncio.timeout(spec.timeout):
                code, sig = await asyncio.shield(child.exited)
        except TimeoutError:
            child.kill()
            return _result(False, started, f"timed out after {format_duration(spec.timeout)} (process group killed)")
        except BaseException:
            child.kill()
            raise
        latency = time.perf_counter() - started
        # the leader exited: anything it left behind in its group is part of the check, and must go
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        output = child.output().strip()
        last = redact_text(output.splitlines()[-1][-MESSAGE_TAIL:]) if output else ""
        suffix = f": {last}" if last else ""
        if sig is not None:
            return _result(False, started, f"killed by signal {sig}{suffix}", latency)
        if code != 0:
            return _result(False, started, f"exit {code}{suffix}", latency)
        return _result(True, started, f"exit 0 in {latency * 1000:.0f} ms{suffix}", latency)


def _result(healthy: bool, started: float, message: str, latency: float | None = None) -> ProbeResult:
    if latency is None:
        latency = time.perf_counter() - started
    return ProbeResult(
        healthy=healthy, latency_ms=round(latency * 1000, 3), message=message, checked_at=datetime.now(UTC)
    )
