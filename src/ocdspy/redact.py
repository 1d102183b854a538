"""Secret redaction: every string that leaves a session log passes through here.

Session logs hold secrets: keys read from `.env` files, tokens printed by commands, private keys
cat'ed by accident. They are replaced with typed placeholders (`[REDACTED:openai-key]`) before
anything is written to an example, sent to a model or put into an exported prompt.

Speed matters (every tool result goes through this), so each rule is its own regular expression
that starts with a literal: Python's regex engine then skips through text with a fast substring
search instead of trying every alternative at every position. Word boundaries and the naming rule
of `NAME=value` assignments are checked in Python on the few candidates found.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = "[REDACTED:{kind}]"


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    # The named group holding the secret; None = the whole match is the secret.
    group: str | None = None
    # Extra check on a candidate match (text, match) -> is it a secret?
    accept: Callable[[str, re.Match[str]], bool] | None = None
    # Substrings one of which every match contains: absent all, the rule is skipped without
    # running the regex (a substring test is far cheaper than a regex call on short strings).
    anchors: tuple[str, ...] = ()
    # The same, compared with the lower-cased text.
    triggers: tuple[str, ...] = ()


def _starts_word(text: str, m: re.Match[str]) -> bool:
    i = m.start()
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")


_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_ENV_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PWD", "CREDENTIAL", "AUTH")
_LOWER_SECRET_WORDS = re.compile(
    r"api[_\-]?key|secret|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token"
    r"|private[_\-]?key|password|passwd"
)
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_HARMLESS = re.compile(r"(?i)(?:true|false|null|none|undefined|\d{1,6}|x+|\*+|\.\.\.+)\Z")


def _assignment_name(text: str, m: re.Match[str]) -> str:
    start = m.start()
    while start > 0 and text[start - 1] in _NAME_CHARS:
        start -= 1
    return text[start : m.end("name")]


def _is_secret_assignment(text: str, m: re.Match[str]) -> bool:
    name = _assignment_name(text, m)
    if _HARMLESS.match(m.group("assigned")):
        return False
    if _ENV_NAME.match(name):
        return any(w in name for w in _ENV_SECRET_WORDS)
    return _LOWER_SECRET_WORDS.search(name.lower()) is not None


_RULES: list[_Rule] = [
    _Rule(
        "private-key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]*)"
        ),
        anchors=("-----BEGIN ",),
    ),
    _Rule(
        "anthropic-key",
        re.compile(r"sk-ant-[A-Za-z0-9_\-]{20,}"),
        accept=_starts_word,
        anchors=("sk-ant-",),
    ),
    _Rule(
        "openai-key",
        re.compile(r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}"),
        accept=_starts_word,
        anchors=("sk-",),
    ),
    _Rule(
        "stripe-key",
        re.compile(r"[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
        accept=_starts_word,
        anchors=("k_live_", "k_test_"),
    ),
    _Rule(
        "aws-access-key",
        re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA)[0-9A-Z]{16}(?![0-9A-Za-z])"),
        accept=_starts_word,
        anchors=("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA"),
    ),
    _Rule(
        "github-token",
        re.compile(r"gh[pousr]_[A-Za-z0-9]{30,255}"),
        accept=_starts_word,
        anchors=("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    _Rule(
        "github-token",
        re.compile(r"github_pat_[A-Za-z0-9_]{22,255}"),
        accept=_starts_word,
        anchors=("github_pat_",),
    ),
    _Rule(
        "slack-token",
        re.compile(r"xox[abposre]-[A-Za-z0-9-]{10,}"),
        accept=_starts_word,
        anchors=("xox",),
    ),
    _Rule(
        "slack-webhook",
        re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,}"),
        anchors=("hooks.slack.com",),
    ),
    _Rule(
        "google-api-key",
        re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
        accept=_starts_word,
        anchors=("AIza",),
    ),
    _Rule(
        "jwt",
        re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
        accept=_starts_word,
        anchors=("eyJ",),
    ),
    _Rule(
        "bearer-token",
        re.compile(r"(?i:bearer)\s+(?P<secret>[A-Za-z0-9\-._~+/]{16,}=*)"),
        group="secret",
        accept=_starts_word,
        triggers=("bearer",),
    ),
    _Rule(
        "url-password",
        re.compile(r"://[^\s:/@'\"]{1,64}:(?P<secret>[^\s:/@'\"]{3,128})@"),
        group="secret",
        anchors=("://",),
    ),
]


# NAME=value, NAME: value, "name": "value" where the name says it holds a secret. Keywords are
# found with str.find on the lower-cased text (fast), the assignment is matched at each one, and
# the whole name (found by walking back) is judged in Python.
_ASSIGN_KEYWORDS = ("key", "token", "secret", "passw", "pwd", "credential", "auth")
_ASSIGN_AT = re.compile(
    r"(?i:key|token|secret|passw(?:or)?d|pwd|credentials?|auth)"
    r"(?P<name>[A-Za-z0-9_\-]*)[\"']?[ \t]*[=:][ \t]*[\"']?"
    r"(?P<assigned>(?!\[REDACTED)(?![$<{])[^\s\"',;]{4,})"
)
_ASSIGN_KIND = "secret-assignment"


def _assignments(text: str) -> list[tuple[int, int]]:
    """Spans of the values of secret assignments in `text`, in order, without overlaps."""
    low = text.lower()
    spans: set[tuple[int, int]] = set()
    for word in _ASSIGN_KEYWORDS:
        i = low.find(word)
        while i != -1:
            m = _ASSIGN_AT.match(text, i)
            if m is not None and _is_secret_assignment(text, m):
                spans.add(m.span("assigned"))
            i = low.find(word, i + 1)
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if not out or start >= out[-1][1]:
            out.append((start, end))
    return out


def _redact_assignments(text: str, counts: Counter[str] | None) -> str:
    spans = _assignments(text)
    if not spans:
        return text
    placeholder = PLACEHOLDER.format(kind=_ASSIGN_KIND)
    parts: list[str] = []
    pos = 0
    for start, end in spans:
        parts += [text[pos:start], placeholder]
        pos = end
    parts.append(text[pos:])
    if counts is not None:
        counts[_ASSIGN_KIND] += len(spans)
    return "".join(parts)


def _apply(rule: _Rule, text: str, counts: Counter[str] | None) -> str:
    placeholder = PLACEHOLDER.format(kind=rule.kind)

    def repl(m: re.Match[str]) -> str:
        if rule.accept is not None and not rule.accept(text, m):
            return m.group(0)
        if counts is not None:
            counts[rule.kind] += 1
        if rule.group is None:
            return placeholder
        whole = m.group(0)
        start, end = m.start(rule.group) - m.start(), m.end(rule.group) - m.start()
        return whole[:start] + placeholder + whole[end:]

    return rule.pattern.sub(repl, text)


# (substring, rule index): a flat list is cheaper to test than a generator per rule.
_ANCHORS = [(a, i) for i, rule in enumerate(_RULES) for a in rule.anchors]
_TRIGGERS = [(t, i) for i, rule in enumerate(_RULES) for t in rule.triggers]


def redact_text(text: str, counts: Counter[str] | None = None) -> str:
    """Replace every secret in `text` with a typed placeholder, counting kinds into `counts`.

    Specific shapes run first, so `OPENAI_API_KEY=sk-…` is typed `openai-key`; the generic
    assignment rule skips values that are already placeholders.
    """
    hits = {i for anchor, i in _ANCHORS if anchor in text}
    if _TRIGGERS:
        low = text.lower()
        hits.update(i for trigger, i in _TRIGGERS if trigger in low)
    for i in sorted(hits):
        text = _apply(_RULES[i], text, counts)
    return _redact_assignments(text, counts)


def redact_value(value: Any, counts: Counter[str] | None = None) -> Any:
    """Redact every string inside a JSON-like value (dicts, lists, strings), keys included."""
    if isinstance(value, str):
        return redact_text(value, counts)
    if isinstance(value, dict):
        return {
            (redact_text(k, counts) if isinstance(k, str) else k): redact_value(v, counts)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_value(v, counts) for v in value]
    return value


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(kind, short excerpt) for each secret in `text`; used to re-check what we export."""
    found: list[tuple[str, str]] = []
    for rule in _RULES:
        for m in rule.pattern.finditer(text):
            if rule.accept is not None and not rule.accept(text, m):
                continue
            secret = m.group(rule.group) if rule.group else m.group(0)
            found.append((rule.kind, secret[:4] + "…"))
    found += [(_ASSIGN_KIND, text[a : a + 4] + "…") for a, _ in _assignments(text)]
    return found


# A rule with neither anchors nor triggers would never run.
assert all(rule.anchors or rule.triggers for rule in _RULES)
