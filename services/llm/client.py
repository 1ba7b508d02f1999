"""The LLM adapter: the ONLY module that imports ``openai``; no openai type leaves it.

:class:`OpenAIAnalyst` sends the rendered prompt plus the chart PNG (a base64 ``image_url`` data URI, when the
analyst passes one) to ``chat.completions.create`` with a strict JSON-schema ``response_format``: to OpenAI, to any
OpenAI-compatible endpoint (``base_url``: Ollama, vLLM, llama.cpp server, LM Studio, proxies; a local one needs no
key, the SDK gets the placeholder :data:`NO_KEY`), or to Azure OpenAI through the SDK's ``AzureOpenAI`` client
(deployment and ``api-version``). The answer cap goes in ``max_completion_tokens`` (OpenAI) or ``max_tokens``
(what compatible servers and Azure read), per ``token_param``. The body of a 200 is read raw and handed to
:func:`services.llm.completion.reply_from_body`, so every shape (tool calls, content parts, an event stream, an
error object) ends in a reply or :class:`~services.llm.reply.LlmUnusableReplyError`, never in an SDK exception.

Retries are ours, not the SDK's (the SDK client is built with ``max_retries=0``), so attempts are counted
and reported: 408, 409, 429, 5xx, timeouts and connection errors are retried up to ``max_retries`` times with
exponential backoff (``backoff_s * 2**n``, capped at ``max_backoff_s``; a server's ``retry-after-ms`` /
``retry-after`` header is honoured up to the cap). When they run out: :class:`LlmTimeoutError` (all timeouts)
or :class:`LlmRetriesExhaustedError` (both are :class:`~services.errors.LlmTransientError`). Any other 4xx
(bad request, auth, not found, ...) is not retried: :class:`LlmRequestError`. The API key stays inside the
SDK client: it is not in ``repr``, errors (key-like strings are redacted from server messages), or the
recorded request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import SecretStr

from models.enums import LlmProvider
from services.llm.completion import reply_from_body
from services.llm.prompts import RenderedPrompt
from services.llm.reply import (
    LlmReply,
    LlmRequestError,
    LlmRetriesExhaustedError,
    LlmTimeoutError,
    LlmUnusableReplyError,
)
from services.llm.schema import response_format
from services.settings import LLMSettings, TokenLimitParam

__all__ = [
    "NO_KEY",
    "LlmReply",
    "LlmRequestError",
    "LlmRetriesExhaustedError",
    "LlmTimeoutError",
    "OpenAIAnalyst",
    "image_data_uri",
    "redact",
]

RETRYABLE_STATUS: Final = frozenset({408, 409, 429})
MAX_COMPLETION_TOKENS: Final = 800
NO_KEY: Final = "no-key"  # what the SDK gets for a local endpoint without a key (it insists on a string)


def image_data_uri(png: bytes) -> str:
    """Return ``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None


