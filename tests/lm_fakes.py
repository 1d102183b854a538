"""Scripted DSPy engines for optimize/evaluate tests (no network, no model)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any


def fill(schema: dict[str, Any], defs: dict[str, Any], pick: Callable[[list[Any]], Any]) -> Any:
    """A value that satisfies a JSON schema (enough of it for DSPy's output models)."""
    if "$ref" in schema:
        return fill(defs[schema["$ref"].split("/")[-1]], defs, pick)
    if "enum" in schema:
        return pick(schema["enum"])
    if "anyOf" in schema:
        return fill(schema["anyOf"][0], defs, pick)
    kind = schema.get("type")
    if kind == "object":
        return {k: fill(v, defs, pick) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [fill(schema.get("items", {}), defs, pick)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    return "src/a.py"


class SchemaEngine:
    """A DSPy 3.4 engine that answers every request with an object matching its JSON schema.

    `pick` chooses among enum values (the tool); `interrupt_after` raises KeyboardInterrupt on
    that call, as Ctrl-C would in the main thread. `calls` counts requests that reached the
    engine (cache hits never do).
    """

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset({"temperature", "max_tokens", "response_format", "seed"})

    def __init__(
        self,
        pick: Callable[[list[Any]], Any] | None = None,
        interrupt_after: int | None = None,
        chooser: Callable[[Any, list[Any]], Any] | None = None,
        fail_on: frozenset[int] = frozenset(),
    ) -> None:
        self.fail_on = fail_on
        self.pick = pick or (lambda values: values[0])
        self.chooser = chooser
        self.interrupt_after = interrupt_after
        self.calls = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        pass

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, Usage

        with self._lock:
            self.calls += 1
            n = self.calls
        if self.interrupt_after is not None and n >= self.interrupt_after:
            raise KeyboardInterrupt
        if n in self.fail_on:
            raise RuntimeError(f"scripted failure on call {n}")
        fmt = request.config.response_format or {}
        schema = fmt.get("schema") or {}
        pick = self.pick
        if self.chooser is not None:
            chooser = self.chooser
            pick = lambda values: chooser(request, values)  # noqa: E731
        value = fill(schema, schema.get("$defs", {}), pick) if schema else {}
        return Response(
            id=f"fake-{n}",
            model=request.model,
            message=Message.assistant(json.dumps(value)),
            finish_reason="stop",
            usage=Usage(input_tokens=100, output_tokens=10),
        )


def schema_lm(engine: SchemaEngine, name: str = "fake") -> Any:
    import dspy

    return dspy.LM(f"custom/{name}", engine=engine, temperature=0.0, cache=True, num_retries=0)
