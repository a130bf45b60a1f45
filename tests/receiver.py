"""A webhook receiver on loopback for tests and the bench: it records what arrives and answers
from a script.

    with Receiver() as receiver:
        receiver.respond(500, 500)            # the next two requests fail, then the default 200
        receiver.respond(Reply(429, headers={"Retry-After": "5"}), Reply(200, delay=1.0))
        receiver.always(410)                  # every later request: the endpoint is gone
        receiver.answer_with(rule)            # rule(request) answers, or None: the script does
        ...
        received = receiver.wait_for(3, timeout=5)

It speaks HTTP/1.1 with keep-alive and answers each request in one write, so a sender's pooled
connections carry a thousand requests a second.
"""

from __future__ import annotations

import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Reply:
    """One scripted answer; `delay` seconds pass before it is sent (for timeout tests)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as it arrived; header names are lower case, `received_at` is time.time()."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float


class Receiver:
    """Serves on 127.0.0.1 on a free port; with `tls` (a server context) it speaks HTTPS."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._default = Reply()
        self._rule: Callable[[Received], int | Reply | None] = lambda _request: None
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def respond(self, *replies: int | Reply) -> None:
        """Answer the next requests with these, in order, then with the default again."""
        with self._lock:
            self._script.extend(_reply(r) for r in replies)

    def always(self, reply: int | Reply) -> None:
        """Answer with this once the script has run out (200 until told otherwise)."""
        with self._lock:
            self._default = _reply(reply)

    def answer_with(self, rule: Callable[[Received], int | Reply | None]) -> None:
        """Answer each request with what ``rule`` gives for it (called one request at a time,
        so it may keep state), or from the script when it gives None."""
        with self._lock:
            self._rule = rule

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The requests received once there are `count` of them; AssertionError after `timeout`."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._received) >= count, timeout):
                raise AssertionError(
                    f"receiver got {len(self._received)} requests, not {count}, in {timeout} s"
                )
            return list(self._received)

    def start(self) -> Receiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, request: Received) -> Reply:
        with self._lock:
            self._received.append(request)
            self._lock.notify_all()
            ruled = self._rule(request)
            if ruled is not None:
                return _reply(ruled)
            return self._script.popleft() if self._script else self._default


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A sender that gave up and hung up is expected (timeout tests); anything else is not."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _reply(reply: int | Reply) -> Reply:
    return Reply(reply) if isinstance(reply, int) else reply


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        # An idle keep-alive connection is dropped after this, so stopped tests free their threads.
        timeout = 30

        def do_POST(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if len(body) < length:  # the sender died mid-request: nothing was delivered
                self.close_connection = True
                return
            request = Received(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                received_at=time.time(),
            )
            reply = receiver._record(request)
            if reply.delay:
                time.sleep(reply.delay)
            head = [f"HTTP/1.1 {reply.status} {_phrase(reply.status)}"]
            head += [f"{name}: {value}" for name, value in reply.headers.items()]
            head.append(f"Content-Length: {len(reply.body)}")
            try:
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
            except ConnectionError:
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: a bench sends thousands of requests."""

    return Handler


def _phrase(status: int) -> str:
    phrases = BaseHTTPRequestHandler.responses
    return phrases[status][0] if status in phrases else "Status"
