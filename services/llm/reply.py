"""Vendor-free types of the LLM adapter: the reply and the errors ``services.llm.client`` raises."""

from __future__ import annotations

from dataclasses import dataclass

from services.errors import LlmTransientError, SkipError

__all__ = [
    "CONTENT",
    "LlmReply",
    "LlmRequestError",
    "LlmRetriesExhaustedError",
    "LlmTimeoutError",
    "LlmUnusableReplyError",
]


CONTENT = "message content"  # where a reply's text usually comes from (else a tool call, content parts, a stream)


class LlmRequestError(SkipError):
    """The endpoint refused the request for good (a 4xx other than 408/409/429) or answered unusably."""

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts


class LlmUnusableReplyError(LlmRequestError):
    """An HTTP 200 that is not a usable chat completion: a body that is not JSON, no choices, a choice without a
    message, message content that is not text, a tool call without arguments, a stream cut off or carrying an error
    (see ``services.llm.completion``)."""


class LlmRetriesExhaustedError(LlmTransientError):
    """Every attempt failed transiently (429, 5xx, connection errors, timeouts); ``attempts`` were made."""

    def __init__(self, message: str, *, attempts: int):
        super().__init__(message)
        self.attempts = attempts


class LlmTimeoutError(LlmRetriesExhaustedError):
    """Every attempt timed out."""


@dataclass(frozen=True)
class LlmReply:
    """What came back: text (or a refusal), token usage (None when the server reports none), timing."""

    text: str | None
    refusal: str | None
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int
    attempts: int
    finish_reason: str | None
    source: str = CONTENT  # where ``text`` came from, e.g. "tool call 'submit' arguments"