class OpenAIAnalyst:
    """A configured chat-completions endpoint. ``http_client`` (an ``httpx2.Client``, as the SDK takes) is optional."""

    def __init__(
        self,
        *,
        api_key: SecretStr | str | None,
        model: str,
        base_url: str | None = None,
        provider: LlmProvider = LlmProvider.OPENAI,
        deployment: str | None = None,
        api_version: str | None = None,
        token_param: TokenLimitParam = "max_completion_tokens",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        temperature: float = 0.0,
        http_client: Any | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        image_detail: Literal["low", "high", "auto"] = "low",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = (api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key or "").strip()
        if provider is LlmProvider.OFFLINE:
            raise ValueError("the offline analyst has no LLM client")
        if not key and provider is not LlmProvider.COMPATIBLE:
            raise ValueError(f"provider {provider.value} needs an API key; without one use the offline analyst")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.model = model
        self.base_url = base_url
        self.provider = provider
        self.deployment = deployment
        self.api_version = api_version
        self.token_param = token_param
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.temperature = temperature
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.image_detail = image_detail
        self._sleep = sleep
        self._secret = key
        self._client: openai.OpenAI
        if provider is LlmProvider.AZURE:
            if not (base_url and deployment and api_version):
                raise ValueError("azure needs base_url (the resource endpoint), deployment and api_version")
            self._client = openai.AzureOpenAI(
                api_key=key,
                azure_endpoint=base_url,
                azure_deployment=deployment,
                api_version=api_version,
                timeout=timeout_s,
                max_retries=0,
                http_client=http_client,
            )
        else:
            self._client = openai.OpenAI(
                api_key=key or NO_KEY, base_url=base_url, timeout=timeout_s, max_retries=0, http_client=http_client
            )

    @classmethod
    def from_settings(cls, settings: LLMSettings, **options: Any) -> OpenAIAnalyst:
        """The client ``settings`` describe (``options``: the tuning knobs, e.g. ``backoff_s`` in tests)."""
        return cls(
            api_key=settings.key(),
            model=settings.model,
            base_url=settings.base_url,
            provider=settings.resolved_provider,
            deployment=settings.deployment,
            api_version=settings.api_version,
            token_param=settings.token_param,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            temperature=settings.temperature,
            **options,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAIAnalyst(provider={self.provider.value!r}, model={self.model!r}, "
            f"base_url={_without_userinfo(self.base_url)!r}, max_retries={self.max_retries})"
        )

    def messages(self, prompt: RenderedPrompt, chart_png: bytes | None, *, image_url: str | None = None) -> list[Any]:
        """Return the chat messages: the system prompt, then the prompt text and the chart image."""
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt.text}]
        if chart_png is not None:
            url = image_url if image_url is not None else image_data_uri(chart_png)
            content.append({"type": "image_url", "image_url": {"url": url, "detail": self.image_detail}})
        return [{"role": "system", "content": prompt.system}, {"role": "user", "content": content}]

    def request_json(self, prompt: RenderedPrompt, chart_png: bytes | None) -> str:
        """Return the request as JSON for the call record, the image replaced by its size and sha256."""
        placeholder = None
        if chart_png is not None:
            digest = hashlib.sha256(chart_png).hexdigest()
            placeholder = f"data:image/png;base64,<{len(chart_png)} bytes, sha256 {digest}>"
        body: dict[str, Any] = {
            "provider": self.provider.value,
            "model": self.model,
            "base_url": _without_userinfo(self.base_url),
            "temperature": self.temperature,
            self.token_param: MAX_COMPLETION_TOKENS,
            "response_format": response_format(),
            "messages": self.messages(prompt, chart_png, image_url=placeholder),
        }
        if self.provider is LlmProvider.AZURE:
            body.update(deployment=self.deployment, api_version=self.api_version)
        return json.dumps(body, sort_keys=True)

    def _delay(self, attempt: int, exc: Exception) -> float:
        delay: float = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        if isinstance(exc, openai.APIStatusError):
            hinted = _retry_after(exc)
            if hinted is not None:
                delay = min(self.max_backoff_s, hinted)
        return delay

    def complete(self, prompt: RenderedPrompt, chart_png: bytes | None) -> LlmReply:
        """Send one analysis request (retrying transient failures); raise our errors, never openai's."""
        messages = self.messages(prompt, chart_png)
        # Typed as Any: the SDK's overloads want TypedDict messages; ours are checked by the loopback tests.
        create: Any = self._client.chat.completions.with_raw_response.create
        started = time.perf_counter()
        attempts = self.max_retries + 1
        failures: list[str] = []
        all_timeouts = True
        for attempt in range(1, attempts + 1):
            try:
                raw = create(
                    model=self.model,
                    messages=messages,
                    temperature=self.temperature,
                    response_format=response_format(),
                    **{self.token_param: MAX_COMPLETION_TOKENS},
                )
                body = raw.http_response.text
            except openai.APITimeoutError as exc:
                failures.append(f"attempt {attempt}: timeout after {self.timeout_s:g}s")
                last: Exception = exc
            except openai.APIConnectionError as exc:
                all_timeouts = False
                failures.append(f"attempt {attempt}: connection error ({type(exc.__cause__ or exc).__name__})")
                last = exc
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    raise LlmRequestError(
                        f"HTTP {status} from the model endpoint: {_short(exc, self._secret)}",
                        status_code=status,
                        attempts=attempt,
                    ) from None
                all_timeouts = False
                failures.append(f"attempt {attempt}: HTTP {status}")
                last = exc
            except openai.APIError as exc:  # anything else the SDK objects to in a 200
                raise LlmUnusableReplyError(
                    f"unusable response from the model endpoint: {type(exc).__name__}", attempts=attempt
                ) from None
            else:
                latency_ms = round((time.perf_counter() - started) * 1000)
                content_type = str(raw.headers.get("content-type", ""))
                return reply_from_body(body, content_type, model=self.model, latency_ms=latency_ms, attempts=attempt)
            if attempt < attempts:
                self._sleep(self._delay(attempt, last))
        summary = f"gave up after {attempts} attempt(s): " + "; ".join(failures)
        if all_timeouts:
            raise LlmTimeoutError(summary, attempts=attempts)
        raise LlmRetriesExhaustedError(summary, attempts=attempts)


def _without_userinfo(url: str | None) -> str | None:
    # A base URL may embed credentials (https://user:token@host/v1); they never go into a record.
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


_KEY_LIKE: Final = re.compile(r"\b(sk|key|api)[-_][A-Za-z0-9_\-*]{6,}", re.IGNORECASE)


def redact(text: str, secret: str | None = None) -> str:
    """Return ``text`` with ``secret`` and anything shaped like an API key (``sk-...``) replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub("***", text)


def _short(exc: openai.APIStatusError, secret: str) -> str:
    # The server's error message only (no headers or request), with key-like strings removed: a 401 from
    # OpenAI echoes part of the key ("Incorrect API key provided: sk-abc***xyz").
    body = exc.body
    message = str(exc.message)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = str(inner["message"])
    return redact(message, secret)[:300]
