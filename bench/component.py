"""A lean benchmark component: waits ``--boot`` seconds, then answers every HTTP request with 200.

    python -I -S bench/component.py --name NAME --port PORT [--boot SECONDS] [--drain SECONDS]

``--drain``: on SIGTERM it takes that long to shut down (a graceful drain), then exits 0; without it SIGTERM
ends it at once.

Only ``socket`` and ``time`` from the standard library, so the interpreter starts in ~15 ms of CPU: ten of
them starting at once on two cores then cost the boot time, not a queue for the CPU (the full stand-in,
``examples/services/standin.py``, imports ``http.server`` and costs several times more to start). One
connection at a time; every answer closes its connection. Prints "listening on ..." once bound.
"""

import signal
import socket
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


def main(argv: list[str]) -> None:
    args = dict(zip(argv[0::2], argv[1::2], strict=False))
    name, port, boot = args.get("--name", "component"), int(args["--port"]), float(args.get("--boot", "0"))
    drain = float(args.get("--drain", "0"))
    if drain > 0:

        def on_term(*_: object) -> None:
            time.sleep(drain)
            sys.exit(0)

        signal.signal(signal.SIGTERM, on_term)
    time.sleep(boot)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    print(f"component[{name}] listening on 127.0.0.1:{port}", flush=True)
    while True:
        conn, _ = server.accept()
        try:
            conn.settimeout(1.0)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            conn.sendall(RESPONSE)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
