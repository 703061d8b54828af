"""Live receivers for alert notifications: an aiosmtpd SMTP server and an HTTP webhook receiver.

Both listen on loopback ports the tests pick; nothing is faked inside the product.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Mailbox:
    """What the SMTP server accepted, and the recipients it refuses with 550."""

    refuse: set[str] = field(default_factory=set)
    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """Yield a live SMTP server's mailbox and port (aiosmtpd on loopback)."""
    box = Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@dataclass
class Hooks:
    """What the webhook receiver answers (a script of statuses, or hang) and what it got."""

    secret: bytes
    script: list[int | str] = field(default_factory=list)  # 200, 500, "hang"; then 200
    received: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def webhook_receiver(secret: bytes) -> Iterator[tuple[Hooks, str]]:
    """Yield a live webhook receiver's state and URL; it verifies every signature it gets."""
    hooks = Hooks(secret=secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stamp = self.headers.get("X-Clinical-MLOps-Timestamp", "")
            given = self.headers.get("X-Clinical-MLOps-Signature", "")
            want = (
                "sha256="
                + hmac.new(hooks.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            )
            step = hooks.script.pop(0) if hooks.script else 200
            hooks.received.append(
                {
                    "body": body,
                    "stamp": stamp,
                    "signature": given,
                    "signature_ok": hmac.compare_digest(given, want),
                    "answer": step,
                }
            )
            if step == "hang":
                hooks.release.wait(30)
                return
            self.send_response(int(step))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        hooks.release.set()
        server.shutdown()
        server.server_close()
