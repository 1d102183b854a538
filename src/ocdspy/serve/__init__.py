"""`ocdspy serve`: the built-in model (or any GGUF) as an OpenAI-compatible endpoint for OpenCode.

    from ocdspy.serve import serving

    with serving(port=0) as srv:         # the built-in model, on a free port
        srv.base_url                      # http://127.0.0.1:PORT/v1
        srv.opencode_model                # ocdspy/smollm2-135m: `opencode run --model`
        srv.provider_config()             # the opencode.json "provider" block

`engine` replaces the model: a `request -> reply line` callable (`call: TOOL {json}` or
`answer: TEXT`) or an object with `complete(request, max_tokens) -> engine.Completion`.
The model side is in `engine` (the same renderer and grammar as offline evaluate), the HTTP side
in `server`. Nothing heavy is imported until a model is loaded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ocdspy.serve.engine import (
    DEFAULT_MODEL_ID,
    PROVIDER_ID,
    REPLY_TOKENS,
    Completion,
    Engine,
    LocalEngine,
    as_engine,
    resolve_paths,
    working_directory,
)
from ocdspy.serve.server import ServedRequest, ServeError, Server

__all__ = [
    "DEFAULT_MODEL_ID",
    "PROVIDER_ID",
    "Completion",
    "Engine",
    "ServeError",
    "Served",
    "ServedRequest",
    "provider_config",
    "resolve_paths",
    "serving",
    "working_directory",
]


def provider_config(
    base_url: str, model_id: str, n_ctx: int, *, output: int = REPLY_TOKENS
) -> dict[str, Any]:
    """The opencode.json `provider` block for a served model (OpenCode's bundled
    `@ai-sdk/openai-compatible`; `limit.context` is the served context, so OpenCode knows when
    a session outgrows it)."""
    return {
        PROVIDER_ID: {
            "npm": "@ai-sdk/openai-compatible",
            "name": "ocdspy serve",
            "options": {"baseURL": base_url},
            "models": {
                model_id: {
                    "name": model_id,
                    "tool_call": True,
                    "limit": {"context": n_ctx, "output": output},
                }
            },
        }
    }


class Served:
    """A running server: where it is, and how OpenCode reaches it."""

    def __init__(self, server: Server) -> None:
        self.server = server

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def model_id(self) -> str:
        return self.server.model_id

    @property
    def n_ctx(self) -> int:
        return self.server.engine.n_ctx

    @property
    def opencode_model(self) -> str:
        """What `opencode run --model` takes."""
        return f"{PROVIDER_ID}/{self.model_id}"

    @property
    def log(self) -> list[ServedRequest]:
        """The chat requests handled so far (the latest 10,000), oldest first."""
        return list(self.server.log)

    def provider_config(self) -> dict[str, Any]:
        return provider_config(
            self.base_url, self.model_id, self.n_ctx, output=self.server.reply_tokens
        )

    def snippet(self) -> str:
        """The opencode.json snippet that uses this server, as JSON text."""
        return json.dumps({"provider": self.provider_config()}, indent=2)

    def wait(self) -> None:
        """Block until interrupted (Ctrl-C raises KeyboardInterrupt here).

        Waits in short slices: the kernel may hand SIGINT to any thread of the process (the
        server's, llama.cpp's), and then a wait without a timeout in the main thread never
        wakes to run Python's handler; a slice ending does."""
        stop = threading.Event()
        while not stop.wait(0.2):
            pass


@contextmanager
def serving(
    model_path: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    n_ctx: int | None = None,
    engine: Any = None,
    *,
    n_threads: int | None = None,
    queue: int = 4,
    reply_tokens: int = REPLY_TOKENS,
    model_id: str | None = None,
    on_request: Callable[[ServedRequest], None] | None = None,
) -> Iterator[Served]:
    """Serve a model on `host:port` (0: a free port) in a background thread until the block ends.

    Without `engine`, the built-in GGUF (or `model_path`) is loaded before the first request.
    `queue` bounds the requests waiting for the model (more are answered 429); `reply_tokens`
    is a reply's default budget and cap (a request's `max_tokens` may ask for less).
    """
    if engine is None:
        local = LocalEngine(model_path, n_ctx=n_ctx, n_threads=n_threads)
        local.load()
        chosen: Engine = local
    else:
        chosen = as_engine(engine, n_ctx)
    name = model_id or getattr(chosen, "model_id", None) or DEFAULT_MODEL_ID
    server = Server(
        chosen,
        model_id=name,
        host=host,
        port=port,
        queue=queue,
        reply_tokens=reply_tokens,
        on_request=on_request,
    )
    server.start()
    try:
        yield Served(server)
    finally:
        server.stop()
