"""Benchmarks of exit detection and HTTP probing at scale. Prints one JSON document.

    .venv/bin/python bench/probes.py [--quick]

1. ``kill_detection``: SIGKILL a process started by the process driver and time ``wait_exit`` (from just
   before ``os.kill`` to ``wait_exit`` returning), for our own children and for adopted orphans (started by
   a process that exited, so reparented to PID 1). ``bare_pidfd_floor`` is the same measure on a bare
   pidfd + ``loop.add_reader``, without the driver: the floor of the method. Goal: p99 < 20 ms.
2. ``http_watch``: one watcher (this process, one asyncio loop) runs a HealthTracker + HttpProbe per
   service, every ``interval`` (1 s). The services are listening sockets of two *other* processes, so
   the CPU measured here (``time.process_time``, i.e. getrusage user+sys of this process) is the
   watcher's alone. Then some services start answering 503 and we time until their tracker says
   UNHEALTHY (failure_threshold=3). Goals: 1,000 services under 50 % of one core; detection p99 ≤
   interval × failure_threshold + 1 s. The theoretical floor for the detection p99 is
   interval × failure_threshold (a failure that begins just after a probe waits one full interval, then
   needs two more failing probes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import pct, raise_nofile

GOAL_KILL_P99_MS = 20.0
GOAL_CPU_PERCENT_AT_1000 = 50.0
INTERVAL = 1.0
FAILURE_THRESHOLD = 3


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
    }


# ---------------------------------------------------------------------------------------------- server side


class _Service(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 endpoint: 200 while healthy, 503 once flipped."""

    failing: set[int] = set()

    def __init__(self, index: int) -> None:
        self.index = index
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            if self.index in _Service.failing:
                body = b'{"status":"failing"}'
                head = b"HTTP/1.1 503 Service Unavailable\r\n"
            else:
                body = b'{"status":"ok"}'
                head = b"HTTP/1.1 200 OK\r\n"
            self.transport.write(
                head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


async def serve(first: int, count: int) -> None:
    """Listen on ``count`` ephemeral ports (service indexes first..first+count-1); print the ports as JSON.

    stdin commands: ``fail I J ...`` (those services answer 503 from now on), ``quit``.
    """
    raise_nofile(2 * count + 256)
    loop = asyncio.get_running_loop()
    servers = []
    for i in range(first, first + count):
        servers.append(await loop.create_server(lambda i=i: _Service(i), "127.0.0.1", 0, backlog=64))
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.decode().split()
        if not words or words[0] == "quit":
            break
        if words[0] == "fail":
            _Service.failing.update(int(w) for w in words[1:])
    for s in servers:
        s.close()


# ---------------------------------------------------------------------------------------------- kill detection


async def bench_kills(n_kills: int) -> dict[str, Any]:
    from windflow.domain.models import ServiceSpec
    from windflow.drivers.process import ProcessDriver, boot_id, read_proc_stat

    data_dir = Path(tempfile.mkdtemp(prefix="wf-bench-"))
    driver = ProcessDriver(data_dir=data_dir)
    spec = ServiceSpec.model_validate({"id": "victim", "driver": "process", "config": {"command": ["sleep", "600"]}})

    own: list[float] = []
    for _ in range(n_kills):
        started = await driver.start(spec)
        assert started.pid is not None
        waiter = asyncio.create_task(driver.wait_exit(spec))
        await asyncio.sleep(0.003)
        t0 = time.perf_counter()
        os.kill(started.pid, signal.SIGKILL)
        info = await waiter
        own.append(time.perf_counter() - t0)
        assert info is not None and info.signal == signal.SIGKILL

    # adopted orphans: started by a shell that exits at once, so the process is not our child
    orphan_spec = ServiceSpec.model_validate(
        {"id": "orphan", "driver": "process", "config": {"command": ["sleep", "600"]}}
    )
    (data_dir / "run").mkdir(parents=True, exist_ok=True)
    adopted: list[float] = []
    n_orphans = max(20, n_kills // 2)
    for _ in range(n_orphans):
        out = subprocess.run(
            ["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            start_new_session=True,
            check=True,
        )
        pid = int(out.stdout.strip())
        stat = read_proc_stat(pid)
        assert stat is not None
        state = {
            "version": 1,
            "service": "orphan",
            "pid": pid,
            "pgid": stat.pgid,
            "starttime": stat.starttime,
            "boot_id": boot_id(),
            "started_at": "2024-01-01T00:00:00+00:00",
            "command": ["sleep", "600"],
        }
        (data_dir / "run" / "orphan.json").write_text(json.dumps(state))
        waiter = asyncio.create_task(driver.wait_exit(orphan_spec))
        await asyncio.sleep(0.003)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        info = await waiter
        adopted.append(time.perf_counter() - t0)
        assert info is not None and info.pid == pid

    # the floor: a bare pidfd on the loop, no driver
    loop = asyncio.get_running_loop()
    bare: list[float] = []
    for _ in range(n_kills):
        popen = subprocess.Popen(["sleep", "600"])
        fd = os.pidfd_open(popen.pid)
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda f=fut: f.done() or f.set_result(None))
        await asyncio.sleep(0.003)
        t0 = time.perf_counter()
        os.kill(popen.pid, signal.SIGKILL)
        await fut
        bare.append(time.perf_counter() - t0)
        loop.remove_reader(fd)
        os.close(fd)
        popen.wait()

    driver.close()
    own_s = summary_ms(own)
    return {
        "own_child": own_s,
        "adopted_orphan": summary_ms(adopted),
        "bare_pidfd_floor": summary_ms(bare),
        "goal_p99_ms": GOAL_KILL_P99_MS,
        "ratio_p99_vs_goal": round(own_s["p99_ms"] / GOAL_KILL_P99_MS, 4),
        "ratio_p99_vs_floor": round(own_s["p99_ms"] / max(summary_ms(bare)["p99_ms"], 1e-3), 2),
        "meets_goal": own_s["p99_ms"] < GOAL_KILL_P99_MS and summary_ms(adopted)["p99_ms"] < GOAL_KILL_P99_MS,
    }


# ---------------------------------------------------------------------------------------------- http watch


def start_servers(n: int, processes: int) -> tuple[list[subprocess.Popen[str]], list[int], list[int]]:
    """Spawn the service processes; return them, the port of each service and its server's index."""
    popens: list[subprocess.Popen[str]] = []
    ports: list[int] = []
    owner: list[int] = []
    per = -(-n // processes)
    for p in range(processes):
        first, count = p * per, min(per, n - p * per)
        if count <= 0:
            break
        popen = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(first), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert popen.stdout is not None
        line = popen.stdout.readline()
        if not line:
            raise RuntimeError("service process failed to start")
        got = json.loads(line)
        popens.append(popen)
        ports.extend(got)
        owner.extend([p] * len(got))
    return popens, ports, owner


async def bench_watch(n: int, *, fast_http: bool, measure: float, warmup: float, flip: int) -> dict[str, Any]:
    from windflow.domain.health import HealthTracker, HealthVerdict
    from windflow.domain.models import HttpHealth
    from windflow.probes.http import HttpProbe

    popens, ports, owner = start_servers(n, processes=2)
    loop = asyncio.get_running_loop()
    probe = HttpProbe(fast_http=fast_http)
    specs = [
        HttpHealth(
            kind="http",
            url=f"http://127.0.0.1:{port}/health",
            interval=INTERVAL,
            timeout=1.0,
            failure_threshold=FAILURE_THRESHOLD,
        )
        for port in ports
    ]
    trackers = [HealthTracker(failure_threshold=FAILURE_THRESHOLD) for _ in range(n)]
    flipped_at: dict[int, float] = {}
    detected_at: dict[int, float] = {}
    false_unhealthy: set[int] = set()
    lags: list[float] = []
    probes_done = 0
    stop = asyncio.Event()
    t_start = loop.time() + 0.2

    async def watch(i: int) -> None:
        nonlocal probes_done
        due = t_start + INTERVAL * i / n  # spread the probes over the interval
        tracker = trackers[i]
        while not stop.is_set():
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(loop.time() - due)
            result = await probe.check(specs[i])
            probes_done += 1
            verdict = tracker.observe(result.healthy)
            if verdict == HealthVerdict.UNHEALTHY and i not in detected_at:
                if i in flipped_at:
                    detected_at[i] = loop.time()
                else:
                    false_unhealthy.add(i)
            due += INTERVAL
            while due < loop.time():  # fell behind: skip missed slots rather than bunching up
                due += INTERVAL

    tasks = [loop.create_task(watch(i)) for i in range(n)]
    try:
        await asyncio.sleep(warmup)
        lags.clear()
        c0, w0, p0 = time.process_time(), time.perf_counter(), probes_done
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(measure)
        c1, w1, p1 = time.process_time(), time.perf_counter(), probes_done
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        steady_lags = list(lags)

        # flip services to failing, spread over both server processes and over the probe schedule
        victims = list(range(0, n, max(1, n // flip)))[:flip]
        by_server: dict[int, list[int]] = {}
        for v in victims:
            by_server.setdefault(owner[v], []).append(v)
        for server, idx in by_server.items():
            stdin = popens[server].stdin
            assert stdin is not None
            stdin.write("fail " + " ".join(map(str, idx)) + "\n")
            stdin.flush()
            now = loop.time()
            for v in idx:
                flipped_at[v] = now
        deadline = loop.time() + INTERVAL * FAILURE_THRESHOLD + 5
        while len(detected_at) < len(victims) and loop.time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await probe.aclose()
        for popen in popens:
            try:
                assert popen.stdin is not None
                popen.stdin.write("quit\n")
                popen.stdin.close()
                popen.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                popen.kill()
                popen.wait()

    cpu = (c1 - c0) / (w1 - w0) * 100
    rusage_cpu = ((r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)) / (w1 - w0) * 100
    rate = (p1 - p0) / (w1 - w0)
    delays = [detected_at[v] - flipped_at[v] for v in victims if v in detected_at]
    det = summary_ms(delays)
    goal_ms = (INTERVAL * FAILURE_THRESHOLD + 1) * 1000
    floor_ms = INTERVAL * FAILURE_THRESHOLD * 1000
    out: dict[str, Any] = {
        "services": n,
        "transport": "built-in http/1.1" if fast_http else "httpx2 (per-origin pools)",
        "interval_s": INTERVAL,
        "failure_threshold": FAILURE_THRESHOLD,
        "watcher_cpu_percent_of_one_core": round(cpu, 2),
        "watcher_cpu_percent_getrusage": round(rusage_cpu, 2),
        "probes_per_s": round(rate, 1),
        "cpu_us_per_probe": round((c1 - c0) / max(p1 - p0, 1) * 1e6, 1),
        "schedule_lag_p50_ms": round(pct(steady_lags, 50) * 1000, 2),
        "schedule_lag_p99_ms": round(pct(steady_lags, 99) * 1000, 2),
        "detection": {
            "flipped": len(victims),
            "detected": len(delays),
            **{k: v for k, v in det.items() if k != "n"},
            "floor_p99_ms": floor_ms,
            "goal_p99_ms": goal_ms,
            "ratio_p99_vs_floor": round(det["p99_ms"] / floor_ms, 3) if delays else None,
            "ratio_p99_vs_goal": round(det["p99_ms"] / goal_ms, 3) if delays else None,
        },
        "false_unhealthy": len(false_unhealthy),
    }
    meets_detection = len(delays) == len(victims) and det["p99_ms"] <= goal_ms and not false_unhealthy
    if n >= 1000:
        out["goal_cpu_percent"] = GOAL_CPU_PERCENT_AT_1000
        out["ratio_cpu_vs_goal"] = round(cpu / GOAL_CPU_PERCENT_AT_1000, 3)
        out["meets_goal"] = cpu < GOAL_CPU_PERCENT_AT_1000 and meets_detection
    else:
        out["meets_goal"] = meets_detection
    return out


# ---------------------------------------------------------------------------------------------- main


async def run(quick: bool) -> dict[str, Any]:
    raise_nofile(8192)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loop": "asyncio (default)",
        },
        "quick": quick,
    }
    report["kill_detection"] = await bench_kills(50 if quick else 100)
    measure, warmup = (4.0, 2.5) if quick else (10.0, 3.0)
    runs = [(100, True), (1000, True)]
    if not quick:
        runs += [(100, False), (1000, False)]  # the httpx2 path, for comparison
    report["http_watch"] = []
    for n, fast in runs:
        report["http_watch"].append(
            await bench_watch(n, fast_http=fast, measure=measure, warmup=warmup, flip=max(10, n // 10))
        )
    main_1000 = next(r for r in report["http_watch"] if r["services"] == 1000 and "built-in" in r["transport"])
    report["goals"] = {
        "kill_detection_p99_under_20ms": report["kill_detection"]["meets_goal"],
        "watch_1000_cpu_under_50pct": main_1000["watcher_cpu_percent_of_one_core"] < GOAL_CPU_PERCENT_AT_1000,
        "watch_1000_detection_p99_within_goal": main_1000["detection"]["ratio_p99_vs_goal"] is not None
        and main_1000["detection"]["ratio_p99_vs_goal"] <= 1.0,
    }
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller, shorter run")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("FIRST", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
        return
    print(json.dumps(asyncio.run(run(args.quick)), indent=2))


if __name__ == "__main__":
    main()
