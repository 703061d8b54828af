"""A small fake HashiCorp Vault HTTP server: just enough KV v2 for the Vault key provider.

No Vault server can be installed in this environment, so the provider is tested
against this: token check (``X-Vault-Token``), ``GET``/``POST`` on
``/v1/<mount>/data/<path>`` with versions and check-and-set, Vault-shaped JSON
errors. It says nothing about real Vault's auth methods, policies or leases.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeVault:
    """Run with ``with FakeVault(token) as vault:``; ``vault.url`` is the address."""

    def __init__(self, token: str):
        self.token = token
        self.secrets: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                return

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> str | None:
                fake.requests.append((self.command, self.path))
                if fake.down:
                    self._reply(503, {"errors": ["Vault is sealed"]})
                    return None
                if self.headers.get("X-Vault-Token") != fake.token:
                    self._reply(403, {"errors": ["permission denied"]})
                    return None
                path = self.path.split("?", 1)[0]
                if not path.startswith("/v1/") or "/data/" not in path:
                    self._reply(404, {"errors": []})
                    return None
                return path

            def do_GET(self) -> None:
                path = self._route()
                if path is None:
                    return
                with fake._lock:
                    versions = fake.secrets.get(path)
                    if not versions:
                        self._reply(404, {"errors": []})
                        return
                    latest = versions[-1]
                self._reply(
                    200,
                    {
                        "data": {
                            "data": latest["data"],
                            "metadata": {
                                "version": len(versions),
                                "created_time": latest["created"],
                                "deletion_time": "",
                                "destroyed": False,
                            },
                        }
                    },
                )

            def do_POST(self) -> None:
                path = self._route()
                if path is None:
                    return
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    versions = fake.secrets.setdefault(path, [])
                    cas = body.get("options", {}).get("cas")
                    if cas is not None and cas != len(versions):
                        self._reply(
                            400,
                            {
                                "errors": [
                                    "check-and-set parameter did not match the current version"
                                ]
                            },
                        )
                        return
                    versions.append(
                        {"data": body["data"], "created": datetime.now(UTC).isoformat()}
                    )
                    self._reply(200, {"data": {"version": len(versions)}})

            do_PUT = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeVault:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
