"""The ``command`` driver: user-given start / stop / restart / status commands (systemd units, init scripts, ssh).

Each command runs in its own process group with stdout and stderr merged into one pipe; the last
``OUTPUT_TAIL`` bytes are kept for the result. On timeout the whole group gets SIGKILL. A non-zero exit
raises :class:`DriverFailed` carrying the output; a timeout raises :class:`DriverUnavailable` (retryable).

Idempotency comes from the status command when there is one: ``start`` on a service whose status
command exits 0 returns ``changed=False`` without running ``start``; ``stop`` likewise when status
exits non-zero. Without a status command every call runs its command (which should be idempotent itself,
as ``systemctl start`` is).

A start command that leaves a process running in the background (``server &``) should redirect that
process's output (``>/dev/null 2>&1``): the driver stops reading the pipe when the command returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid, DriverFailed, DriverUnavailable
from windflow.domain.models import CommandConfig, DriverKind, ServiceSpec, ShellCommand
from windflow.domain.redaction import redact_text
from windflow.domain.results import DriverResult, ExitInfo, RunStatus, ServiceStatus
from windflow.drivers.environment import Identity, clean_env, identity
from windflow.drivers.process import KILL_WAIT, describe_exit, resolve_command, watch_exit

OUTPUT_TAIL = 8 * 1024
#: how long to keep reading output after the command exited (a straggler may hold the pipe open)
DRAIN_AFTER_EXIT = 0.5
#: how much output goes into an error message (the full tail is in ``details``)
MESSAGE_EXCERPT = 600


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    argv: list[str]
    exit_code: int | None
    signal: int | None
    output: str
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.exit_code == 0


async def run_captured(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str | None,
    timeout: float,
    tail_bytes: int = OUTPUT_TAIL,
    as_user: Identity | None = None,
) -> CommandOutcome:
    """Run ``argv`` in a new process group; keep the last ``tail_bytes`` of its output; kill the group on timeout.

    No thread per command: output is read with ``loop.add_reader`` and the exit is seen through a pidfd.
    Cancelling the caller kills the group too (the exit watch still reaps the process).
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    popen = _spawn_captured(argv, env=env, cwd=cwd, as_user=as_user)
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    os.set_blocking(fd, False)
    tail = bytearray()
    eof: asyncio.Future[None] = loop.create_future()
    exited: asyncio.Future[tuple[int | None, int | None]] = loop.create_future()

    def on_data() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(fd)
            if not eof.done():
                eof.set_result(None)
            return
        tail.extend(chunk)
        if len(tail) > 2 * tail_bytes:
            del tail[:-tail_bytes]

    def on_exit(code: int | None, sig: int | None) -> None:
        popen.returncode = -sig if sig is not None else (code if code is not None else -1)
        if not exited.done():
            exited.set_result((code, sig))

    loop.add_reader(fd, on_data)
    watch_exit(popen.pid, on_exit)
    try:
        timed_out = await _exit_or_kill(popen.pid, exited, timeout)
        await asyncio.wait([eof], timeout=DRAIN_AFTER_EXIT)
    finally:
        if not exited.done():  # cancelled: take the group down, the watch reaps the leader
            _killpg(popen.pid, signal.SIGKILL)
        loop.remove_reader(fd)
        popen.stdout.close()
    code, sig = exited.result() if exited.done() else (None, signal.SIGKILL)
    text = redact_text(bytes(tail[-tail_bytes:]).decode("utf-8", errors="replace"))
    return CommandOutcome(
        argv=argv, exit_code=code, signal=sig, output=text, timed_out=timed_out, duration=time.monotonic() - started
    )


def _spawn_captured(
    argv: list[str], *, env: dict[str, str], cwd: str | None, as_user: Identity | None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a list, never a shell: shell strings are wrapped by the caller) in its own process group,
    output and errors on one pipe, as ``as_user`` (switched in the child before the exec)."""
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            user=as_user.uid if as_user else None,
            group=as_user.gid if as_user else None,
            extra_groups=as_user.extra_groups if as_user else None,
        )
    except OSError as exc:
        raise DriverFailed(f"cannot run {argv[0]!r}: {exc.strerror or exc}", details={"command": argv}) from None


async def _exit_or_kill(pgid: int, exited: asyncio.Future[tuple[int | None, int | None]], timeout: float) -> bool:
    """Wait for the exit; past ``timeout`` kill the process group (and wait briefly for the exit). True if it
    timed out."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(exited)
        return False
    except TimeoutError:
        _killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), timeout=KILL_WAIT)
        return True


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _excerpt(output: str) -> str:
    text = output.strip()
    if not text:
        return ""
    if len(text) > MESSAGE_EXCERPT:
        text = "..." + text[-MESSAGE_EXCERPT:]
    return f": {text}"


