"""The process driver against real processes: the stand-in service, SIGKILL, re-adoption, pid reuse, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.servers import free_port
from windflow.domain.errors import DriverFailed
from windflow.domain.models import ServiceSpec
from windflow.domain.results import RunStatus
from windflow.drivers.process import ProcessDriver, boot_id, read_proc_stat

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "services" / "standin.py"


# ---------------------------------------------------------------------------------------------- helpers


def live_pids(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            stat = read_proc_stat(int(entry))
            if stat is not None and not stat.exited:
                pids.append(int(entry))
    return pids


def is_live(pid: int) -> bool:
    stat = read_proc_stat(pid)
    return stat is not None and not stat.exited


def service(sid: str, command: list[str], **config: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"id": sid, "driver": "process", "config": {"command": command, **config}})


def standin(sid: str, port: int, *args: str, **config: Any) -> ServiceSpec:
    # the unique --name doubles as a marker to count real processes
    return service(
        sid,
        [sys.executable, str(STANDIN), "--name", f"{sid}-{uuid.uuid4().hex[:8]}", "--port", str(port), *args],
        **config,
    )


def marker_of(spec: ServiceSpec) -> str:
    cmd = spec.process_config.command
    return cmd[cmd.index("--name") + 1]


async def wait_for(predicate: Any, *, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cleanup:
    """Kills every process group registered here (and those in the driver's state files) at teardown."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pgids: set[int] = set()
        self.popens: list[subprocess.Popen[bytes]] = []

    def add(self, pgid: int | None) -> None:
        if pgid:
            self.pgids.add(pgid)

    def run(self) -> None:
        for state in (self.data_dir / "run").glob("*.json") if (self.data_dir / "run").is_dir() else []:
            with contextlib.suppress(ValueError, OSError, KeyError):
                self.pgids.add(int(json.loads(state.read_text())["pgid"]))
        self.pgids.discard(os.getpgid(0))  # never our own group (a test may forge a state file with it)
        for pgid in self.pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for popen in self.popens:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait(timeout=5)


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[Cleanup]:
    c = Cleanup(tmp_path)
    yield c
    c.run()


@pytest_asyncio.fixture
async def driver(tmp_path: Path, cleanup: Cleanup) -> AsyncIterator[ProcessDriver]:
    drv = ProcessDriver(data_dir=tmp_path, log_check_interval=0.2)
    yield drv
    for proc in list(drv._procs.values()):
        cleanup.add(proc.pgid)
    cleanup.run()
    # let the exit watches reap what the kill above ended
    await asyncio.sleep(0.05)
    drv.close()


OLD_WORKER = """
import asyncio, sys
from pathlib import Path
from windflow.domain.models import ServiceSpec
from windflow.drivers.process import ProcessDriver

async def main():
    spec = ServiceSpec.model_validate_json(sys.argv[2])
    result = await ProcessDriver(data_dir=Path(sys.argv[1])).start(spec)
    print(result.model_dump_json())

asyncio.run(main())
"""


async def start_in_old_worker(data_dir: Path, spec: ServiceSpec) -> dict[str, Any]:
    """Start ``spec`` from another Python process that then exits, like a worker that restarted.

    The service is left orphaned: it is not a child of this test process.
    """
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", OLD_WORKER, str(data_dir), spec.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- tests


async def test_start_is_idempotent_and_stop_too(driver: ProcessDriver, tmp_path: Path) -> None:
    port = free_port()
    spec = standin("api", port)
    first = await driver.start(spec)
    assert first.ok and first.changed and first.pid
    again = await driver.start(spec)
    assert again.ok and not again.changed and again.pid == first.pid
    await wait_for(lambda: port_open(port))
    assert live_pids(marker_of(spec)) == [first.pid]

    status = await driver.status(spec)
    assert status.status == RunStatus.RUNNING and status.pid == first.pid

    state = json.loads((tmp_path / "run" / "api.json").read_text())
    stat = read_proc_stat(first.pid)
    assert stat is not None
    assert state["pid"] == first.pid and state["pgid"] == stat.pgid == first.pid  # own session and group
    assert state["starttime"] == stat.starttime and state["boot_id"] == boot_id()
    assert state["command"][1:] == spec.process_config.command[1:]

    stopped = await driver.stop(spec)
    assert stopped.ok and stopped.changed
    assert stopped.exit_code == 0, stopped.message  # the stand-in exits 0 on SIGTERM
    assert live_pids(marker_of(spec)) == []
    assert not (tmp_path / "run" / "api.json").exists()
    assert read_proc_stat(first.pid) is None  # reaped: no zombie left behind

    again_stopped = await driver.stop(spec)
    assert again_stopped.ok and not again_stopped.changed
    assert (await driver.status(spec)).status == RunStatus.STOPPED


async def test_concurrent_starts_launch_one_process(driver: ProcessDriver) -> None:
    spec = standin("conc", free_port())
    results = await asyncio.gather(*(driver.start(spec) for _ in range(5)))
    assert sum(r.changed for r in results) == 1
    assert len({r.pid for r in results}) == 1
    assert len(live_pids(marker_of(spec))) == 1


async def test_sigkill_is_reported_by_wait_exit_at_once(driver: ProcessDriver) -> None:
    port = free_port()
    spec = standin("victim", port)
    started = await driver.start(spec)
    await wait_for(lambda: port_open(port))
    waiter = asyncio.create_task(driver.wait_exit(spec))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    t0 = time.monotonic()
    os.kill(started.pid, signal.SIGKILL)  # type: ignore[arg-type]
    info = await asyncio.wait_for(waiter, timeout=5)
    elapsed = time.monotonic() - t0
    assert info is not None and info.pid == started.pid
    assert info.signal == signal.SIGKILL and info.exit_code is None
    assert "SIGKILL" in info.message
    assert elapsed < 1.0  # event-driven; the bench measures the real figure
    assert read_proc_stat(started.pid) is None  # reaped
    status = await driver.status(spec)
    assert status.status == RunStatus.STOPPED and "SIGKILL" in status.message
    # and it can be started again
    again = await driver.start(spec)
    assert again.changed and again.pid != started.pid


async def test_exit_code_of_a_failing_start(driver: ProcessDriver) -> None:
    spec = standin("failer", free_port(), "--fail-start")
    await driver.start(spec)
    info = await asyncio.wait_for(driver.wait_exit(spec), timeout=10)
    assert info is not None and info.exit_code == 1 and info.signal is None
    assert "code 1" in info.message
    # wait_exit on an exited service returns at once, with the same exit
    assert await asyncio.wait_for(driver.wait_exit(spec), timeout=1) == info


async def test_wait_exit_on_a_never_started_service_returns_at_once(driver: ProcessDriver) -> None:
    info = await asyncio.wait_for(driver.wait_exit(standin("never", free_port())), timeout=1)
    assert info is not None and "not" in info.message


async def test_restarted_worker_readopts_the_process(tmp_path: Path, cleanup: Cleanup) -> None:
    """A service started by a worker process that has since exited: not our child, maybe a zombie later."""
    port = free_port()
    spec = standin("adopted", port)
    old = await start_in_old_worker(tmp_path, spec)
    cleanup.add(old["pid"])
    assert old["changed"] and old["pid"]
    stat = read_proc_stat(old["pid"])
    assert stat is not None and os.getpid() not in {stat.pid}
    ppid = int(Path(f"/proc/{old['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()  # really not our child
    await wait_for(lambda: port_open(port))

    new = ProcessDriver(data_dir=tmp_path)
    try:
        status = await new.status(spec)
        assert status.status == RunStatus.RUNNING and status.pid == old["pid"]
        again = await new.start(spec)
        assert not again.changed and again.pid == old["pid"]
        assert live_pids(marker_of(spec)) == [old["pid"]]  # not started twice

        waiter = asyncio.create_task(new.wait_exit(spec))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        os.kill(old["pid"], signal.SIGKILL)
        info = await asyncio.wait_for(waiter, timeout=5)
        assert time.monotonic() - t0 < 1.0
        # not our child: no exit status, but the exit is seen (even if the orphan lingers as a zombie)
        assert info is not None and info.pid == old["pid"] and info.exit_code is None
        assert (await new.status(spec)).status == RunStatus.STOPPED
        restarted = await new.start(spec)
        assert restarted.changed and restarted.pid != old["pid"]
        cleanup.add(restarted.pid)
        assert (await new.stop(spec)).changed
    finally:
        new.close()


WORKER_KILLED_AFTER_FORK = """
import asyncio, os, signal, sys
from pathlib import Path
from windflow.domain.models import ServiceSpec
from windflow.drivers.process import ProcessDriver

async def main():
    driver = ProcessDriver(data_dir=Path(sys.argv[1]))
    # the worker is SIGKILLed the moment after the fork, before it records the pid
    driver._write_state = lambda proc, cwd: (print(proc.pid, flush=True), os.kill(os.getpid(), signal.SIGKILL))
    await driver.start(ServiceSpec.model_validate_json(sys.argv[2]))

asyncio.run(main())
"""


async def test_worker_killed_between_fork_and_recording_the_pid_is_not_started_twice(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    """The crash window of a start: the child runs, the state file has no pid yet. The next driver finds the
    child by its spawn token, adopts it, and a start is a no-op instead of a second process."""
    port = free_port()
    spec = standin("forked", port)
    died = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", WORKER_KILLED_AFTER_FORK, str(tmp_path), spec.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert died.returncode == -signal.SIGKILL
    child = int(died.stdout.split()[0])
    cleanup.add(child)
    assert "spawning" in json.loads((tmp_path / "run" / "forked.json").read_text())  # no pid recorded
    await wait_for(lambda: port_open(port))

    new = ProcessDriver(data_dir=tmp_path)
    try:
        status = await new.status(spec)
        assert status.status == RunStatus.RUNNING and status.pid == child
        again = await new.start(spec)
        assert not again.changed and again.pid == child
        assert live_pids(marker_of(spec)) == [child]  # not started twice
        assert json.loads((tmp_path / "run" / "forked.json").read_text())["pid"] == child  # recorded now
        assert (await new.stop(spec)).changed
        assert live_pids(marker_of(spec)) == []
    finally:
        new.close()


async def test_a_spawn_that_started_nothing_leaves_no_state(tmp_path: Path) -> None:
    """A start whose fork fails (no such executable in cwd): no state file, so no /proc scan on every status."""
    spec = service("broken", ["./no-such-program"], cwd=str(tmp_path))
    driver = ProcessDriver(data_dir=tmp_path)
    try:
        with pytest.raises(DriverFailed):
            await driver.start(spec)
        assert not (tmp_path / "run" / "broken.json").exists()
        assert (await driver.status(spec)).status == RunStatus.STOPPED
    finally:
        driver.close()


async def test_readopted_process_is_stopped_with_sigkill_after_grace(tmp_path: Path, cleanup: Cleanup) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    marker = f"stubborn-{uuid.uuid4().hex[:8]}"
    spec = service("stubborn", [sys.executable, "-c", script, marker], stop_grace="0.5s")
    old = await start_in_old_worker(tmp_path, spec)
    cleanup.add(old["pid"])
    log = tmp_path / "logs" / "stubborn.out.log"
    await wait_for(lambda: log.exists() and "ready" in log.read_text())

    new = ProcessDriver(data_dir=tmp_path)
    try:
        t0 = time.monotonic()
        result = await new.stop(spec)
        elapsed = time.monotonic() - t0
        assert result.changed and "SIGKILL" in result.message
        assert 0.5 <= elapsed < 5
        assert live_pids(marker) == []
        assert (await new.status(spec)).status == RunStatus.STOPPED
    finally:
        new.close()


async def test_stop_escalates_to_sigkill_for_own_child(driver: ProcessDriver, tmp_path: Path) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    spec = service("deaf", [sys.executable, "-c", script], stop_grace="10s")
    started = await driver.start(spec)
    log = tmp_path / "logs" / "deaf.out.log"
    await wait_for(lambda: log.exists() and "ready" in log.read_text())
    t0 = time.monotonic()
    result = await driver.stop(spec, grace=0.3)  # the explicit grace wins over the config
    elapsed = time.monotonic() - t0
    assert result.changed and "SIGKILL after 300ms" in result.message
    assert 0.3 <= elapsed < 5
    assert read_proc_stat(started.pid) is None  # gone and reaped


async def test_stop_takes_the_whole_process_group(driver: ProcessDriver) -> None:
    marker = f"grandchild-{uuid.uuid4().hex[:8]}"
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', '{marker}'])\n"
        "time.sleep(120)\n"
    )
    spec = service("parent", [sys.executable, "-c", script])
    await driver.start(spec)
    await wait_for(lambda: len(live_pids(marker)) == 1)
    await driver.stop(spec, grace=2)
    await wait_for(lambda: live_pids(marker) == [], timeout=3)


async def test_stop_after_the_leader_died_kills_its_leftovers(driver: ProcessDriver) -> None:
    marker = f"leftover-{uuid.uuid4().hex[:8]}"
    # a wrapper that starts a server in its group and exits at once
    script = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', '{marker}'])\n"
    )
    spec = service("wrapper", [sys.executable, "-c", script])
    await driver.start(spec)
    info = await asyncio.wait_for(driver.wait_exit(spec), timeout=10)
    assert info is not None and info.exit_code == 0
    await wait_for(lambda: len(live_pids(marker)) == 1)
    result = await driver.stop(spec)
    assert result.changed and "leftover" in result.message
    await wait_for(lambda: live_pids(marker) == [], timeout=3)
    assert not (await driver.stop(spec)).changed


async def test_reused_pid_is_not_mistaken_for_ours(driver: ProcessDriver, tmp_path: Path, cleanup: Cleanup) -> None:
    unrelated = subprocess.Popen(["sleep", "120"], start_new_session=True)
    cleanup.popens.append(unrelated)
    stat = read_proc_stat(unrelated.pid)
    assert stat is not None
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    forged = {
        "version": 1,
        "service": "reuse",
        "pid": unrelated.pid,
        "pgid": unrelated.pid,
        "starttime": stat.starttime - 1234,
        "boot_id": boot_id(),
        "started_at": "2024-01-01T00:00:00+00:00",
        "command": ["whatever"],
        "cwd": None,
        "logs": [],
    }
    (tmp_path / "run" / "reuse.json").write_text(json.dumps(forged))

    port = free_port()
    spec = standin("reuse", port)
    status = await driver.status(spec)
    assert status.status == RunStatus.STOPPED
    assert "another process" in status.message

    stopped = await driver.stop(spec)  # must not signal the unrelated process
    assert not stopped.changed
    started = await driver.start(spec)
    assert started.changed and started.pid != unrelated.pid
    await wait_for(lambda: port_open(port))
    assert (await driver.status(spec)).pid == started.pid
    await driver.stop(spec)
    assert is_live(unrelated.pid) and unrelated.poll() is None


async def test_state_file_from_an_earlier_boot_is_ignored(driver: ProcessDriver, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    me = read_proc_stat(os.getpid())
    assert me is not None
    forged = {
        "version": 1,
        "service": "boot",
        "pid": os.getpid(),
        "pgid": me.pgid,
        "starttime": me.starttime,
        "boot_id": "not-this-boot",
        "started_at": "2024-01-01T00:00:00+00:00",
        "command": ["x"],
    }
    (tmp_path / "run" / "boot.json").write_text(json.dumps(forged))
    status = await driver.status(standin("boot", free_port()))
    assert status.status == RunStatus.STOPPED and "earlier boot" in status.message


async def test_restart_replaces_the_process(driver: ProcessDriver) -> None:
    port = free_port()
    spec = standin("cycle", port)
    first = await driver.start(spec)
    await wait_for(lambda: port_open(port))
    result = await driver.restart(spec, grace=5)
    assert result.ok and result.changed and result.pid != first.pid
    assert "stopped pid" in result.message and "started pid" in result.message
    assert live_pids(marker_of(spec)) == [result.pid]
    assert read_proc_stat(first.pid) is None


async def test_logs_are_written_and_capped(driver: ProcessDriver, tmp_path: Path) -> None:
    cap = 4096
    out_log, err_log = driver.log_paths("chatty")
    out_log.parent.mkdir(parents=True)
    out_log.write_bytes(b"old line\n" * 2000)  # over the cap before the start: rotated at start
    script = (
        "import sys, time\n"
        "for i in range(3000):\n"
        "    sys.stdout.write(f'out {i:05d}\\n'); sys.stderr.write(f'err {i:05d}\\n')\n"
        "sys.stdout.flush(); sys.stderr.flush()\n"
        "print('done', flush=True)\n"
        "time.sleep(120)\n"
    )
    spec = service("chatty", [sys.executable, "-c", script], log_max_bytes=cap)
    await driver.start(spec)
    backup = out_log.with_name(out_log.name + ".1")
    assert backup.exists() and b"old line" in backup.read_bytes()  # rotated at start
    assert len(backup.read_bytes()) <= cap

    await wait_for(lambda: "done" in out_log.read_text(errors="replace"))
    assert out_log.stat().st_size > cap and err_log.stat().st_size > cap  # written straight by the child
    await driver.status(spec)  # status caps the logs
    for log in (out_log, err_log):
        assert log.stat().st_size <= cap
        tail = log.with_name(log.name + ".1").read_text()
        assert len(tail.encode()) <= cap and "02999" in tail  # the newest lines survive in the backup
    # the child keeps appending at the new end (O_APPEND): no sparse hole of zeros
    await driver.stop(spec)
    assert b"\x00" not in out_log.read_bytes()


async def test_wait_exit_caps_logs_while_watching(driver: ProcessDriver) -> None:
    cap = 2048
    script = (
        "import sys, time\n"
        "for i in range(60):\n"
        "    sys.stdout.write('x' * 200 + '\\n'); sys.stdout.flush(); time.sleep(0.02)\n"
        "time.sleep(0.5)\n"
    )
    spec = service("drip", [sys.executable, "-c", script], log_max_bytes=cap)
    await driver.start(spec)
    info = await asyncio.wait_for(driver.wait_exit(spec), timeout=20)  # log_check_interval is 0.2 s here
    assert info is not None and info.exit_code == 0
    out_log, _ = driver.log_paths("drip")
    assert out_log.with_name(out_log.name + ".1").exists()
    # bounded: cap plus what was written between two checks (~0.2 s of output)
    assert out_log.stat().st_size <= cap + 3000


async def test_unwritable_log_dir_still_starts(tmp_path: Path, cleanup: Cleanup) -> None:
    (tmp_path / "logs").write_text("a file where the log directory should be")
    drv = ProcessDriver(data_dir=tmp_path)
    try:
        port = free_port()
        spec = standin("nologs", port)
        result = await drv.start(spec)
        cleanup.add(result.pid)
        assert result.ok and result.changed
        assert "/dev/null" in result.message and "log" in result.message
        await wait_for(lambda: port_open(port))
        assert (await drv.status(spec)).status == RunStatus.RUNNING
        assert (await drv.stop(spec)).changed
    finally:
        drv.close()


async def test_command_is_resolved_on_the_final_path(driver: ProcessDriver, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "my-service"
    marker = f"pathsvc-{uuid.uuid4().hex[:8]}"
    exe.write_text(f"#!/bin/sh\nexec sleep 120 # {marker}\n")
    exe.chmod(0o755)
    spec = service("pathsvc", ["my-service"], env={"PATH": f"{bindir}:/usr/bin:/bin"}, cwd=str(tmp_path))
    result = await driver.start(spec)
    assert result.changed
    state = json.loads((tmp_path / "run" / "pathsvc.json").read_text())
    assert state["command"][0] == str(exe)
    assert (await driver.status(spec)).status == RunStatus.RUNNING

    missing = service("missing", ["no-such-binary-here"], env={"PATH": str(bindir)})
    with pytest.raises(DriverFailed, match="not found on PATH"):
        await driver.start(missing)


async def test_bad_cwd_is_a_driver_failure(driver: ProcessDriver, tmp_path: Path) -> None:
    spec = service("badcwd", ["sleep", "1"], cwd=str(tmp_path / "nope"))
    with pytest.raises(DriverFailed, match="cannot start"):
        await driver.start(spec)
