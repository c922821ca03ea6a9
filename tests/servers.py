"""Real servers for the tests: PostgreSQL and Redis (the machine's own when they answer, else throwaway ones)
and a local HTTP receiver that records what is POSTed to it.

With ``CI=true`` nothing may be skipped: a missing server is started here or the run fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Throwaway:
    """A server this test run started and must stop."""

    url: str
    stop_cmds: list[list[str]] = field(default_factory=list)
    tmpdir: str | None = None

    def stop(self) -> None:
        for cmd in self.stop_cmds:
            subprocess.run(cmd, check=False, capture_output=True)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def start_redis(port: int | None = None) -> Throwaway:
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = port or free_port()
    tmp = tempfile.mkdtemp(prefix="wf-redis.")
    subprocess.run(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            tmp,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            f"{tmp}/redis.pid",
            "--logfile",
            f"{tmp}/redis.log",
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"throwaway redis on {port} did not start")
        time.sleep(0.05)
    stop = ["sh", "-c", f"kill $(cat {tmp}/redis.pid) 2>/dev/null; sleep 0.2"]
    return Throwaway(url=f"redis://127.0.0.1:{port}/0", stop_cmds=[stop], tmpdir=tmp)


def start_postgres(port: int | None = None) -> Throwaway:
    if not PG_BIN_CANDIDATES:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    pg_bin = PG_BIN_CANDIDATES[0]
    port = port or free_port()
    tmp = tempfile.mkdtemp(prefix="wf-pg.")
    user = "postgres" if os.geteuid() == 0 else None
    run_as = ["runuser", "-u", user, "--"] if user else []
    if user:
        shutil.chown(tmp, user, user)
    os.chmod(tmp, 0o700)
    data = f"{tmp}/data"
    subprocess.run(
        [*run_as, str(pg_bin / "initdb"), "-D", data, "-U", "windflow", "--auth=trust", "-E", "UTF8", "--no-locale"],
        check=True,
        capture_output=True,
    )
    opts = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off"
    )
    subprocess.run(
        [*run_as, str(pg_bin / "pg_ctl"), "-D", data, "-l", f"{tmp}/pg.log", "-w", "-o", opts, "start"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "windflow", "-d", "postgres", "-c", "create database test"],
        check=True,
        capture_output=True,
    )
    stop = [*run_as, str(pg_bin / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"]
    return Throwaway(url=f"postgresql://windflow@127.0.0.1:{port}/test", stop_cmds=[stop], tmpdir=tmp)


class RestartablePostgres:
    """A throwaway PostgreSQL a test may stop and start again on the same port with its data kept (outage tests).

    ``stop`` is an immediate shutdown (like a crash: clients see their connections drop); ``remove`` stops it
    and deletes its files."""

    def __init__(self, port: int | None = None) -> None:
        if not PG_BIN_CANDIDATES:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
        self.pg_bin = PG_BIN_CANDIDATES[0]
        self.port = port or free_port()
        self.tmp = tempfile.mkdtemp(prefix="wf-pg.")
        user = "postgres" if os.geteuid() == 0 else None
        self.run_as = ["runuser", "-u", user, "--"] if user else []
        if user:
            shutil.chown(self.tmp, user, user)
        os.chmod(self.tmp, 0o700)
        self.data = f"{self.tmp}/data"
        subprocess.run(
            [
                *self.run_as,
                str(self.pg_bin / "initdb"),
                "-D",
                self.data,
                "-U",
                "windflow",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
            check=True,
            capture_output=True,
        )
        self.start()
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "windflow",
                "-d",
                "postgres",
                "-c",
                "create database test",
            ],
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql://windflow@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.tmp} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            [
                *self.run_as,
                str(self.pg_bin / "pg_ctl"),
                "-D",
                self.data,
                "-l",
                f"{self.tmp}/pg.log",
                "-w",
                "-o",
                opts,
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, str(self.pg_bin / "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Receiver:
    """A real HTTP server on a free local port recording every POST (path, headers, raw ``body``, parsed ``json``
    or None, the status ``answered``); ``plan[path]`` lists the statuses to answer in turn, then 200."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.plan: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                with receiver.lock:
                    planned = receiver.plan.get(self.path) or []
                    code = planned.pop(0) if planned else 200
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "json": parsed,
                            "answered": code,
                        }
                    )
                payload = b"ok" if code < 300 else b"receiver says no"
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