class CommandDriver:
    """Runs the commands of a :class:`CommandConfig`. It cannot observe exits: ``wait_exit`` returns None."""

    kind = DriverKind.COMMAND

    async def start(self, service: ServiceSpec) -> DriverResult:
        cfg = self._config(service)
        if cfg.status is not None:
            status = await self._status(cfg.status)
            if status.status == RunStatus.RUNNING:
                return DriverResult(ok=True, action="start", changed=False, message="already running (status exit 0)")
        outcome = await self._run("start", cfg.start)
        return self._result("start", outcome)

    async def stop(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:  # noqa: ARG002
        # ``grace`` is the stop command's business (its own timeout bounds the call)
        cfg = self._config(service)
        if cfg.status is not None:
            status = await self._status(cfg.status)
            if status.status == RunStatus.STOPPED:
                return DriverResult(ok=True, action="stop", changed=False, message="not running (status non-zero)")
        outcome = await self._run("stop", cfg.stop)
        return self._result("stop", outcome)

    async def restart(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        cfg = self._config(service)
        if cfg.restart is not None:
            return self._result("restart", await self._run("restart", cfg.restart))
        stopped = await self.stop(service, grace=grace)
        started = self._result("restart", await self._run("start", cfg.start))
        output = "\n".join(part for part in (stopped.output, started.output) if part)[-OUTPUT_TAIL:]
        return started.model_copy(update={"output": output, "message": f"{stopped.message}; {started.message}"})

    async def status(self, service: ServiceSpec) -> ServiceStatus:
        cfg = self._config(service)
        if cfg.status is None:
            return ServiceStatus(status=RunStatus.UNKNOWN, message="no status command")
        return await self._status(cfg.status)

    async def wait_exit(self, service: ServiceSpec) -> ExitInfo | None:  # noqa: ARG002
        return None

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _config(service: ServiceSpec) -> CommandConfig:
        if not isinstance(service.config, CommandConfig):
            raise ConfigInvalid(f"service {service.id!r}: the command driver needs a command config")
        return service.config

    @staticmethod
    async def _run(action: str, cmd: ShellCommand) -> CommandOutcome:
        who = identity(cmd.user, cmd.group)
        env = clean_env(extra=cmd.env, home=who.home)  # never the worker's environment
        argv = ["/bin/sh", "-c", cmd.run] if isinstance(cmd.run, str) else resolve_command(cmd.run, env, cmd.cwd)
        outcome = await run_captured(argv, env=env, cwd=cmd.cwd, timeout=cmd.timeout, as_user=who)
        if outcome.timed_out:
            raise DriverUnavailable(
                f"{action} command timed out after {format_duration(cmd.timeout)} (process group killed)"
                f"{_excerpt(outcome.output)}",
                details={"output": outcome.output, "timeout": cmd.timeout},
            )
        if not outcome.ok:
            raise DriverFailed(
                f"{action} command failed: {describe_exit(outcome.exit_code, outcome.signal)}"
                f"{_excerpt(outcome.output)}",
                details={"exit_code": outcome.exit_code, "signal": outcome.signal, "output": outcome.output},
            )
        return outcome

    async def _status(self, cmd: ShellCommand) -> ServiceStatus:
        try:
            await self._run("status", cmd)
        except DriverFailed as exc:
            if exc.details and exc.details.get("exit_code") is not None:
                return ServiceStatus(status=RunStatus.STOPPED, message=exc.message)
            return ServiceStatus(status=RunStatus.UNKNOWN, message=exc.message)
        except DriverUnavailable as exc:
            return ServiceStatus(status=RunStatus.UNKNOWN, message=exc.message)
        return ServiceStatus(status=RunStatus.RUNNING, message="status command exited 0")

    @staticmethod
    def _result(action: str, outcome: CommandOutcome) -> DriverResult:
        return DriverResult(
            ok=True,
            action=action,
            changed=True,
            exit_code=outcome.exit_code,
            output=outcome.output,
            message=f"{action} command exited 0 in {outcome.duration * 1000:.0f} ms",
        )
