"""The HTTP side of `ocdspy serve`: an OpenAI-compatible chat-completions endpoint (stdlib).

- `POST /v1/chat/completions` (or `/chat/completions`): streamed (server-sent
  `chat.completion.chunk` events, a tool call as one `delta.tool_calls` entry, `data: [DONE]`)
  or one `chat.completion` object;
- `GET /v1/models` (or `/models`): the one served model.

Every failure is an OpenAI-style error body with its status (`{"error": {"message", "type",
"param", "code"}}`), never a dropped connection. The model runs one request at a time (a
llama.cpp context is not thread-safe); requests wait in arrival order, and past `queue` waiting
ones a request is answered 429 at once. A client that goes away mid-reply is logged, and the next
request is served.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from ocdspy.errors import OcdspyError
from ocdspy.serve.engine import (
    PROVIDER_ID,
    REPLY_TOKENS,
    Engine,
    Reply,
    read_reply,
    tool_name,
    tool_problem,
)
from ocdspy.shipped import ContextOverflow, GrammarError

CHAT_PATHS: Final = ("/v1/chat/completions", "/chat/completions")
MODELS_PATHS: Final = ("/v1/models", "/models")
MAX_BODY: Final = 32 << 20
LOG_SIZE: Final = 10_000


class ServeError(OcdspyError):
    """The server cannot start (the address is taken, the model does not load)."""


class ApiError(Exception):
    """A request answered with an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class ServedRequest:
    """One chat request as the server handled it (`Server.log`)."""

    number: int
    status: int = 0  # 0 while the model works
    stream: bool = False
    tools: int = 0  # how many tools the request offered
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None

    def summary(self) -> str:
        """One line for the console."""
        if self.error:
            what = f"error: {self.error}"
        elif self.tool:
            what = f"call {self.tool} {json.dumps(self.arguments, ensure_ascii=False)}"
        else:
            what = f"text {json.dumps(self.text or '', ensure_ascii=False)}"
        return (
            f"#{self.number} {self.status} {what[:160]} · {self.prompt_tokens}+"
            f"{self.completion_tokens} tokens · {self.seconds:.1f} s"
        )


class Gate:
    """One request at a time, in arrival order, with at most `queue` waiting."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    @property
    def waiting(self) -> int:
        with self._cond:
            return max(0, self._next - self._serving - 1)

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._cond:
            if self._next - self._serving > self.queue:
                raise ApiError(
                    429,
                    f"the model is busy and {self.queue} requests already wait; retry later",
                    kind="rate_limit_error",
                    code="queue_full",
                )
            ticket = self._next
            self._next += 1
            while self._serving != ticket:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()


def _error_for(exc: Exception, tools: list[Any]) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflow):
        return ApiError(
            400,
            f"This model's maximum context length is {exc.n_ctx} tokens; the prompt is "
            f"{exc.prompt_tokens} tokens and the reply needs {exc.reply_tokens} "
            f"({exc.prompt_tokens + exc.reply_tokens} in all). Start a new session or shorten it.",
            code="context_length_exceeded",
            param="messages",
        )
    if isinstance(exc, GrammarError):
        names = ", ".join(tool_name(t) for t in tools) or "none"
        return ApiError(
            400,
            f"the tools' schemas cannot become a grammar (tools: {names}): {exc}",
            code="invalid_tool_schema",
            param="tools",
        )
    return ApiError(500, f"the model failed: {exc}", kind="server_error", code="model_error")


class Server:
    """The endpoint around an engine. `start` serves in a background thread; `stop` releases
    the port. Use through `ocdspy.serve.serving`."""

    def __init__(
        self,
        engine: Engine,
        *,
        model_id: str,
        host: str = "127.0.0.1",
        port: int = 0,
        queue: int = 4,
        reply_tokens: int = REPLY_TOKENS,
        on_request: Callable[[ServedRequest], None] | None = None,
    ) -> None:
        self.engine = engine
        self.model_id = model_id
        self.reply_tokens = reply_tokens
        self.on_request = on_request
        self.gate = Gate(queue)
        self.log: collections.deque[ServedRequest] = collections.deque(maxlen=LOG_SIZE)
        self._count = 0
        self._lock = threading.Lock()
        try:
            self._httpd = _Httpd((host, port), Handler)
        except OSError as e:
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._httpd.daemon_threads = True
        self._httpd.app = self
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> Server:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="ocdspy-serve", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    # -- one chat request
    def new_entry(self) -> ServedRequest:
        """A new chat request's log entry, filled in before its reply is written (so a client
        that has the reply also finds the entry), then on a disconnect."""
        with self._lock:
            self._count += 1
            entry = ServedRequest(number=self._count)
            self.log.append(entry)
            return entry

    def check(self, body: Any) -> tuple[list[Any], int]:
        """Refuse what the model cannot answer: (the tools, the reply budget)."""
        if not isinstance(body, dict):
            raise ApiError(400, "the request body is not a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' is required (a non-empty list)", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "every message must be an object", param="messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required", param="model")
        if model not in (self.model_id, f"{PROVIDER_ID}/{self.model_id}"):
            raise ApiError(
                404,
                f"The model '{model}' does not exist; this server serves '{self.model_id}'",
                code="model_not_found",
                param="model",
            )
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            raise ApiError(400, "'tools' must be a list", param="tools")
        for tool in tools:
            problem = tool_problem(tool)
            if problem:
                raise ApiError(
                    400,
                    f"tool {tool_name(tool)!r} {problem}",
                    code="invalid_tool_schema",
                    param="tools",
                )
        return offered(tools, body.get("tool_choice")), self._budget(body)

    def _budget(self, body: Mapping[str, Any]) -> int:
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ApiError(400, f"'{key}' must be a positive integer", param=key)
            return min(value, self.reply_tokens)
        return self.reply_tokens

    def answer(self, body: dict[str, Any], tools: list[Any], budget: int) -> tuple[Reply, Any]:
        """The model's reply (one at a time); errors become ApiError."""
        try:
            with self.gate.turn():
                completion = self.engine.complete(body, budget)
        except Exception as e:  # every failure is answered, none drops the connection
            raise _error_for(e, tools) from e
        return read_reply(completion, body), completion


