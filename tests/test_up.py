"""`windflow up` end to end: a real subprocess with its own data dir, its own ports, the example system.

Each test copies ``examples/`` (windflow.yaml + services/) into its tmp dir and moves the example's fixed
ports (15432, 16379, 15673, 18080, 18081) to free ones, so it never collides with a developer's own
`windflow up`. Ports are taken below the kernel's ephemeral range: the Temporal dev server binds a few
random ports of its own while it starts, and those come from the ephemeral range only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from tests.helpers import eventually, kill_marked, processes_with

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PORTS = ("15432", "16379", "15673", "18080", "18081")
COMPONENTS = ("database", "cache", "queue", "api", "worker")
PASSWORD = "up-test-Password-1"
START_TIMEOUT = 120.0  # dev server start + migrations + the example's initialization, on a loaded machine
SHUTDOWN_LIMIT = 15.0  # "within a few seconds"; generous for a loaded CI machine


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def fixed_ports(n: int) -> list[int]:
    """n distinct ports that are free now and outside the ephemeral range."""
    high = _ephemeral_low() - 1
    chosen: list[int] = []
    while len(chosen) < n:
        port = random.randint(20000, high)
        if port in chosen or port in {int(p) for p in EXAMPLE_PORTS}:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


# SQLAlchemy's pool logs these when the worker's shutdown cancels an activity in the middle of a store
# operation (the rollback or close of that connection is cancelled too). Known and reported; not what these
# tests are about, so such records are dropped before looking for tracebacks.
_POOL_NOISE_HEADERS = ("Exception during reset or similar", "Exception closing connection")
_TRACEBACK_LINE = re.compile(r"^(\s|Traceback |During handling |$|[\w.]+(Error|Exception|Exit)\b)")


def without_known_noise(output: str) -> str:
    kept: list[str] = []
    skipping = False
    for line in output.splitlines():
        if line.startswith(_POOL_NOISE_HEADERS):
            skipping = True
            continue
        if skipping and _TRACEBACK_LINE.match(line):
            continue
        skipping = False
        kept.append(line)
    return "\n".join(kept)


@dataclass
class Up:
    """One `windflow up` instance: its tmp system copy, data dir, ports and the processes it ran."""

    root: Path
    system_file: Path
    data_dir: Path
    api_port: int
    temporal_port: int
    ui_port: int
    service_ports: dict[str, int]
    env: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from windflow.cli.main import run; run()", "up", *args]

    def run(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        out = open(self.root / f"up-{len(self.procs)}.out", "w+")  # noqa: SIM115 - read back in finish()
        proc = subprocess.Popen(
            self.command(*args),
            env=self.env,
            cwd=self.root,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        proc.output_file = out  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen[str]) -> str:
        out = proc.output_file  # type: ignore[attr-defined]
        out.flush()
        out.seek(0)
        return out.read()

    def temporal_pids(self) -> list[int]:
        """The dev server of this instance: its command line names this data dir's SQLite file."""
        return processes_with(str(self.data_dir / "temporal.db"))

    def service_pids(self, component: str) -> list[int]:
        return processes_with(f"--port {self.service_ports[component]} ")

    def wait_healthz(self, proc: subprocess.Popen[str], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"`windflow up` exited early ({proc.returncode}):\n{self.output(proc)}")
            try:
                if httpx2.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"/healthz did not answer within {timeout:.0f}s:\n{self.output(proc)}")

    async def wait_run(
        self,
        proc: subprocess.Popen[str],
        http: httpx2.Client,
        run_id: str | None = None,
        status: str = "SUCCEEDED",
        timeout: float = 60.0,
    ) -> dict:  # type: ignore[type-arg]
        """Poll the API until the run (default: the newest) has ``status``; fail with the output if not."""
        last: object = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if run_id is None:
                items = http.get("/api/v1/initializations").json()["items"]
                last = items[0] if items else None
            else:
                last = http.get(f"/api/v1/initializations/{run_id}").json()
            if isinstance(last, dict) and last.get("status") == status:
                return last
            await asyncio.sleep(0.2)
        raise AssertionError(f"run not {status} within {timeout:.0f}s (last: {last!r}):\n{self.output(proc)}")

    @contextlib.contextmanager
    def login(self) -> Iterator[httpx2.Client]:
        """An API client signed in as the bootstrapped admin."""
        with httpx2.Client(base_url=self.base, timeout=10) as http:
            resp = http.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
            assert resp.status_code == 200, resp.text
            http.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
            yield http

    def sigterm_and_wait(self, proc: subprocess.Popen[str]) -> tuple[int, float, str]:
        begin = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=SHUTDOWN_LIMIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"`windflow up` still running {SHUTDOWN_LIMIT:.0f}s after SIGTERM:\n{self.output(proc)}"
            ) from None
        took, output = time.monotonic() - begin, self.output(proc)
        assert "Traceback" not in without_known_noise(output), output
        return code, took, output

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            proc.output_file.close()  # type: ignore[attr-defined]
        kill_marked(str(self.data_dir / "temporal.db"))
        for port in self.service_ports.values():
            kill_marked(f"--port {port} ")


