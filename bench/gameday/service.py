"""One small service of the game day fleet: front, api, queue, worker, cache or edge.

    python3 service.py ROLE HOSTDIR

Reads ``HOSTDIR/etc/ROLE.json`` (address, port, threads, upstreams), writes its pid to
``HOSTDIR/run/ROLE.pid`` and answers ``GET /health`` with JSON. Real dependencies: the
front proxies to the apis, an api reads and writes the cache and pushes jobs on the queue
(its health names an upstream that does not answer), workers pop the queue, the edge
serves HTTPS with the certificate in ``HOSTDIR/tls``. Faults act through files: a config
that does not validate (reason ``config``), ``run/ROLE.flap`` holding a time until which
it is overloaded (``overload``), ``data/corrupt`` (``data``), and ``lib/broken``, with
which it will not start at all. Standard library only: it runs under the system Python.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROLE, HOSTDIR = sys.argv[1], Path(sys.argv[2])
CONFIG = HOSTDIR / "etc" / f"{ROLE}.json"
TIMEOUT = 0.4
_ctx = ssl.create_default_context()
_ctx.check_hostname = False
_ctx.verify_mode = ssl.CERT_NONE


def valid(config: Any) -> bool:
    threads = config.get("threads") if isinstance(config, dict) else None
    return isinstance(threads, int) and 1 <= threads <= 64


class State:
    def __init__(self) -> None:
        self.config = json.loads(CONFIG.read_text())  # the last config that validated
        self.mtime = CONFIG.stat().st_mtime
        self.config_ok = valid(self.config)
        self.queue: list[str] = []
        self.cache: dict[str, str] = {}
        self.lock = threading.Lock()
        self.served = 0
        self.next_api = 0

    def reload(self) -> None:
        try:
            mtime = CONFIG.stat().st_mtime
            if mtime == self.mtime:
                return
            self.mtime = mtime
            loaded = json.loads(CONFIG.read_text())
        except (OSError, ValueError):
            self.config_ok = False
            return
        self.config_ok = valid(loaded)
        if self.config_ok:
            self.config = loaded


STATE: State


def fetch(url: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(url, data=data, timeout=TIMEOUT) as answer:
        return bytes(answer.read())


def health() -> tuple[int, dict[str, Any]]:
    STATE.reload()
    if not STATE.config_ok:
        return 500, {"ok": False, "reason": "config"}
    if (HOSTDIR / "data" / "corrupt").exists():
        return 500, {"ok": False, "reason": "data"}
    flap = HOSTDIR / "run" / f"{ROLE}.flap"
    try:
        if time.time() < float(flap.read_text()):
            return 503, {"ok": False, "reason": "overload"}
    except (OSError, ValueError):
        pass
    if ROLE == "api":
        for name, up in sorted(STATE.config.get("upstreams", {}).items()):
            try:
                fetch(up["url"] + "/health")
            except OSError:
                return 503, {"ok": False, "reason": "upstream", "upstream": name,
                             "upstream_host": up["host"]}
    return 200, {"ok": True, "role": ROLE, "served": STATE.served}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet: the load is steady
        pass

    def answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.answer(*health())
            return
        code, _ = health()
        if code != 200:
            self.answer(code, {"ok": False})
            return
        STATE.served += 1
        try:
            if ROLE == "front":
                apis = STATE.config["upstreams"]["api"]["urls"]
                STATE.next_api = (STATE.next_api + 1) % len(apis)
                self.answer(200, json.loads(fetch(apis[STATE.next_api] + "/work")))
            elif ROLE == "api":
                ups = STATE.config["upstreams"]
                key = f"k{STATE.served % 50}"
                fetch(ups["cache"]["url"] + "/set/" + key, data=str(STATE.served).encode())
                fetch(ups["queue"]["url"] + "/push", data=key.encode())
                self.answer(200, {"ok": True, "key": key})
            elif ROLE == "cache" and self.path.startswith("/get/"):
                with STATE.lock:
                    self.answer(200, {"value": STATE.cache.get(self.path[5:])})
            else:
                self.answer(200, {"ok": True})
        except (OSError, ValueError, KeyError):
            self.answer(502, {"ok": False, "reason": "upstream"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        with STATE.lock:
            if ROLE == "queue" and self.path == "/push":
                STATE.queue.append(body)
                del STATE.queue[:-1000]
                self.answer(200, {"depth": len(STATE.queue)})
            elif ROLE == "queue" and self.path == "/pop":
                self.answer(200, {"job": STATE.queue.pop(0) if STATE.queue else None})
            elif ROLE == "cache" and self.path.startswith("/set/"):
                STATE.cache[self.path[5:]] = body
                self.answer(200, {"ok": True})
            else:
                self.answer(404, {"ok": False})


def work_loop() -> None:
    """A worker pops jobs from its queue; a queue that does not answer is retried."""
    url = STATE.config["upstreams"]["queue"]["url"] + "/pop"
    while True:
        try:
            fetch(url, data=b"")
        except OSError:
            pass
        time.sleep(0.5)


def main() -> None:
    global STATE
    if (HOSTDIR / "lib" / "broken").exists():
        print(f"{ROLE}: cannot load {HOSTDIR / 'lib'}: the installation is broken",
              file=sys.stderr)
        sys.exit(3)
    STATE = State()
    server = ThreadingHTTPServer((STATE.config["address"], STATE.config["port"]), Handler)
    server.daemon_threads = True
    if ROLE == "edge":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(HOSTDIR / "tls" / "cert.pem", HOSTDIR / "tls" / "key.pem")
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    if ROLE == "worker":
        threading.Thread(target=work_loop, daemon=True).start()
    pidfile = HOSTDIR / "run" / f"{ROLE}.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
