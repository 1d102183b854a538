"""`ocdspy serve` as `ocdspy replay` starts it (no `--model`), with a chosen llama.cpp thread
count: on a shared 2-core machine one thread leaves the other core to OpenCode (two threads
measured about 10x slower under load)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def serve_threads(n_threads: int = 1) -> Iterator[list[Any]]:
    """While the block runs, every `ocdspy.serve.serving` call uses `n_threads`; yields the list
    of servers started (`Served`: their `log` stays readable after they stop)."""
    import ocdspy.serve as serve

    real = serve.serving
    started: list[Any] = []

    @contextmanager
    def with_threads(*args: Any, **kwargs: Any) -> Iterator[Any]:
        kwargs.setdefault("n_threads", n_threads)
        with real(*args, **kwargs) as srv:
            started.append(srv)
            yield srv

    serve.serving = with_threads  # type: ignore[assignment]
    try:
        yield started
    finally:
        serve.serving = real  # type: ignore[assignment]