@pytest.fixture
def up(tmp_path) -> Iterator[Up]:
    root = tmp_path / "system"
    shutil.copytree(ROOT / "examples", root, ignore=shutil.ignore_patterns("__pycache__", ".windflow"))
    api_port, temporal_port, ui_port, *service = fixed_ports(3 + len(EXAMPLE_PORTS))
    text = (root / "windflow.yaml").read_text(encoding="utf-8")
    for old, new in zip(EXAMPLE_PORTS, service, strict=True):
        text = text.replace(old, str(new))
    assert not any(p in text for p in EXAMPLE_PORTS)
    system_file = root / "windflow.yaml"
    system_file.write_text(text, encoding="utf-8")
    service_ports = dict(zip(COMPONENTS, service, strict=True))  # EXAMPLE_PORTS is in COMPONENTS order
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINDFLOW_")}  # no developer's settings
    env.update(
        {
            "WINDFLOW_DATA_DIR": str(data_dir),
            "WINDFLOW_API_PORT": str(api_port),
            "WINDFLOW_TEMPORAL_PORT": str(temporal_port),
            "WINDFLOW_TEMPORAL_UI_PORT": str(ui_port),
            "WINDFLOW_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
            "WINDFLOW_CONFIG_FILE": str(tmp_path / "absent.toml"),
            "NO_COLOR": "1",
            "COLUMNS": "160",
        }
    )
    instance = Up(
        root=root,
        system_file=system_file,
        data_dir=data_dir,
        api_port=api_port,
        temporal_port=temporal_port,
        ui_port=ui_port,
        service_ports=service_ports,
        env=env,
    )
    try:
        yield instance
    finally:
        instance.cleanup()


def _show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


