"""The metric: how close a predicted tool plan (or next step) is to the recorded one.

Three components, each in [0, 1] and reported separately, combined with `metric_weights`:

- success: the predicted calls match the recorded ones, in order. Calls are aligned like a diff
  (longest common subsequence); an aligned pair scores 0 for a different tool, else
  0.5 + 0.5 x target similarity. The sum is divided by the longer of the two sequences, so
  missing and extra calls both cost. In `next_action` mode it is the same score for one call.
- efficiency: no more tool calls than needed. needed / (needed + wasted), where wasted calls
  are calls beyond the recorded count plus exact repeats (of an earlier predicted call, or in
  `next_action` mode of a call that already succeeded).
- correctness: the right files, commands and arguments, and a final response that says what
  the recorded one says: the mean of the target F1 (fuzzy: same path, same file name, shared
  command words) and the word F1 of the response against the recorded response.

Works on `dspy.Example`/`dspy.Prediction` or any object with attribute/`get` access; it does not
import dspy except to build GEPA's feedback object.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, NamedTuple

from pydantic import BaseModel

from ocdspy.config import MetricWeights, Settings
from ocdspy.errors import ConfigError
from ocdspy.program.render import FINISH, words

# A bootstrapped demo is kept only when the teacher's answer scores at least this much.
BOOTSTRAP_THRESHOLD = 0.75
FILE_TOOLS = frozenset({"read", "edit", "write", "multiedit", "apply_patch", "list", "lsp"})
COMPONENTS = ("success", "efficiency", "correctness")
_STOP = frozenset(
    {
        "a",
        "an",
        "the",
        "to",
        "of",
        "in",
        "on",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "i",
        "i've",
        "i'm",
        "we",
        "you",
        "for",
        "with",
        "as",
        "by",
        "at",
        "from",
        "have",
        "has",
        "had",
        "now",
        "so",
        "not",
        "no",
        "yes",
        "my",
        "your",
        "our",
        "can",
        "will",
        "would",
        "should",
        "into",
        "then",
        "than",
        "there",
        "here",
        "which",
        "what",
        "when",
        "also",
        "all",
        "any",
        "just",
    }
)


class MetricScores(BaseModel):
    success: float
    efficiency: float
    correctness: float

    def weighted(self, weights: MetricWeights) -> float:
        total = weights.success + weights.efficiency + weights.correctness
        return (
            weights.success * self.success
            + weights.efficiency * self.efficiency
            + weights.correctness * self.correctness
        ) / total


@dataclass(frozen=True)
class Call:
    tool: str
    target: str


# ---------------------------------------------------------------------------------------------
# Reading examples and predictions


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    try:
        value = getattr(obj, name)
    except (AttributeError, KeyError):
        getter = getattr(obj, "get", None)
        return getter(name, default) if callable(getter) else default
    return default if value is None else value


def _call(item: Any) -> Call | None:
    if item is None:
        return None
    if isinstance(item, str):
        tool, _, target = item.strip().partition(" ")
        return Call(tool.strip().lower(), target.strip()) if tool else None
    tool = _get(item, "tool", "")
    target = _get(item, "target", "")
    if not isinstance(tool, str) or not tool:
        return None
    return Call(tool.strip().lower(), str(target or "").strip())


def as_calls(items: Any) -> list[Call]:
    """A plan as predicted (pydantic objects, dicts, "tool target" strings) -> calls."""
    if items is None:
        return []
    if isinstance(items, str):
        items = [line for line in items.splitlines() if line.strip()]
    if not isinstance(items, (list, tuple)):
        return []
    return [c for c in (_call(i) for i in items) if c is not None]


def is_plan_example(example: Any) -> bool:
    return _get(example, "plan") is not None or _get(example, "tool") is None


# ---------------------------------------------------------------------------------------------
# Similarities


def _norm_path(p: str) -> str:
    p = p.strip().strip("`'\"").replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p.rstrip("/")


def target_similarity(tool: str, gold: str, pred: str) -> float:
    """How well `pred` names what `gold` names, in [0, 1]."""
    g, p = " ".join(gold.split()), " ".join(pred.split())
    if g == p:
        return 1.0
    if not g or not p:
        return 0.0
    if tool in FILE_TOOLS:
        gp, pp = _norm_path(g), _norm_path(p)
        if gp == pp:
            return 1.0
        if gp.endswith("/" + pp) or pp.endswith("/" + gp):
            return 0.9
        if gp.rsplit("/", 1)[-1] == pp.rsplit("/", 1)[-1]:
            return 0.6
        return 0.5 * SequenceMatcher(None, gp, pp).ratio() if gp[:1] == pp[:1] else 0.0
    gw, pw = set(words(g)), set(words(p))
    jaccard = len(gw & pw) / (len(gw | pw) or 1)
    # Near-identical strings (a typo, other quoting) still count; loose character overlap does not.
    ratio = SequenceMatcher(None, g, p).ratio()
    return max(jaccard, 0.9 * ratio if ratio >= 0.8 else 0.0)


def _pair_score(g: Call, p: Call) -> float:
    if g.tool != p.tool:
        return 0.0
    if g.tool == FINISH:
        return 1.0
    return 0.5 + 0.5 * target_similarity(g.tool, g.target, p.target)


def align(gold: Sequence[Call], pred: Sequence[Call]) -> tuple[float, list[tuple[int, int]]]:
    """Order-aware alignment (weighted LCS): total pair score and the aligned index pairs."""
    n, m = len(gold), len(pred)
    dp = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            dp[i][j] = max(
                dp[i + 1][j], dp[i][j + 1], _pair_score(gold[i], pred[j]) + dp[i + 1][j + 1]
            )
    pairs: list[tuple[int, int]] = []
    i = j = 0
    while i < n and j < m:
        pair = _pair_score(gold[i], pred[j])
        if pair > 0 and abs(dp[i][j] - (pair + dp[i + 1][j + 1])) < 1e-12:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return dp[0][0], pairs


def text_f1(gold: str, pred: str) -> float:
    """Word-overlap F1 over content words (what the response says, not how)."""
    g = [w for w in words(gold) if w not in _STOP]
    p = [w for w in words(pred) if w not in _STOP]
    if not g and not p:
        return 1.0
    if not g or not p:
        return 0.0
    pool: dict[str, int] = {}
    for w in g:
        pool[w] = pool.get(w, 0) + 1
    common = 0
    for w in p:
        if pool.get(w, 0) > 0:
            pool[w] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def targets_f1(gold: Sequence[Call], pred: Sequence[Call]) -> float:
    """Do the predicted calls touch the recorded files/commands, whatever the tool or order?"""
    if not gold and not pred:
        return 1.0
    if not gold or not pred:
        return 0.0
    remaining = list(pred)
    total = 0.0
    for g in gold:
        if not remaining:
            break
        sims = [target_similarity(g.tool, g.target, p.target) for p in remaining]
        k = max(range(len(sims)), key=sims.__getitem__)
        total += sims[k]
        remaining.pop(k)
    precision, recall = total / len(pred), total / len(gold)
    return 0.0 if total == 0 else 2 * precision * recall / (precision + recall)


def _repeats(calls: Sequence[Call], done: Sequence[Call] = ()) -> int:
    seen = set(done)
    n = 0
    for c in calls:
        if c in seen and c.tool != "bash":  # re-running a command (tests) is legitimate
            n += 1
        seen.add(c)
    return n


def _efficiency(needed: int, used: int, repeats: int) -> float:
    wasted = max(0, used - needed) + repeats
    wasted = min(wasted, max(used, 1))
    return needed / (needed + wasted) if needed else 1.0 / (1 + wasted)


# ---------------------------------------------------------------------------------------------
# Scores


def score_prediction(example: Any, prediction: Any) -> MetricScores:
    """The three components for one prediction (mode taken from the example's labels)."""
    if is_plan_example(example):
        gold = as_calls(_get(example, "plan", []))
        pred = as_calls(_get(prediction, "plan", []))
        total, _ = align(gold, pred)
        success = total / max(len(gold), len(pred)) if (gold or pred) else 1.0
        efficiency = _efficiency(len(gold), len(pred), _repeats(pred))
        parts = [targets_f1(gold, pred)]
        gold_response = str(_get(example, "response", "") or "")
        if gold_response.strip():
            parts.append(text_f1(gold_response, str(_get(prediction, "response", "") or "")))
        correctness = sum(parts) / len(parts)
        return MetricScores(success=success, efficiency=efficiency, correctness=correctness)

    g = Call(str(_get(example, "tool", "")).lower(), str(_get(example, "target", "") or ""))
    p = _call({"tool": _get(prediction, "tool", ""), "target": _get(prediction, "target", "")})
    if p is None:
        return MetricScores(
            success=0.0, efficiency=1.0 if g.tool == FINISH else 0.0, correctness=0.0
        )
    done = as_calls(_get(example, "done", []))
    success = _pair_score(g, p)
    if g.tool == FINISH:
        efficiency = 1.0 if p.tool == FINISH else 0.0  # a call after the work was done
        correctness = text_f1(g.target, p.target) if p.tool == FINISH else 0.0
    else:
        efficiency = 0.0 if _repeats([p], done) else 1.0
        correctness = 0.0 if p.tool == FINISH else target_similarity(g.tool, g.target, p.target)
    return MetricScores(success=success, efficiency=efficiency, correctness=correctness)


def feedback_text(example: Any, prediction: Any, scores: MetricScores | None = None) -> str:
    """What went wrong, in words a reflection model can act on."""
    scores = scores or score_prediction(example, prediction)
    notes: list[str] = []

    def show(c: Call) -> str:
        if c.tool == FINISH:
            return f"`{FINISH}`"
        return (
            f"`{c.tool}` on `{c.target[:80]}`"
            if c.tool in FILE_TOOLS
            else f"`{c.tool}` `{c.target[:80]}`"
        )

    if is_plan_example(example):
        gold = as_calls(_get(example, "plan", []))
        pred = as_calls(_get(prediction, "plan", []))
        _, pairs = align(gold, pred)
        matched_g = {i for i, _ in pairs}
        matched_p = {j for _, j in pairs}
        for i, j in pairs:
            if target_similarity(gold[i].tool, gold[i].target, pred[j].target) < 0.9:
                notes.append(f"step {i + 1}: expected {show(gold[i])}, got {show(pred[j])}")
        for i, g in enumerate(gold):
            if i not in matched_g:
                got = pred[i] if i < len(pred) and i not in matched_p else None
                notes.append(
                    f"step {i + 1}: expected {show(g)}"
                    + (f", got {show(got)}" if got else ", missing")
                )
        extra = [pred[j] for j in range(len(pred)) if j not in matched_p]
        if len(pred) > len(gold) and extra:
            notes.append(
                f"{len(pred) - len(gold)} more call(s) than needed, e.g. {show(extra[-1])}"
            )
        if scores.correctness < 0.5 and str(_get(example, "response", "")).strip():
            notes.append("final response should say: " + str(_get(example, "response"))[:200])
    else:
        g = Call(str(_get(example, "tool", "")).lower(), str(_get(example, "target", "") or ""))
        p = _call({"tool": _get(prediction, "tool", ""), "target": _get(prediction, "target", "")})
        if p is None:
            notes.append(f"expected {show(g)}, got no usable tool call")
        elif g.tool == FINISH and p.tool != FINISH:
            notes.append(
                f"the work was done: expected `{FINISH}` with the final message, got {show(p)}"
            )
        elif g.tool != FINISH and p.tool == FINISH:
            notes.append(f"finished too early: expected {show(g)}")
        elif g.tool == FINISH:
            if scores.correctness < 0.5:
                notes.append(f"final message should say: {g.target[:200]}")
        elif scores.success < 0.95:
            notes.append(f"expected {show(g)}, got {show(p)}")
        if scores.efficiency < 1 and p is not None and p.tool != FINISH and g.tool != FINISH:
            notes.append(f"{show(p)} repeats a call that already succeeded")
    if not notes:
        return "correct: matches the recorded session."
    summary = (
        f"success {scores.success:.2f}, efficiency {scores.efficiency:.2f}, "
        f"correctness {scores.correctness:.2f}"
    )
    return "; ".join(notes) + f" ({summary})"


class AgentMetric:
    """`(example, prediction, trace=None) -> float`, the weighted score.

    While an optimizer bootstraps demos (trace is not None) it answers whether the teacher's
    answer is good enough to become a demo.
    """

    __name__ = "agent_metric"

    def __init__(
        self, weights: MetricWeights | None = None, threshold: float = BOOTSTRAP_THRESHOLD
    ) -> None:
        self.weights = weights or MetricWeights()
        self.threshold = threshold

    def scores(self, example: Any, prediction: Any) -> MetricScores:
        return score_prediction(example, prediction)

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> Any:
        score = score_prediction(example, prediction).weighted(self.weights)
        if trace is not None:
            return score >= self.threshold
        return score

    def feedback(
        self, gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        """GEPA's five-argument form: the same score plus written feedback."""
        import dspy

        scores = score_prediction(gold, pred)
        return dspy.Prediction(
            score=scores.weighted(self.weights), feedback=feedback_text(gold, pred, scores)
        )


def gepa_metric(metric: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a metric to GEPA's five-argument signature."""
    if isinstance(metric, AgentMetric):
        return metric.feedback

    def five(
        gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        return metric(gold, pred, None)

    return five


def load_metric(spec: str) -> Callable[..., Any]:
    """`package.module:function` -> a function `(example, prediction, trace=None) -> float`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"custom metric {spec!r}: expected package.module:function",
            hint="e.g. --metric mymetrics:tool_match",
        )
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)  # like `python -m`: the project's own modules are importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"custom metric {spec!r}: cannot import {module_name}: {e}",
            hint="run from the directory that holds the module, or install it",
        ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"custom metric {spec!r}: {module_name} has no {attr!r}")
    if not callable(fn):
        raise ConfigError(f"custom metric {spec!r}: {attr} is not a function")
    try:
        inspect.signature(fn).bind(object(), object(), None)
    except TypeError:
        raise ConfigError(
            f"custom metric {spec!r}: it must accept (example, prediction, trace=None)"
        ) from None
    except ValueError:
        pass  # builtins without a signature: trust them
    return fn


class ConfiguredMetric(NamedTuple):
    """The metric the config names, as the optimizers and evaluate call it."""

    metric: Callable[..., Any]
    gepa: Callable[..., Any]  # GEPA's five-argument form, with feedback when ours
    description: str


def resolve_metric(settings: Settings) -> ConfiguredMetric:
    """Ours, weighted by `optimization.metric_weights`, or the custom `optimization.metric`."""
    spec = settings.optimization.metric
    if spec:
        custom = load_metric(spec)
        return ConfiguredMetric(custom, gepa_metric(custom), spec)
    weights = settings.optimization.metric_weights
    ours = AgentMetric(weights)
    return ConfiguredMetric(
        ours,
        ours.feedback,
        f"ocdspy agent metric (success {weights.success}, efficiency "
        f"{weights.efficiency}, correctness {weights.correctness})",
    )
