"""Read an HTTP 200 body of a chat-completions endpoint, whatever its shape, into an :class:`LlmReply`.

Vendor-free (no ``openai`` types): ``services.llm.client`` hands over the raw body text and content type. Shapes
that carry an answer become a reply, with ``source`` saying where its text came from:

* a chat completion whose ``message.content`` is a string, or a list of content parts (their ``text`` joined);
* ``message.tool_calls`` (content null): the first function call's ``arguments`` (a JSON string, or an object as
  some servers send) are the answer; so is a legacy ``message.function_call``;
* a ``text/event-stream`` body (a server that streams although no stream was asked for): the ``data:`` chunks'
  ``delta`` fragments (content, refusal, tool-call arguments) are joined, usage taken from the chunk that has it.

Anything else raises :class:`~services.llm.reply.LlmUnusableReplyError` naming what was wrong (not JSON, not an
object, an error object with HTTP 200, no choices, a choice without a message, content that is not text, a tool call
without arguments, a stream cut off before it finished or carrying an error). The analyst turns that into ABSTAIN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.llm.reply import CONTENT, LlmReply, LlmUnusableReplyError

__all__ = ["reply_from_body"]


def reply_from_body(text: str, content_type: str, *, model: str, latency_ms: int, attempts: int) -> LlmReply:
    """Return the reply in ``text`` (the HTTP 200 body) or raise ``LlmUnusableReplyError``."""
    stripped = text.lstrip()
    if "text/event-stream" in content_type.lower() or stripped.startswith(("data:", "event:")):
        body = _assemble_stream(text, attempts)
    else:
        try:
            body = json.loads(text)
        except ValueError:
            raise LlmUnusableReplyError(
                "the model endpoint's HTTP 200 body is not a chat completion (not JSON)", attempts=attempts
            ) from None
    return _from_completion(body, model=model, latency_ms=latency_ms, attempts=attempts)


def _unusable(message: str, attempts: int) -> LlmUnusableReplyError:
    return LlmUnusableReplyError(message, attempts=attempts)


def _error_message(body: dict[str, Any]) -> str:
    inner = body.get("error", body)
    if isinstance(inner, dict):
        inner = inner.get("message", inner)
    return str(inner)[:300]


def _from_completion(body: Any, *, model: str, latency_ms: int, attempts: int) -> LlmReply:
    if not isinstance(body, dict):
        raise _unusable(f"the model endpoint's HTTP 200 body is a JSON {type(body).__name__}, not an object", attempts)
    if "choices" not in body and ("error" in body or body.get("object") == "error"):
        raise _unusable(f"the model endpoint answered HTTP 200 with an error: {_error_message(body)}", attempts)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _unusable("the model endpoint returned no choices", attempts)
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _unusable(f"the first choice is a JSON {type(choice).__name__}, not an object", attempts)
    message = choice.get("message")
    if message is None:
        raise _unusable("the model endpoint returned a choice with no message", attempts)
    if not isinstance(message, dict):
        raise _unusable(f"the choice's message is a JSON {type(message).__name__}, not an object", attempts)
    text, source = _message_text(message, attempts)
    refusal = message.get("refusal")
    usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
    finish = choice.get("finish_reason")
    return LlmReply(
        text=text,
        refusal=refusal if isinstance(refusal, str) else None,
        model=str(body.get("model") or model),
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        latency_ms=latency_ms,
        attempts=attempts,
        finish_reason=finish if isinstance(finish, str) else None,
        source=source,
    )


def _message_text(message: dict[str, Any], attempts: int) -> tuple[str | None, str]:
    content = message.get("content")
    if isinstance(content, list):
        parts = [str(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if not parts:
            raise _unusable("the message content is a list with no text part", attempts)
        return "".join(parts), "message content parts"
    if content is not None and not isinstance(content, str):
        what = "a JSON object" if isinstance(content, dict) else f"a {type(content).__name__}"
        raise _unusable(f"the message content is not text but {what}", attempts)
    if content is not None and content.strip():
        return content, CONTENT
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        call = calls[0]
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise _unusable("the reply is a tool call without a function", attempts)
        return _arguments(function, "tool call", attempts)
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        return _arguments(legacy, "function call", attempts)
    return content, CONTENT


def _arguments(function: dict[str, Any], kind: str, attempts: int) -> tuple[str, str]:
    name = function.get("name")
    label = f"{kind} {name!r} arguments" if isinstance(name, str) else f"{kind} arguments"
    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        return json.dumps(arguments), label
    if not isinstance(arguments, str) or not arguments.strip():
        raise _unusable(f"the reply is a {kind}{f' {name!r}' if isinstance(name, str) else ''} with no arguments",
                        attempts)  # fmt: skip
    return arguments, label


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class _Stream:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_name: str | None = None
    tool_arguments: list[str] = field(default_factory=list)
    model: str | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    done: bool = False
    chunks: int = 0


def _assemble_stream(text: str, attempts: int) -> dict[str, Any]:
    """Join a server-sent-events body into the body of one chat completion."""
    stream = _Stream()
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue  # comments, event names, ids, blank separators
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            stream.done = True
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _unusable(f"streamed chunk {stream.chunks + 1} is not JSON: {data[:80]!r}", attempts) from None
        stream.chunks += 1
        if not isinstance(chunk, dict):
            raise _unusable(f"streamed chunk {stream.chunks} is a JSON {type(chunk).__name__}", attempts)
        if "error" in chunk or chunk.get("object") == "error":
            raise _unusable(f"the stream carried an error: {_error_message(chunk)}", attempts)
        _add_chunk(stream, chunk)
    if stream.chunks == 0:
        raise _unusable("the streamed reply has no data chunks", attempts)
    if not stream.done and stream.finish_reason is None:
        raise _unusable(f"the streamed reply was cut off after {stream.chunks} chunk(s) (no finish_reason, no [DONE])",
                        attempts)  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": "".join(stream.content) or None}
    if stream.refusal:
        message["refusal"] = "".join(stream.refusal)
    if stream.tool_arguments or stream.tool_name:
        function = {"name": stream.tool_name, "arguments": "".join(stream.tool_arguments)}
        message["tool_calls"] = [{"type": "function", "function": function}]
    body: dict[str, Any] = {
        "model": stream.model,
        "choices": [{"index": 0, "message": message, "finish_reason": stream.finish_reason}],
    }
    if stream.usage is not None:
        body["usage"] = stream.usage
    return body


def _add_chunk(stream: _Stream, chunk: dict[str, Any]) -> None:
    if isinstance(chunk.get("model"), str):
        stream.model = chunk["model"]
    if isinstance(chunk.get("usage"), dict):
        stream.usage = chunk["usage"]
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return
    choice = choices[0]
    if isinstance(choice.get("finish_reason"), str):
        stream.finish_reason = choice["finish_reason"]
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return
    if isinstance(delta.get("content"), str):
        stream.content.append(delta["content"])
    if isinstance(delta.get("refusal"), str):
        stream.refusal.append(delta["refusal"])
    for call in delta.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("index", 0) != 0:
            continue  # only the first tool call is the answer
        if isinstance(function.get("name"), str):
            stream.tool_name = function["name"]
        if isinstance(function.get("arguments"), str):
            stream.tool_arguments.append(function["arguments"])
