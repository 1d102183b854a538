"""Calls, tokens, cost and time per model, read from `lm.history`, for run records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _entry_seconds(entry: Mapping[str, Any]) -> float | None:
    data = getattr(entry.get("response"), "provider_data", None)
    if isinstance(data, Mapping) and isinstance(data.get("seconds"), (int, float)):
        return float(data["seconds"])
    return None


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
        for entry in getattr(lm, "history", None) or ():
            model = str(entry.get("model") or getattr(lm, "model", "?"))
            row = summary.setdefault(
                model,
                {
                    "calls": 0,
                    "cache_hits": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "total_tokens": 0,
                    "cost": None,
                    "seconds": None,
                },
            )
            row["calls"] += 1
            usage = entry.get("usage") or {}
            if not usage:
                row["cache_hits"] += 1
            inp = int(usage.get("prompt_tokens") or 0)
            out = int(usage.get("completion_tokens") or 0)
            row["input_tokens"] += inp
            row["output_tokens"] += out
            row["total_tokens"] += int(usage.get("total_tokens") or inp + out)
            cost = entry.get("cost")
            if isinstance(cost, (int, float)):
                row["cost"] = (row["cost"] or 0.0) + float(cost)
            seconds = _entry_seconds(entry) if usage else None
            if seconds is not None:
                row["seconds"] = round((row["seconds"] or 0.0) + seconds, 4)
    return summary
