"""A loopback OpenAI-compatible chat-completions server for tests (stdlib only, one thread per request).

Scriptable: queue responses with :meth:`LoopbackLLMServer.enqueue` (answers, HTTP errors, delays, or responses
held until a ``threading.Event`` is set or the client hangs up: a timeout without a real-time race); every
request body is recorded in :attr:`LoopbackLLMServer.requests`. When the queue is empty the server answers
HTTP 418 with "no scripted response left" (a non-retryable 4xx), so an unexpected extra request fails the
test loudly instead of hanging. Only ``POST /v1/chat/completions`` exists; anything else is 404.

Usage::

    with LoopbackLLMServer() as server:
        server.enqueue(answer({"action": "BUY", ...}), error(429, retry_after_ms=10))
        client = OpenAI(base_url=server.base_url, api_key="test")
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["LoopbackLLMServer", "RecordedRequest", "Scripted", "answer", "error", "refusal"]


@dataclass(frozen=True)
class Scripted:
    """One scripted HTTP response. ``delay_s`` sleeps before answering; ``hold`` answers only once the event is set
    and drops the response when the client hangs up first (a client timeout that no scheduling delay can turn into
    an answer; :attr:`LoopbackLLMServer.abandoned` counts them)."""

    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hold: threading.Event | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or the raw text when it is not JSON

    def image_urls(self) -> list[str]:
        """Return every ``image_url.url`` in the request's messages."""
        urls: list[str] = []
        for message in self.body.get("messages", []) if isinstance(self.body, dict) else []:
            content = message.get("content")
            if isinstance(content, list):
                urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        return urls


def answer(
    content: str | dict[str, Any] | None,
    *,
    prompt_tokens: int | None = 1200,
    completion_tokens: int | None = 80,
    model: str = "gpt-4o-mini",
    refusal_text: str | None = None,
    finish_reason: str = "stop",
    delay_s: float = 0.0,
) -> Scripted:
    """Return a 200 chat completion whose message content is ``content`` (a dict is JSON-encoded)."""
    text = json.dumps(content) if isinstance(content, dict) else content
    body: dict[str, Any] = {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal_text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return Scripted(200, body, delay_s=delay_s)


def refusal(text: str = "I can't help with that.") -> Scripted:
    """Return a structured-outputs refusal: no content, the ``refusal`` field set."""
    return answer(None, refusal_text=text)


def error(status: int, message: str = "scripted error", *, retry_after_ms: int | None = None) -> Scripted:
    """Return an OpenAI-style error body with ``status`` (and a ``retry-after-ms`` header when given)."""
    headers = {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}
    body = {"error": {"message": message, "type": "scripted", "param": None, "code": str(status)}}
    return Scripted(status, body, headers)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access logs
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(raw)
        except json.JSONDecodeError:
            body = raw
        owner = self.server.owner
        owner._record(RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(error(404, f"no route {self.path}"))
            return
        self._send(owner._next())

    def do_GET(self) -> None:
        self._send(error(404, f"no route {self.path}"))

    def _client_hung_up(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, scripted: Scripted) -> None:
        if scripted.delay_s:
            time.sleep(scripted.delay_s)
        if scripted.hold is not None:
            while not scripted.hold.wait(0.02):
                if self._client_hung_up():
                    self.server.owner._abandon()
                    return
        body = scripted.body
        data = (
            json.dumps(body).encode()
            if isinstance(body, dict | list)
            else body
            if isinstance(body, bytes)
            else str(body or "").encode()
        )
        try:
            self.send_response(scripted.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in scripted.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackLLMServer


class LoopbackLLMServer:
    """Serve on 127.0.0.1 at a free port until :meth:`stop` (or the ``with`` block ends)."""

    def __init__(self) -> None:
        self._queue: deque[Scripted] = deque()
        self._requests: list[RecordedRequest] = []
        self._abandoned = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-llm", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def abandoned(self) -> int:
        """Held responses never sent because the client hung up first (it timed out)."""
        with self._lock:
            return self._abandoned

    @property
    def pending(self) -> int:
        """Scripted responses not yet served."""
        with self._lock:
            return len(self._queue)

    def enqueue(self, *responses: Scripted) -> None:
        with self._lock:
            self._queue.extend(responses)

    def start(self) -> LoopbackLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackLLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _abandon(self) -> None:
        with self._lock:
            self._abandoned += 1

    def _next(self) -> Scripted:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return error(418, "no scripted response left")