async def test_up_initializes_the_example_then_a_second_run_reuses_the_temporal_history(up: Up):
    # 1) apply + initialize the example, stop everything again
    first = up.run("windflow.yaml", "--exit-after-init", "--stop-services")
    assert first.returncode == 0, _show(first)
    assert "Traceback" not in without_known_noise(first.stdout + first.stderr), _show(first)
    out = first.stdout
    assert f"API {up.base}" in out and f"docs {up.base}/docs" in out, _show(first)
    assert f"Temporal Web UI http://127.0.0.1:{up.ui_port}/namespaces/default/workflows" in out
    assert "applied windflow.yaml: created 6" in out
    # the migration job ran to completion before the api started
    assert re.search(r"^migrate \(job\)\s+\d\s+COMPLETED\s+1\s+[\d.]+s\s+exit 0", out, re.MULTILINE), _show(first)
    run_id = re.search(r"initialization ([0-9a-f]{16})\s+SUCCEEDED\s+100%", out)
    assert run_id, _show(first)
    for name in COMPONENTS:
        assert re.search(rf"^{name}\s+\d\s+HEALTHY\b", out, re.MULTILINE), (name, _show(first))
        # the stand-in really ran (and bound its port) ...
        log = (up.data_dir / "logs" / f"{name}.out.log").read_text()
        assert f"standin[{name}] listening on 127.0.0.1:{up.service_ports[name]}" in log
        # ... and --stop-services stopped it again
        assert f"stopped {name}" in out
        assert "stopping (signal)" in log
        assert up.service_pids(name) == [], name
    assert up.temporal_pids() == []
    assert (up.data_dir / "temporal.db").is_file()

    # 2) a second run against the same data dir finds the first run in Temporal's SQLite file
    proc = up.spawn("--stop-services")
    up.wait_healthz(proc)
    client = await Client.connect(f"127.0.0.1:{up.temporal_port}")
    desc = await client.get_workflow_handle(f"init/{run_id[1]}").describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    with up.login() as http:
        listed = http.get("/api/v1/initializations").json()["items"]
        assert [(r["run_id"], r["status"]) for r in listed] == [(run_id[1], "SUCCEEDED")]
        detail = http.get(f"/api/v1/initializations/{run_id[1]}").json()
        assert detail["status"] == "SUCCEEDED"
        # the first run's --stop-services was a SystemShutdown run (down/…), dependants first
        shutdowns = http.get("/api/v1/shutdowns").json()["items"]
        assert [(r["status"], r["actor"]) for r in shutdowns] == [("COMPLETED", "windflow-up")], shutdowns
        order = shutdowns[0]["state"]["layers"]
        assert "api" in order[0] and order[-1] == ["cache", "database", "queue"], order
        # links go to this instance's Temporal UI (WINDFLOW_TEMPORAL_UI_PORT), not to another one's on 8233
        assert (
            detail["links"]["temporal_ui"]
            == f"http://127.0.0.1:{up.ui_port}/namespaces/default/workflows/init%2F{run_id[1]}"
        )
        # the API's /metrics carries the embedded worker's Temporal SDK metrics and the per-service series
        metrics = http.get("/metrics").text
        assert "temporal_request_total" in metrics and "windflow_service_up{" in metrics
    # --stop-services ended the supervisors too: nothing "recovers" the stopped services now
    time.sleep(3)
    assert {name: up.service_pids(name) for name in COMPONENTS} == {name: [] for name in COMPONENTS}
    code, took, output = up.sigterm_and_wait(proc)
    assert code == 0, output
    assert "shutting down" in output
    assert up.temporal_pids() == [], output


@pytest.mark.parametrize("stop_services", [False, True], ids=["services-keep-running", "stop-services"])
async def test_sigterm_shuts_down_cleanly(up: Up, stop_services: bool):
    proc = up.spawn("windflow.yaml", *(["--stop-services"] if stop_services else []))
    up.wait_healthz(proc)
    assert up.temporal_pids(), "the dev server runs while `windflow up` does"
    with up.login() as http:
        await up.wait_run(proc, http)
    pids = {name: up.service_pids(name) for name in COMPONENTS}
    assert all(len(p) == 1 for p in pids.values()), pids

    code, took, output = up.sigterm_and_wait(proc)
    assert code == 0, output
    assert "shutting down" in output
    assert took < SHUTDOWN_LIMIT
    assert up.temporal_pids() == [], output
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(f"{up.base}/healthz", timeout=1)
    for name in COMPONENTS:
        if stop_services:
            assert up.service_pids(name) == [], name
            assert f"stopped {name}" in output
        else:  # the managed services outlive windflow
            assert up.service_pids(name) == pids[name], name