def offered(tools: list[Any], choice: Any) -> list[Any]:
    """The tools the reply may call under `tool_choice`: none for "none" (OpenCode sends that
    with its "maximum steps reached" message), the named one for a function choice, else all
    ("required" cannot forbid text: the grammar always allows an answer)."""
    if choice == "none":
        return []
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        chosen = [t for t in tools if tool_name(t) == name]
        if not chosen:
            raise ApiError(
                400, f"tool_choice names {name!r}, which is not offered", param="tool_choice"
            )
        return chosen
    return tools


# ---------------------------------------------------------------------------------------------
# The wire format


def _message(reply: Reply, call_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool:
        message["tool_calls"] = [_tool_call(reply, call_id)]
    return message


def _tool_call(reply: Reply, call_id: str) -> dict[str, Any]:
    args = json.dumps(reply.arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": reply.tool, "arguments": args}}


def _usage(completion: Any) -> dict[str, int]:
    p, c = completion.prompt_tokens, completion.completion_tokens
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def chunks(
    reply: Reply, completion: Any, *, rid: str, model: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` events of one reply (before `data: [DONE]`)."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    if reply.content:
        yield chunk({"content": reply.content})
    if reply.tool:
        call = _tool_call(reply, "call_" + rid.removeprefix("chatcmpl-"))
        yield chunk({"tool_calls": [{"index": 0, **call}]})
    yield chunk({}, reply.finish_reason)
    if include_usage:
        yield {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": _usage(completion),
        }


def completion_body(reply: Reply, completion: Any, *, rid: str, model: str) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _message(reply, "call_" + rid.removeprefix("chatcmpl-")),
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": _usage(completion),
    }


def models_body(model_id: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "ocdspy"}],
    }


# ---------------------------------------------------------------------------------------------
# The handler

_DISCONNECTED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Httpd(ThreadingHTTPServer):
    app: Server


class Handler(BaseHTTPRequestHandler):
    """One request; the `Server` it belongs to is `self.server.app`."""

    server: _Httpd

    # One response per connection: a stream ends when the connection closes.
    protocol_version = "HTTP/1.0"
    server_version = "ocdspy-serve"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the server's own log says what happened

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, e: ApiError) -> None:
        headers: dict[str, str] = {}
        if e.status == 429:
            headers["Retry-After"] = "1"
        if e.status == 405:
            headers["Allow"] = "POST" if self._path() in CHAT_PATHS else "GET"
        with suppress(*_DISCONNECTED):
            self._send_json(e.status, e.body(), headers)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _other(self) -> None:
        path = self._path()
        if path in CHAT_PATHS or path in MODELS_PATHS:
            self._send_error(ApiError(405, f"{self.command} is not allowed on {path}"))
        else:
            self._send_error(
                ApiError(404, f"Invalid URL ({self.command} {path})", code="not_found")
            )

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other

    def do_GET(self) -> None:
        if self._path() in MODELS_PATHS:
            self._send_json(200, models_body(self.server.app.model_id))
        else:
            self._other()

    def do_POST(self) -> None:
        if self._path() not in CHAT_PATHS:
            self._other()
            return
        entry = self.server.app.new_entry()
        start = time.perf_counter()
        try:
            self._chat(entry, start)
        except ApiError as e:
            entry.status, entry.error = e.status, e.message
            entry.seconds = time.perf_counter() - start
            self._send_error(e)
        except _DISCONNECTED:
            entry.error = "the client disconnected before the reply was sent"
        except Exception as e:  # a bug of ours still gets an answer, not a dropped line
            failure = ApiError(500, f"internal error: {e}", kind="server_error")
            entry.status, entry.error = failure.status, failure.message
            self._send_error(failure)
        if self.server.app.on_request is not None:
            self.server.app.on_request(entry)

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            length = -1
        if length < 0:
            raise ApiError(411, "a Content-Length header is required")
        if length > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None

    def _chat(self, entry: ServedRequest, start: float) -> None:
        body = self._body()
        tools, budget = self.server.app.check(body)
        entry.stream, entry.tools = bool(body.get("stream")), len(tools)
        request = {**body, "tools": tools}
        reply, completion = self.server.app.answer(request, tools, budget)
        entry.tool, entry.arguments, entry.text = reply.tool, reply.arguments, reply.content
        entry.prompt_tokens = completion.prompt_tokens
        entry.completion_tokens = completion.completion_tokens
        entry.status, entry.seconds = 200, time.perf_counter() - start
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        model = str(body["model"])
        if not entry.stream:
            self._send_json(200, completion_body(reply, completion, rid=rid, model=model))
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        events = chunks(reply, completion, rid=rid, model=model, include_usage=include_usage)
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
