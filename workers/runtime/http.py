"""Per-process HTTP endpoint: /metrics (Prometheus), /healthz (alive), /readyz (connected to RabbitMQ)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class StatusServer:
    """Started explicitly (never at import). ``ready`` returns {worker: connected?}."""

    def __init__(self, registry: CollectorRegistry, ready: Callable[[], dict[str, bool]],
                 host: str = "127.0.0.1", port: int = 9464) -> None:
        self.registry, self.ready = registry, ready
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?")[0]
                if path == "/metrics":
                    return self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                if path == "/healthz":
                    return self._send(200, b'{"status": "alive"}\n', "application/json")
                if path == "/readyz":
                    state = outer.ready()
                    ok = bool(state) and all(state.values())
                    body = json.dumps({"ready": ok, "workers": state}).encode() + b"\n"
                    return self._send(200 if ok else 503, body, "application/json")
                self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep scrapes out of the logs
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "StatusServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
