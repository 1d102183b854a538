"""Calls, tokens, cost and time per model, read from `lm.history`, for run records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field


class ModelUsage(BaseModel):
    """What one role's model spent during a stage (a run record's and a report's `lm_usage`)."""

    role: str
    model: str
    calls: int = Field(0, description="LM requests made, cached ones included.")
    cached: int = Field(0, description="Requests answered from the cache (no new call).")
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = Field(None, description="USD as the provider priced it; None if unknown.")

    @property
    def new_calls(self) -> int:
        return self.calls - self.cached


@dataclass(frozen=True)
class UsageTotals:
    """Usage summed over stages and roles: what the pipeline reports once at the end."""

    calls: int = 0
    new_calls: int = 0
    cost: float | None = None


@dataclass(frozen=True)
class _EntryUsage:
    """One `lm.history` entry. A call answered from DSPy's cache records no usage."""

    cached: bool
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float | None
    seconds: float | None


def _entry_seconds(entry: Mapping[str, Any]) -> float | None:
    data = getattr(entry.get("response"), "provider_data", None)
    if isinstance(data, Mapping) and isinstance(data.get("seconds"), (int, float)):
        return float(data["seconds"])
    return None


def _entry_usage(entry: Mapping[str, Any]) -> _EntryUsage:
    usage = entry.get("usage") or {}
    input_tokens = int(usage.get("prompt_tokens") or 0)
    output_tokens = int(usage.get("completion_tokens") or 0)
    cost = entry.get("cost")
    return _EntryUsage(
        cached=not usage,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=int(usage.get("total_tokens") or input_tokens + output_tokens),
        cost=float(cost) if isinstance(cost, (int, float)) else None,
        seconds=_entry_seconds(entry) if usage else None,
    )


def _history(lm: Any) -> list[Any]:
    return list(getattr(lm, "history", None) or ())


def _add_cost(total: float | None, cost: float | None) -> float | None:
    """None stays None until some call had a price (local models, Ollama, unknown models)."""
    return total if cost is None else (total or 0.0) + cost


def model_usage(entries: Iterable[Mapping[str, Any]], *, role: str, model: str) -> ModelUsage:
    """The usage of the given history entries, as one role's `ModelUsage`."""
    usage = ModelUsage(role=role, model=model)
    for entry in entries:
        spent = _entry_usage(entry)
        usage.calls += 1
        usage.cached += spent.cached
        usage.input_tokens += spent.input_tokens
        usage.output_tokens += spent.output_tokens
        usage.cost = _add_cost(usage.cost, spent.cost)
    return usage


class UsageMeter:
    """Usage of each role's LM from now on: `UsageMeter({"target": lm}).usage()` after the work.

    An LM that plays two roles (teacher and target the same object) is counted once, under the
    first role named. DSPy keeps at most `dspy.settings.max_history_size` entries per LM, so the
    stages raise it for the duration of a run.
    """

    def __init__(self, lms_by_role: Mapping[str, Any]) -> None:
        self._roles: list[tuple[str, Any, int]] = []
        seen: set[int] = set()
        for role, lm in lms_by_role.items():
            if lm is None or id(lm) in seen:
                continue
            seen.add(id(lm))
            self._roles.append((role, lm, len(_history(lm))))

    def usage(self) -> list[ModelUsage]:
        return [
            model_usage(_history(lm)[start:], role=role, model=str(getattr(lm, "model", "?")))
            for role, lm, start in self._roles
        ]


def total_usage(usages: Iterable[ModelUsage]) -> UsageTotals:
    """Calls, new calls and cost summed over every role of every stage."""
    calls = new_calls = 0
    cost: float | None = None
    for usage in usages:
        calls += usage.calls
        new_calls += usage.new_calls
        cost = _add_cost(cost, usage.cost)
    return UsageTotals(calls=calls, new_calls=new_calls, cost=cost)


def _empty_row() -> dict[str, Any]:
    return {
        "calls": 0,
        "cache_hits": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "cost": None,
        "seconds": None,
    }


def lm_usage_summary(lms: Iterable[Any] | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`{model: {calls, cache_hits, input_tokens, output_tokens, total_tokens, cost, seconds}}`.

    `lms` is an iterable of `dspy.LM` or a mapping role -> LM; an LM listed twice counts once.
    A call answered from DSPy's cache records no usage: it counts in `calls` and `cache_hits`
    and adds no tokens. `cost` is None when no call of that model had a price (local models,
    Ollama, unknown models). `seconds` is generation time reported by the local engine (None for
    HTTP models). DSPy keeps at most `dspy.settings.max_history_size` entries per LM (10,000),
    so figures for longer runs are a lower bound.
    """
    items = lms.values() if isinstance(lms, Mapping) else lms
    seen: set[int] = set()
    summary: dict[str, dict[str, Any]] = {}
    for lm in items:
        if lm is None or id(lm) in seen:
            continue
        seen.add(id(lm))
        for entry in _history(lm):
            model = str(entry.get("model") or getattr(lm, "model", "?"))
            row = summary.setdefault(model, _empty_row())
            spent = _entry_usage(entry)
            row["calls"] += 1
            row["cache_hits"] += spent.cached
            row["input_tokens"] += spent.input_tokens
            row["output_tokens"] += spent.output_tokens
            row["total_tokens"] += spent.total_tokens
            row["cost"] = _add_cost(row["cost"], spent.cost)
            if spent.seconds is not None:
                row["seconds"] = round((row["seconds"] or 0.0) + spent.seconds, 4)
    return summary
