"""A scripted OpenAI-compatible chat-completions server for tests (stdlib only).

It answers ``POST /v1/chat/completions`` (also ``/chat/completions``) with replies taken from a
script, both as one JSON ``chat.completion`` object and, when the request says
``"stream": true``, as server-sent ``chat.completion.chunk`` events ending with
``data: [DONE]``. ``GET /v1/models`` lists the one model. Every request is logged.

A reply is a :class:`Step`: final text, tool calls (optionally preceded by text), or an HTTP
error. Who picks the step is a *responder*, any callable ``body -> Step``:

- :class:`Script` (for agents such as OpenCode): the scenario is chosen by a marker word found
  in the latest user message, and the step by how many assistant messages follow that user
  message. It is stateless, so several sessions (and retries) can share one server.
- :class:`Sequence` (for plain clients such as LiteLLM/DSPy): steps in the order requests
  arrive, the last one repeated.

Faults (:class:`Faults`) are injected by request number, counting chat requests from 1:
latency, HTTP errors, malformed bodies, and requests left hanging.

Example::

    script = Script({"fixbug": [tools(call("read", filePath="app.py")), text("Fixed.")]})
    with FakeOpenAI(script) as server:
        run_client(base_url=server.base_url)       # e.g. http://127.0.0.1:PORT/v1
        assert server.requests[0]["model"] == "coder"
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Sequence as _Seq
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeOpenAI",
    "Faults",
    "LoggedRequest",
    "Script",
    "Sequence",
    "Step",
    "ToolCall",
    "call",
    "error",
    "hang",
    "text",
    "tools",
]


# --------------------------------------------------------------------------- script model


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asks for; ``arguments`` is serialised to JSON."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One model reply.

    ``text`` is sent as content (before the tool calls, if any). With ``tool_calls`` the finish
    reason is ``tool_calls``, else ``stop``. With ``error_status`` set, the server answers that
    HTTP status with an OpenAI-style error body instead. With ``hang_seconds`` set, the request
    is held open that long (or until the server stops) and closed with no reply: a client that
    is interrupted meanwhile leaves an unfinished turn.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    error_status: int | None = None
    error_message: str = "scripted error"
    hang_seconds: float = 0.0


def call(name: str, **arguments: Any) -> ToolCall:
    """``call("read", filePath="a.py")`` -> a :class:`ToolCall`."""
    return ToolCall(name, arguments)


def tools(*calls: ToolCall, text: str = "") -> Step:
    """A step that asks for one or more tool calls (in parallel)."""
    return Step(text=text, tool_calls=tuple(calls))


def text(content: str) -> Step:
    """A step that answers with final text."""
    return Step(text=content)


def error(status: int = 400, message: str = "scripted error") -> Step:
    """A step answered with HTTP ``status`` and ``{"error": {"message": ...}}``."""
    return Step(error_status=status, error_message=message)


def hang(seconds: float = 60.0) -> Step:
    """A step never answered: the request is held ``seconds``, then closed without a reply."""
    return Step(hang_seconds=seconds)


Responder = Callable[[dict], Step]


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def system_text(body: Mapping[str, Any]) -> str:
    """The system messages of a request, joined."""
    return "\n".join(message_text(m) for m in body.get("messages", []) if m.get("role") == "system")


class Script:
    """Responder for agent loops: scenario by marker word, step by position.

    ``scenarios`` maps a marker word to its steps. The latest user message of a request is
    searched for each marker (in insertion order, first match wins); requests matching none use
    ``default``. The step index is the number of assistant messages after that user message, so
    step 0 answers the user, step 1 answers the first tool results, and so on; past the end the
    last step is repeated.

    Requests that look like a title-generation call (no tools offered and a system prompt that
    mentions a title) get ``text(title)``; ``title`` may also be a callable receiving the request
    body (pass ``title=None`` to treat such requests like any other).
    """

    def __init__(
        self,
        scenarios: Mapping[str, _Seq[Step]] | None = None,
        default: _Seq[Step] | None = None,
        *,
        title: str | Callable[[dict], str] | None = "Scripted session",
    ) -> None:
        self.scenarios = {k: list(v) for k, v in (scenarios or {}).items()}
        self.default = list(default) if default else [text("Done.")]
        self.title = title

    def is_title_request(self, body: Mapping[str, Any]) -> bool:
        if self.title is None or body.get("tools"):
            return False
        system = " ".join(
            message_text(m) for m in body.get("messages", []) if m.get("role") == "system"
        )
        return "title" in system.lower()

    def scenario_for(self, body: Mapping[str, Any]) -> tuple[str | None, list[Step], int]:
        """(marker, steps, step index) for a request."""
        messages = list(body.get("messages", []))
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        user_text = message_text(messages[last_user]) if last_user >= 0 else ""
        index = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
        for marker, steps in self.scenarios.items():
            if marker in user_text:
                return marker, steps, index
        return None, self.default, index

    def __call__(self, body: dict) -> Step:
        if self.is_title_request(body):
            return text(self.title(body) if callable(self.title) else str(self.title))
        _, steps, index = self.scenario_for(body)
        return steps[min(index, len(steps) - 1)]


class Sequence:
    """Responder returning ``steps`` in request order; the last step is repeated."""

    def __init__(self, steps: Iterable[Step | str]) -> None:
        self.steps = [text(s) if isinstance(s, str) else s for s in steps]
        if not self.steps:
            raise ValueError("Sequence needs at least one step")
        self._count = itertools.count()
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> Step:
        with self._lock:
            n = next(self._count)
        return self.steps[min(n, len(self.steps) - 1)]


@dataclass
class Faults:
    """Faults injected by chat-request number (1-based, in arrival order).

    - ``latency``: seconds slept before answering every request;
    - ``fail``: request number -> HTTP status answered (body ``{"error": ...}``);
    - ``fail_always``: HTTP status answered to every request (``None``: off);
    - ``malformed``: request numbers answered 200 with a body that is not valid JSON / SSE;
    - ``hang``: request numbers held open without a reply for ``hang_seconds`` (or until the
      server stops), then the connection is closed with no response.
    """

    latency: float = 0.0
    fail: Mapping[int, int] = field(default_factory=dict)
    fail_always: int | None = None
    malformed: frozenset[int] | set[int] = frozenset()
    hang: frozenset[int] | set[int] = frozenset()
    hang_seconds: float = 30.0


@dataclass
class LoggedRequest:
    """One request received by the server."""

    number: int  # chat request number (1-based); 0 for other requests
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it was not JSON, or None


# --------------------------------------------------------------------------- server


def _estimate_tokens(s: str) -> int:
    return max(1, len(s) // 4)


class FakeOpenAI:
    """Scripted OpenAI-compatible server on ``127.0.0.1`` (port chosen by the OS).

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``base_url`` ends in ``/v1``.
    ``requests`` holds the JSON bodies of chat requests in arrival order; ``log`` every request.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        faults: Faults | None = None,
        model: str = "coder",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder: Responder = responder or Script()
        self.faults = faults or Faults()
        self.model = model
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._chat_count = 0
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[Any]:
        """Bodies of the chat-completion requests received so far."""
        with self._lock:
            return [r.body for r in self.log if r.number]

    def start(self) -> FakeOpenAI:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="fake-openai", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling
    def _record(
        self, method: str, path: str, headers: Mapping[str, str], body: Any, chat: bool
    ) -> int:
        with self._lock:
            number = 0
            if chat:
                self._chat_count += 1
                number = self._chat_count
            self.log.append(LoggedRequest(number, method, path, dict(headers), body))
            return number

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            server_version = "fake-openai"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                server._record("GET", self.path, dict(self.headers.items()), None, chat=False)
                if path in ("/v1/models", "/models"):
                    _send_json(
                        self,
                        200,
                        {
                            "object": "list",
                            "data": [
                                {
                                    "id": server.model,
                                    "object": "model",
                                    "created": 0,
                                    "owned_by": "scripted",
                                }
                            ],
                        },
                    )
                else:
                    _send_json(
                        self, 404, {"error": {"message": f"no route {path}", "type": "not_found"}}
                    )

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                if path not in ("/v1/chat/completions", "/chat/completions"):
                    server._record("POST", self.path, dict(self.headers.items()), body, chat=False)
                    _send_json(
                        self, 404, {"error": {"message": f"no route {path}", "type": "not_found"}}
                    )
                    return
                number = server._record(
                    "POST", self.path, dict(self.headers.items()), body, chat=True
                )
                server._answer(self, number, body)

        return Handler

    def _answer(self, h: BaseHTTPRequestHandler, number: int, body: Any) -> None:
        f = self.faults
        if f.latency and self._stopping.wait(f.latency):
            return
        if number in f.hang:
            self._stopping.wait(f.hang_seconds)
            h.close_connection = True
            return
        if not isinstance(body, dict):
            _send_json(
                h,
                400,
                {
                    "error": {
                        "message": "request body is not a JSON object",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        status = f.fail.get(number, f.fail_always)
        if status is not None:
            _send_json(h, status, _error_body(status, f"injected failure for request {number}"))
            return
        stream = bool(body.get("stream"))
        if number in f.malformed:
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream" if stream else "application/json")
            h.end_headers()
            h.wfile.write(
                b'data: {"id": "broken", "choices": [\n\n' if stream else b'{"id": "broken", "choi'
            )
            return
        step = self.responder(body)
        if step.hang_seconds:
            self._stopping.wait(step.hang_seconds)
            h.close_connection = True
            return
        if step.error_status is not None:
            _send_json(h, step.error_status, _error_body(step.error_status, step.error_message))
            return
        model = body.get("model") or self.model
        usage = _usage(body, step)
        rid = f"chatcmpl-{number}"
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Cache-Control", "no-cache")
            h.end_headers()
            for chunk in _chunks(rid, model, number, step, usage, include_usage):
                h.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                h.wfile.flush()
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
        else:
            message: dict[str, Any] = {"role": "assistant", "content": step.text or None}
            if step.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": _call_id(number, i),
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for i, c in enumerate(step.tool_calls)
                ]
            _send_json(
                h,
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if step.tool_calls else "stop",
                        }
                    ],
                    "usage": usage,
                },
            )


