"""A loopback OpenAI-compatible chat-completions server for tests (stdlib only, one thread per request).

Scriptable: queue responses with :meth:`LoopbackLLMServer.enqueue` (answers, HTTP errors, delays, or responses
held until a ``threading.Event`` is set or the client hangs up: a timeout without a real-time race); every
request body is recorded in :attr:`LoopbackLLMServer.requests`. When the queue is empty the server answers
HTTP 418 with "no scripted response left" (a non-retryable 4xx), so an unexpected extra request fails the
test loudly instead of hanging.

It speaks one of four dialects (``flavor``), each checked against that project's own source (cited at the code
that imitates it):

* ``openai`` (default): ``POST /v1/chat/completions``, ``Authorization: Bearer`` checked when ``api_key`` is given;
  errors ``{"error": {"message", "type", "param", "code"}}``.
* ``ollama`` (OpenAI compatibility, ollama/ollama docs/api/openai-compatibility.mdx, openai/openai.go):
  ``POST /v1/chat/completions``, no auth (the key is "required but ignored"), reads ``max_tokens`` (not
  ``max_completion_tokens``); answers carry ``system_fingerprint: "fp_ollama"`` and usage ``prompt_tokens`` /
  ``completion_tokens`` / ``total_tokens``, no ``refusal`` and no ``logprobs`` (omitted when empty); errors
  ``{"error": {"message", "type": "invalid_request_error" | "not_found_error" | "api_error", "param": null,
  "code": null}}``; an unknown path is gin's plain-text 404, a GET on the chat path gin's plain-text 405.
* ``vllm`` (OpenAI-compatible server, v0.10.1 and later): ``POST /v1/chat/completions``, ``Authorization: Bearer``
  checked only when started with ``api_key`` (401 ``{"error": "Unauthorized"}``); answers carry the vLLM extension
  fields as ``null`` (``stop_reason``, ``token_ids``, ``reasoning``, ``prompt_logprobs``, ``prompt_token_ids``,
  ``kv_transfer_params``...), no ``tool_calls`` when there are none; errors ``{"error": {"message", "type":
  "BadRequestError" | "NotFoundError" | ..., "param", "code": <int status>}}`` (the flat ``{"object": "error",
  ...}`` of vLLM <= 0.10.0 is :func:`vllm_legacy_error`).
* ``azure`` (Azure OpenAI REST, Azure/azure-rest-api-specs .../inference/stable/2024-10-21/inference.json):
  ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``, the ``api-key`` header; answers carry
  ``prompt_filter_results`` and per-choice ``content_filter_results``; errors ``{"error": {"code", "message"}}``
  (401 for a wrong key, 404 ``DeploymentNotFound``, 404 "Resource not found" without api-version).

Anything else is 404 (in the flavor's error shape; Ollama's is plain text). :meth:`LoopbackLLMServer.error` scripts
an error in that shape; :func:`stream` an event-stream reply and :func:`tool_call` a tool-call reply.

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
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Flavor",
    "LoopbackLLMServer",
    "RecordedRequest",
    "Scripted",
    "answer",
    "error",
    "refusal",
    "stream",
    "tool_call",
    "vllm_legacy_error",
]

Flavor = Literal["openai", "ollama", "vllm", "azure"]
TOKEN_FIELD: dict[Flavor, str] = {  # the answer-length field each reads (the documented one)
    "openai": "max_completion_tokens",
    # ollama/ollama openai/openai.go ChatCompletionRequest has MaxTokens `json:"max_tokens"` and no
    # max_completion_tokens; docs/api/openai-compatibility.mdx lists only `max_tokens`.
    "ollama": "max_tokens",
    # vllm-project/vllm vllm/entrypoints/openai/chat_completion/protocol.py: both fields, max_tokens "deprecated in
    # favor of the max_completion_tokens field"; serving reads `max_completion_tokens or max_tokens`.
    "vllm": "max_tokens",
    # Azure/azure-rest-api-specs .../stable/2024-10-21/inference.json chatCompletionsRequestCommon: max_tokens
    # (deprecated in favour of max_completion_tokens, which the same version also accepts).
    "azure": "max_tokens",
}


@dataclass(frozen=True)
class Scripted:
    """One scripted HTTP response. ``delay_s`` sleeps before answering; ``hold`` answers only once the event is set
    and drops the response when the client hangs up first (a client timeout that no scheduling delay can turn into
    an answer; :attr:`LoopbackLLMServer.abandoned` counts them)."""

    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "application/json"
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


def tool_call(arguments: str | dict[str, Any] | None, *, name: str = "submit_analysis") -> Scripted:
    """Return a 200 whose message is a tool call (content null) with ``arguments`` (a dict is JSON-encoded)."""
    scripted = answer(None)
    function: dict[str, Any] = {"name": name}
    if arguments is not None:
        function["arguments"] = json.dumps(arguments) if isinstance(arguments, dict) else arguments
    message = scripted.body["choices"][0]["message"]
    message["tool_calls"] = [{"id": "call_1", "type": "function", "function": function}]
    scripted.body["choices"][0]["finish_reason"] = "tool_calls"
    return scripted


def stream(
    content: str | dict[str, Any], *, pieces: int = 4, usage: bool = True, finish: bool = True, done: bool = True
) -> Scripted:
    """Return a ``text/event-stream`` 200 (what a server that streams regardless sends): ``content`` in ``pieces``
    delta chunks, a usage chunk, then ``data: [DONE]``; ``finish=False, done=False`` cut it off mid-way."""
    text = json.dumps(content) if isinstance(content, dict) else content
    size = max(1, -(-len(text) // pieces))
    base = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    for start in range(0, len(text), size):
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": text[start : start + size]}}]})
    if finish:
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 1200, "completion_tokens": 80}})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + (["data: [DONE]\n\n"] if done else [])
    return Scripted(200, "".join(lines), content_type="text/event-stream")


def refusal(text: str = "I can't help with that.") -> Scripted:
    """Return a structured-outputs refusal: no content, the ``refusal`` field set."""
    return answer(None, refusal_text=text)


def error(
    status: int, message: str = "scripted error", *, retry_after_ms: int | None = None, flavor: Flavor = "openai"
) -> Scripted:
    """Return an error body in ``flavor``'s shape with ``status`` (and a ``retry-after-ms`` header when given)."""
    headers = {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}
    body: dict[str, Any]
    if flavor == "ollama":
        # ollama/ollama openai/openai.go NewError: 400 invalid_request_error, 404 not_found_error, else api_error;
        # Error{Param any, Code *string} left unset, so both serialize as null.
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    elif flavor == "vllm":
        # vllm-project/vllm vllm/entrypoints/openai/engine/protocol.py ErrorResponse{error: ErrorInfo{message, type,
        # param, code: int}} and engine/serving.py create_error_response (BadRequestError 400, NotFoundError 404,
        # NotImplementedError 501, InternalServerError 500); nested since vLLM PR #22099 (v0.10.1).
        kind = {400: "BadRequestError", 404: "NotFoundError", 501: "NotImplementedError"}.get(
            status, "InternalServerError"
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    elif flavor == "azure":
        # Azure/azure-rest-api-specs .../stable/2024-10-21/inference.json errorResponse{error: error{code: string,
        # message, param, type, inner_error}}; the service sends code and message (the status as a string for
        # 401/404, see MicrosoftDocs/azure-docs#114602, chatboxai/chatbox#861).
        body = {"error": {"code": str(status), "message": message}}
    else:
        body = {"error": {"message": message, "type": "scripted", "param": None, "code": str(status)}}
    return Scripted(status, body, headers)


def vllm_legacy_error(status: int, message: str = "scripted error") -> Scripted:
    """The flat error body vLLM <= 0.10.0 sent (``{"object": "error", "message", "type", "param", "code"}``, quoted
    in vllm-project/vllm#12886 and foundation-model-stack/fms-guardrails-orchestrator#511): old servers still run."""
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return Scripted(status, {"object": "error", "message": message, "type": kind, "param": None, "code": status})


CHAT_PATH = "/v1/chat/completions"
AZURE_NO_DEPLOYMENT = ("The API deployment for this resource does not exist. If you created the deployment within "
                       "the last 5 minutes, please wait a moment and try again.")  # fmt: skip
AZURE_ACCESS_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                       "valid key for an active subscription and use a correct regional API endpoint for your "
                       "resource.")  # fmt: skip