async def test_sigterm_during_initialization_then_next_up_resumes_it(up: Up):
    """A signal mid-initialization does not wait for the run: windflow stops at once, the run stays open in
    Temporal (SQLite file in the data dir) and the next `windflow up` finishes it without starting anything
    twice."""
    text = up.system_file.read_text(encoding="utf-8")
    slow = text.replace('--boot, "0.8"]', '--boot, "6"]')  # the database takes 6 s to come up
    assert slow != text
    up.system_file.write_text(slow, encoding="utf-8")

    proc = up.spawn("windflow.yaml")
    up.wait_healthz(proc)
    await eventually(lambda: up.service_pids("database"), timeout=60, interval=0.1)
    with up.login() as http:
        run = http.get("/api/v1/initializations").json()["items"][0]
    assert run["status"] in ("PENDING", "RUNNING"), run
    database = up.service_pids("database")

    code, took, output = up.sigterm_and_wait(proc)
    assert code == 0, output
    assert took < 5.0, (took, output)  # not held until the database is healthy
    assert "initialization interrupted" in output
    assert up.temporal_pids() == [], output
    assert up.service_pids("database") == database  # still booting, untouched

    resumed = up.spawn()
    up.wait_healthz(resumed)
    with up.login() as http:
        await up.wait_run(resumed, http, run["run_id"])
    assert up.service_pids("database") == database  # adopted, not started again
    for name in COMPONENTS:
        assert len(up.service_pids(name)) == 1, name
    code, _, output = up.sigterm_and_wait(resumed)
    assert code == 0, output
    assert up.temporal_pids() == [], output


async def test_sigkilled_up_starts_again_with_the_same_command_and_a_reboot_brings_the_system_back(up: Up):
    """`windflow up` killed with SIGKILL leaves its dev server (a session of its own) on the ports: the same
    command starts again, replacing that server, changes no config, and the service that died meanwhile is back.
    Then everything is killed, as by a reboot: `windflow up` alone brings every service back."""
    proc = up.spawn("windflow.yaml")
    up.wait_healthz(proc)
    with up.login() as http:
        await up.wait_run(proc, http)
        versions = {s["id"]: s["version"] for s in http.get("/api/v1/services").json()["items"]}
    leftover = up.temporal_pids()
    assert len(leftover) == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert up.temporal_pids() == leftover  # it outlived `windflow up`, holding its ports
    dead = up.service_pids("worker")
    os.kill(dead[0], signal.SIGKILL)

    again = up.spawn("windflow.yaml")
    up.wait_healthz(again)
    assert "replacing the Temporal dev server" in up.output(again)
    with up.login() as http:
        await up.wait_run(again, http)
        assert {s["id"]: s["version"] for s in http.get("/api/v1/services").json()["items"]} == versions
    assert len(up.temporal_pids()) == 1 and up.temporal_pids() != leftover
    await eventually(lambda: all(len(up.service_pids(n)) == 1 for n in COMPONENTS), timeout=60, interval=0.2)
    assert up.service_pids("worker") != dead

    # a second `windflow up` on the same data dir while one runs is refused, and harms nothing
    refused = up.run("windflow.yaml", timeout=60)
    assert refused.returncode != 0 and "another `windflow up` runs" in refused.stdout + refused.stderr, _show(refused)
    assert again.poll() is None

    # a reboot: every windflow process and every service is gone
    os.kill(again.pid, signal.SIGKILL)
    again.wait(timeout=10)
    for pid in up.temporal_pids() + [p for n in COMPONENTS for p in up.service_pids(n)]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    await eventually(lambda: not up.temporal_pids() and not any(up.service_pids(n) for n in COMPONENTS), timeout=10)
    rebooted = up.spawn()  # no file, no initialization: the services come back by themselves
    up.wait_healthz(rebooted)
    await eventually(lambda: all(len(up.service_pids(n)) == 1 for n in COMPONENTS), timeout=90, interval=0.2)
    with up.login() as http:
        # every service healthy again; the migrate job is not kept up: it stays completed
        await eventually(
            lambda: all(
                s["state"] == ("completed" if s["id"] == "migrate" else "healthy")
                for s in http.get("/api/v1/services").json()["items"]
            ),
            timeout=60,
            interval=0.2,
        )
    code, _, output = up.sigterm_and_wait(rebooted)
    assert code == 0, output