def _send_json(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def _call_id(number: int, i: int) -> str:
    return f"call_{number}_{i}"


def _error_body(status: int, message: str) -> dict:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(body: Mapping[str, Any], step: Step) -> dict[str, int]:
    prompt = _estimate_tokens(json.dumps(body.get("messages", [])))
    completion = _estimate_tokens(
        step.text + "".join(c.name + json.dumps(c.arguments) for c in step.tool_calls)
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _split(s: str, parts: int) -> list[str]:
    if not s:
        return []
    size = max(1, -(-len(s) // parts))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _chunks(
    rid: str, model: str, number: int, step: Step, usage: dict, include_usage: bool
) -> Iterator[dict]:
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
        return {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }

    yield chunk({"role": "assistant", "content": ""})
    for piece in _split(step.text, 3):
        yield chunk({"content": piece})
    for i, c in enumerate(step.tool_calls):
        args = json.dumps(c.arguments)
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": _call_id(number, i),
                        "type": "function",
                        "function": {"name": c.name, "arguments": ""},
                    }
                ]
            }
        )
        for piece in _split(args, 2):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    finish = "tool_calls" if step.tool_calls else "stop"
    if include_usage:
        yield chunk({}, finish)
        yield {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
    else:
        yield chunk({}, finish, usage=usage)