# Azure/azure-rest-api-specs .../stable/2024-10-21/inference.json contentFilterSeverityResult {filtered, severity:
# safe|low|medium|high} per category (hate, sexual, violence, self_harm); the prompt's results
# (contentFilterPromptResults) add jailbreak, a contentFilterDetectedResult {filtered, detected}.
_FILTERS = {name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")}
_PROMPT_FILTERS = {**_FILTERS, "jailbreak": {"filtered": False, "detected": False}}


def _flavored(flavor: Flavor, body: Any) -> Any:
    """A scripted OpenAI chat completion dressed as ``flavor`` answers it (other bodies unchanged)."""
    if not isinstance(body, dict) or body.get("object") != "chat.completion" or flavor == "openai":
        return body
    body = json.loads(json.dumps(body))  # a deep copy: the scripted body may be enqueued twice
    choices = [c for c in body.get("choices", []) if isinstance(c, dict)]
    if flavor == "ollama":
        # ollama/ollama openai/openai.go ToChatCompletion: SystemFingerprint "fp_ollama"; Message has no refusal;
        # Choice.Logprobs is `omitempty` (absent unless asked for); Usage prompt/completion/total_tokens.
        body["system_fingerprint"] = "fp_ollama"
        for choice in choices:
            choice.pop("logprobs", None)
            if isinstance(choice.get("message"), dict):
                choice["message"].pop("refusal", None)
    elif flavor == "vllm":
        # vllm-project/vllm vllm/entrypoints/openai/chat_completion/protocol.py ChatCompletionResponse /
        # ChatCompletionResponseChoice / ChatMessage, sent as model_dump() (api_router.py), so unset fields are null;
        # ChatMessage drops an empty tool_calls list; "reasoning" replaced "reasoning_content" (vLLM PR #27752).
        body.update(service_tier=None, system_fingerprint=None, prompt_logprobs=None, prompt_token_ids=None,
                    kv_transfer_params=None)  # fmt: skip
        if isinstance(body.get("usage"), dict):
            body["usage"]["prompt_tokens_details"] = None
        for choice in choices:
            choice.update(stop_reason=None, token_ids=None)
            choice.setdefault("logprobs", None)
            if isinstance(choice.get("message"), dict):
                choice["message"].update(annotations=None, audio=None, function_call=None, reasoning=None)
                if not choice["message"].get("tool_calls"):
                    choice["message"].pop("tool_calls", None)
    elif flavor == "azure":
        # Azure/azure-rest-api-specs .../stable/2024-10-21/inference.json createChatCompletionResponse:
        # prompt_filter_results [{prompt_index, content_filter_results}] and per choice content_filter_results;
        # system_fingerprint is a free string (this value is made up).
        body["system_fingerprint"] = "fp_azure"
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _PROMPT_FILTERS}]
        for choice in choices:
            choice["content_filter_results"] = _FILTERS
    return body


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
        refused = owner._refuse(self.path, {k.lower(): v for k, v in self.headers.items()})
        if refused is not None:
            self._send(refused)
            return
        self._send(owner._next())

    def do_GET(self) -> None:
        owner = self.server.owner
        if owner.flavor == "ollama" and urlsplit(self.path).path.rstrip("/") == CHAT_PATH:
            # ollama/ollama server/routes.go sets gin's HandleMethodNotAllowed; gin-gonic/gin gin.go default405Body.
            self._send(Scripted(405, "405 method not allowed", content_type="text/plain"))
            return
        self._send(owner._unknown_route(self.path))

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
        body = _flavored(self.server.owner.flavor, scripted.body)
        data = (
            json.dumps(body).encode()
            if isinstance(body, dict | list)
            else body
            if isinstance(body, bytes)
            else str(body or "").encode()
        )
        try:
            self.send_response(scripted.status)
            self.send_header("Content-Type", scripted.content_type)
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
    """Serve on 127.0.0.1 at a free port until :meth:`stop` (or the ``with`` block ends), as ``flavor`` does.

    ``api_key``: the key the server demands (openai, vllm: ``Authorization: Bearer``; azure: ``api-key``; ollama
    ignores keys); ``None`` demands none (azure always demands one). ``deployment``: azure's deployment name.
    """

    def __init__(
        self, flavor: Flavor = "openai", *, api_key: str | None = None, deployment: str = "trader-gpt4o-mini"
    ) -> None:
        if flavor == "azure" and api_key is None:
            raise ValueError("an azure endpoint always demands an api-key")
        self.flavor: Flavor = flavor
        self.api_key = api_key
        self.deployment = deployment
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
        """What a client is configured with: ``…/v1``, or for azure the resource endpoint."""
        root = f"http://127.0.0.1:{self.port}"
        return root if self.flavor == "azure" else root + "/v1"

    @property
    def token_field(self) -> str:
        """The request field this flavor reads as the answer's length cap."""
        return TOKEN_FIELD[self.flavor]

    def error(self, status: int, message: str = "scripted error", **kw: Any) -> Scripted:
        """An error in this server's flavor (see :func:`error`)."""
        return error(status, message, flavor=self.flavor, **kw)

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
        return self.error(418, "no scripted response left")

    def _unknown_route(self, path: str) -> Scripted:
        if self.flavor == "ollama":
            # Ollama's router is gin (server/routes.go, gin.Default(), no NoRoute handler): gin-gonic/gin gin.go
            # default404Body "404 page not found", plain text.
            return Scripted(404, "404 page not found", content_type="text/plain")
        # vllm: an unknown path falls to FastAPI's own 404, which the stored vLLM sources do not show; kept in the
        # flavor's error shape (the client reads either as an HTTP 404).
        return self.error(404, f"no route {path}")

    def _refuse(self, path: str, headers: dict[str, str]) -> Scripted | None:
        """The flavor's answer to a wrong route or credential, or ``None`` when the request may be served."""
        parts = urlsplit(path)
        route = parts.path.rstrip("/")
        if self.flavor == "azure":
            # The path and header are what the openai package's AzureOpenAI sends (openai/lib/azure.py: base_url
            # "{azure_endpoint}/openai/deployments/{azure_deployment}", default_query api-version, header api-key) and
            # what Azure/azure-rest-api-specs .../stable/2024-10-21/inference.json documents (server
            # https://{endpoint}/openai, path /deployments/{deployment-id}/chat/completions, api-version a required
            # query parameter, securitySchemes apiKey: header "api-key").
            if route != f"/openai/deployments/{self.deployment}/chat/completions":
                if route.startswith("/openai/deployments/") and route.endswith("/chat/completions"):
                    # The service's words, quoted in MicrosoftDocs/azure-docs#114013 and chatboxai/chatbox#861.
                    return Scripted(404, {"error": {"code": "DeploymentNotFound", "message": AZURE_NO_DEPLOYMENT}})
                return self.error(404, "Resource not found")
            if not parse_qs(parts.query).get("api-version"):
                # 404, not 400: MicrosoftDocs/azure-docs#114602; body {"code": "404", "message": "Resource not found"}
                # as quoted in langchain-ai/langchain#13284 and ThinkInAIXYZ/deepchat#262.
                return self.error(404, "Resource not found")
            if headers.get("api-key") != self.api_key:
                # Body {"error": {"code": "401", "message": ...}} as quoted in SciSharp/BotSharp#386 and
                # microsoft/semantic-kernel#10337.
                return self.error(401, AZURE_ACCESS_DENIED)
            return None
        key_checked = self.api_key is not None and self.flavor != "ollama"
        key_ok = not key_checked or headers.get("authorization") == f"Bearer {self.api_key}"
        if self.flavor == "vllm" and not key_ok and route.startswith("/v1"):
            # vllm-project/vllm vllm/entrypoints/openai/server_utils.py (later serve/middleware/authenticate.py)
            # AuthenticationMiddleware, ahead of routing: JSONResponse({"error": "Unauthorized"}, status_code=401)
            # for any /v1 path whose "Authorization: Bearer" token is not one of --api-key.
            return Scripted(401, {"error": "Unauthorized"})
        if route != CHAT_PATH:
            return self._unknown_route(path)
        if not key_ok:
            return self.error(401, "Incorrect API key provided.")
        return None
