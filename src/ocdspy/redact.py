"""Secret redaction: every string that leaves a session log passes through here.

Session logs hold secrets: keys read from `.env` files, tokens printed by commands, private keys
cat'ed by accident. They are replaced with typed placeholders (`[REDACTED:openai-key]`) before
anything is written to an example, sent to a model or put into an exported prompt. One combined
regular expression keeps this a single pass over each string.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

PLACEHOLDER = "[REDACTED:{kind}]"

# Order matters where patterns overlap: the more specific kind is listed first.
_PATTERNS: list[tuple[str, str]] = [
    (
        "private-key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\n]*)",
    ),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
    ("openai-key", r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}"),
    ("stripe-key", r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("aws-access-key", r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})"),
    ("slack-token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),
    ("slack-webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("bearer-token", r"(?i:\bbearer)\s+(?P<bearer>[A-Za-z0-9\-._~+/]{16,}=*)"),
    ("url-password", r"(?<=://)[^\s:/@'\"]{1,64}:(?P<urlpw>[^\s:/@'\"]{3,128})(?=@)"),
    # NAME=value, NAME: value, "name": "value" where the name says it holds a secret.
    (
        "secret-assignment",
        r"(?:\b[A-Z][A-Z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIALS?|AUTH)"
        r"[A-Z0-9_]*\b"
        r"|(?i:\b[a-z0-9_\-]*(?:api[_\-]?key|secret|access[_\-]?token|auth[_\-]?token"
        r"|refresh[_\-]?token|private[_\-]?key|password|passwd)[a-z0-9_\-]*\b))"
        r"[\"']?\s*(?:=|:)\s*[\"']?(?P<assigned>(?!\[REDACTED)(?![$<{])[^\s\"',;]{4,})",
    ),
]

_COMBINED = re.compile("|".join(f"(?P<k{i}>{p})" for i, (_, p) in enumerate(_PATTERNS)))
_KINDS = {f"k{i}": kind for i, (kind, _) in enumerate(_PATTERNS)}
# Named sub-groups: only that part is replaced, the rest (the variable name, `Bearer`) stays.
_VALUE_GROUPS = {"bearer-token": "bearer", "url-password": "urlpw", "secret-assignment": "assigned"}
# Kinds recognised by their shape alone; a value assigned to NAME= is typed by these when it can be.
_SHAPED = re.compile(
    "|".join(f"(?P<k{i}>{p})" for i, (k, p) in enumerate(_PATTERNS) if k not in _VALUE_GROUPS)
)
_HARMLESS = re.compile(r"(?i)^(?:true|false|null|none|undefined|\d{1,6}|x+|\*+|\.\.\.+)$")


def redact_text(text: str, counts: Counter[str] | None = None) -> str:
    """Replace every secret in `text` with a typed placeholder, counting kinds into `counts`."""

    def repl(m: re.Match[str]) -> str:
        kind = _KINDS[m.lastgroup or ""]
        group = _VALUE_GROUPS.get(kind)
        if group is None:
            if counts is not None:
                counts[kind] += 1
            return PLACEHOLDER.format(kind=kind)
        value = m.group(group)
        if _HARMLESS.match(value):
            return m.group(0)
        shaped = _SHAPED.match(value)
        if shaped is not None and shaped.end() == len(value):
            kind = _KINDS[shaped.lastgroup or ""]
        if counts is not None:
            counts[kind] += 1
        start, end = m.span(group)
        whole_start = m.start()
        return (
            m.group(0)[: start - whole_start]
            + PLACEHOLDER.format(kind=kind)
            + m.group(0)[end - whole_start :]
        )

    return _COMBINED.sub(repl, text)


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
    """(kind, excerpt) for each secret in `text`; used to re-check what we export."""
    found: Counter[str] = Counter()
    out: list[tuple[str, str]] = []
    for m in _COMBINED.finditer(text):
        kind = _KINDS[m.lastgroup or ""]
        group = _VALUE_GROUPS.get(kind)
        if group is not None and _HARMLESS.match(m.group(group)):
            continue
        found[kind] += 1
        excerpt = m.group(0)
        out.append((kind, excerpt[:6] + "…" if len(excerpt) > 6 else excerpt))
    return out
