#!/usr/bin/env python3
"""A stand-in service for demos, tests and benchmarks. Standard library only: runs with any python3.

    standin.py --name api --port 8000 [--protocol http|tcp] [--boot SECONDS]
               [--crash-after SECONDS] [--fail-start] [--requires HOST:PORT ...]
    standin.py --name migrate --job [--boot SECONDS] [--fail-start]    # a one-shot job: works, exits 0

HTTP mode:
    GET  /health  200 {"status": "ok", "name": ..., "pid": ...}
    GET  /        200 a few facts about this process
    POST /hang    200, then every later /health request stalls forever (the process stays alive)
    POST /crash   200, then the process exits with code 1
    GET  /ready   200 once warm (see --warm), else 503 {"status": "warming"}: a readiness probe
    POST /unready?seconds=N   200, then /ready answers 503 for N seconds (a cache being rebuilt)
TCP mode: every connection receives ``OK\\n`` and is closed.

``--boot`` (or env ``STANDIN_BOOT``) waits before binding, like a slow service starting up.
``--fail-start`` exits 1 right after the boot delay; ``--crash-after`` exits 1 that long after binding.
SIGTERM and SIGINT stop it gracefully (exit 0). Each request is served on its own thread, so one
stalled request does not block the others.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STARTED = time.time()
HUNG = threading.Event()
#: /ready answers 503 until this time.time() (``--warm`` after binding, or POST /unready)
WARM_UNTIL = [0.0]
REQUIRES: list[tuple[str, int]] = []


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log(name: str, text: str) -> None:
    print(f"standin[{name}] {text}", flush=True)


class HealthHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real service
    server_version = "standin/1"
    name = "standin"

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path.split("?", 1)[0] == "/health":
            if HUNG.is_set():
                threading.Event().wait()  # stall this request forever; other threads go on
            down = [f"{h}:{p}" for h, p in REQUIRES if not _reachable(h, p)]
            if down:  # like an app whose database is gone: alive, but not healthy
                self._send_json(503, {"status": "degraded", "name": self.name, "unreachable": down})
                return
            self._send_json(200, {"status": "ok", "name": self.name, "pid": os.getpid()})
        elif self.path.split("?", 1)[0] == "/ready":
            left = WARM_UNTIL[0] - time.time()
            if left > 0:  # alive (/health passes) but not ready to serve yet
                self._send_json(503, {"status": "warming", "name": self.name, "ready_in": round(left, 3)})
                return
            self._send_json(200, {"status": "ready", "name": self.name, "pid": os.getpid()})
        elif self.path.split("?", 1)[0] == "/":
            self._send_json(
                200,
                {
                    "name": self.name,
                    "pid": os.getpid(),
                    "uptime": round(time.time() - STARTED, 3),
                    "hung": HUNG.is_set(),
                },
            )
        else:
            self._send_json(404, {"error": "not found"})

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        self._drain_body()
        path = self.path.split("?", 1)[0]
        if path == "/hang":
            HUNG.set()
            log(self.name, "hanging: /health will stall from now on")
            self._send_json(200, {"status": "hanging"})
        elif path == "/unready":
            query = dict(p.split("=", 1) for p in (self.path.partition("?")[2] or "").split("&") if "=" in p)
            seconds = float(query.get("seconds", "5"))
            WARM_UNTIL[0] = time.time() + seconds
            log(self.name, f"not ready for {seconds:g}s (/ready answers 503)")
            self._send_json(200, {"status": "warming", "seconds": seconds})
        elif path == "/crash":
            self._send_json(200, {"status": "crashing"})
            log(self.name, "crashing on request")
            os._exit(1)
        else:
            self._send_json(404, {"error": "not found"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server signature)
        pass  # quiet: health checks would flood the log


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            self.request.sendall(b"OK\n")
        except OSError:
            pass


class _ThreadingTcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="windflow stand-in service")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=None, help="required unless --job")
    parser.add_argument(
        "--job",
        action="store_true",
        help="a one-shot job (a migration): work for --boot seconds, print what was done, exit 0",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--protocol", choices=["http", "tcp"], default="http")
    parser.add_argument("--boot", type=float, default=None, help="seconds to wait before binding (env STANDIN_BOOT)")
    parser.add_argument(
        "--warm",
        type=float,
        default=0.0,
        help="/ready answers 503 for this many seconds after binding (/health passes at once)",
    )
    parser.add_argument("--crash-after", type=float, default=None, help="exit 1 this many seconds after binding")
    parser.add_argument("--fail-start", action="store_true", help="exit 1 right after the boot delay")
    parser.add_argument(
        "--fail-start-while", default=None, metavar="PATH", help="exit 1 right after the boot delay while PATH exists"
    )
    parser.add_argument(
        "--requires",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="report 503 on /health while this TCP address does not answer (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.port is None and not args.job:
        parser.error("--port is required (unless --job)")
    for item in args.requires:
        host, _, port = item.rpartition(":")
        REQUIRES.append((host or "127.0.0.1", int(port)))
    if args.boot is None:
        args.boot = float(os.environ.get("STANDIN_BOOT", "0") or 0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(args.name, f"booting ({args.boot:g}s), pid {os.getpid()}")
    if stopping.wait(args.boot):
        log(args.name, "stopped while booting")
        return 0
    if args.fail_start:
        log(args.name, "failing at start (--fail-start)")
        return 1
    if args.fail_start_while and os.path.exists(args.fail_start_while):
        log(args.name, f"failing at start: {args.fail_start_while} exists")
        return 1
    if args.job:
        log(args.name, "job done: schema is up to date")
        return 0

    server: socketserver.TCPServer
    if args.protocol == "http":
        handler = type("Handler", (HealthHandler,), {"name": args.name})
        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer((args.host, args.port), handler)
    else:
        server = _ThreadingTcpServer((args.host, args.port), _TcpHandler)
    server.daemon_threads = True  # type: ignore[attr-defined]
    WARM_UNTIL[0] = time.time() + args.warm
    log(args.name, f"listening on {args.host}:{args.port} ({args.protocol})")

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    deadline = None if args.crash_after is None else time.monotonic() + args.crash_after
    while not stopping.is_set():
        timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
        stopping.wait(timeout)
        if deadline is not None and time.monotonic() >= deadline:
            log(args.name, f"crashing after {args.crash_after:g}s (--crash-after)")
            sys.stdout.flush()
            os._exit(1)
    log(args.name, "stopping (signal)")
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
