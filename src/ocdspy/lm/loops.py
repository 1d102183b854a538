"""Cutting a greedy decode that has fallen into a loop.

Under greedy decoding a small model that starts repeating a span (`- tests/test_money.py` over
and over, `1.1.1.1…`) goes on until its token budget: the same text, a few hundred tokens
later, at 15–20 ms a token on one core (BENCHMARKS.md). A reply whose tail is one span said
`MIN_REPEATS` times in a row, over at least `MIN_SPAN` tokens, is stopped there: what it would
have gone on to say is that span again. The reply keeps what was generated so far and is
marked as cut (`finish_reason` "length", as at the budget). Both local paths use it: the DSPy engine
(`lm.local`) and the shipped-form / `serve` model call (`shipped.LocalModelCall`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

MIN_SPAN = 32  # tokens the repeated tail must cover
MIN_REPEATS = 4  # times the span must appear in a row


def loop_period(
    tokens: Sequence[Hashable], *, min_span: int = MIN_SPAN, min_repeats: int = MIN_REPEATS
) -> int:
    """The length of the span the tail of `tokens` repeats (at least `min_repeats` times in a
    row and over at least `min_span` tokens), or 0 when the tail is not such a loop."""
    n = len(tokens)
    period = 1
    while True:
        span = max(min_span, period * min_repeats)
        if span > n:
            return 0
        start = n - span
        if all(tokens[i] == tokens[i + period] for i in range(start, n - period)):
            return period
        period += 1
