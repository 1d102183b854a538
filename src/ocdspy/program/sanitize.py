"""Session text is untrusted: what of it may be shown to a model, and how.

Recorded sessions hold whatever tools returned: web pages, files, command output. Any of it may
carry text written to steer a model ("ignore all previous instructions…"). Demonstrations put
such text into a prompt, in the exported agent's system prompt in particular. Every place that
shows session text to a model goes through this module:

- `clean_text` / `excerpt`: no control characters, no front-matter fences, no system or role
  tags; `excerpt` also makes it one short line;
- `injection_phrase`: the phrase that makes a text look like instructions to the agent, if any;
- `split_demos`: demos safe to show, and the count of those dropped for looking like
  instructions.

Both the exported agent (`ocdspy.export`) and the program's renderings (`ocdspy.program.render`)
use it; a demo pool elsewhere (the plugin's) should too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# C0 and C1 control characters, DEL, and the Unicode format characters that can hide or reorder
# text (zero-width, bidi overrides). Newlines and tabs are handled by the callers.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\ufeff]"
)
# What chat templates and prompt formats use to mark who speaks; a model may obey them.
_ROLE_TAGS = re.compile(
    r"<\|[^|<>\n]{0,40}\|>"  # <|im_start|>, <|system|>, <|eot_id|>, <|start_header_id|>
    r"|</?\s*(?:system|assistant|user|human|instructions?|sys|prompt|developer)\b[^>\n]{0,40}>"
    r"|\[/?\s*(?:INST|SYS|SYSTEM)\s*\]"  # [INST] [/INST] [SYSTEM]
    r"|<<\s*/?\s*SYS\s*>>"  # <<SYS>> <</SYS>>
    r"|#{1,6}\s*(?:system|instructions?|assistant|user|human|response)\s*:"  # ### System:
    r"|^\s*#{1,6}\s*(?:system|instructions?|assistant|user|human|response)\b"
    r"|(?-i:\b(?:SYSTEM|DEVELOPER)\s*:)"  # SYSTEM: anywhere, upper case only
    r"|^\s*(?:system|developer)\s*:",  # not user:/assistant: (the history's own lines)
    re.I | re.M,
)
# A front-matter fence: a line of three or more dashes (or pluses, TOML's), alone on its line.
_FENCE = re.compile(r"^\s*(?:-{3,}|\+{3,})\s*$", re.M)
_RUN_OF_DASHES = re.compile(r"-{3,}")

# Phrases that address the agent rather than describe work. Deliberately broad: a demo that is
# dropped costs one example; one that gets through becomes part of a system prompt.
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}?"
    r"\b(?:previous|prior|above|earlier|preceding|all|any|your|the|system)\b[^.\n]{0,30}?"
    r"\b(?:instructions?|prompts?|rules|directions|guidelines|messages?|context)\b"
    r"|\bdisregard\b"
    r"|\byou are now\b"
    r"|\bfrom now on,? you\b"
    r"|\bact as (?:an? |the )?(?:unrestricted|jailbroken|different|new)\b"
    r"|\b(?:new|updated|real|actual|hidden) (?:system )?instructions?\s*:"
    r"|\bsystem prompt\b"
    r"|\bdeveloper mode\b"
    r"|\bjailbreak"
    r"|\bdo not (?:tell|inform|alert) the user\b"
    r"|\b(?:curl|wget|fetch)\b[^\n|]{0,200}\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b"
    r"|\b(?:bash|sh)\s+<\(\s*(?:curl|wget)\b"
    r"|\b(?:curl|wget)\b[^\n]{0,200}(?:>|-o)\s*\S+\s*(?:&&|;)\s*(?:ba|z)?sh\b"
    r"|\bbase64\s+(?:-d|--decode)\b[^\n]{0,40}\|\s*(?:ba|z)?sh\b",
    re.I,
)

REMOVED = "[removed]"


def clean_text(text: str) -> str:
    """Session text made safe to show, lines kept: control characters dropped, role tags and
    front-matter fences replaced by a marker."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = _CONTROL.sub("", text)
    text = _ROLE_TAGS.sub(REMOVED, text)
    return _FENCE.sub(REMOVED, text)


def excerpt(text: Any, limit: int = 160) -> str:
    """One short, clean line of session text."""
    s = " ".join(clean_text(str(text)).split())
    # A run of dashes on one line is no fence, but joined lines could bring one to a line start.
    s = _RUN_OF_DASHES.sub("--", s)
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def injection_phrase(text: str) -> str | None:
    """The part of `text` that reads as an instruction to the agent, or None."""
    m = _INJECTION.search(" ".join(_CONTROL.sub("", text).split()))
    return m.group(0) if m else None


def _strings(value: Any) -> Iterable[str]:
    """Every string inside a demo (demos are small: nested dicts and lists of strings)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, Mapping):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif v is not None and hasattr(v, "items"):  # dspy.Example and friends
            stack.extend(dict(v.items()).values())


def demo_injection(demo: Any) -> str | None:
    """The first phrase in any field of `demo` that reads as an instruction to the agent."""
    for s in _strings(demo):
        found = injection_phrase(s)
        if found:
            return found
    return None


def split_demos(demos: Sequence[Any]) -> tuple[list[Any], int]:
    """(the demos safe to show, how many were dropped for looking like instructions)."""
    kept = [d for d in demos if demo_injection(d) is None]
    return kept, len(demos) - len(kept)


def dropped_warning(dropped: int) -> str:
    """The one warning every stage gives for dropped demos."""
    s = "" if dropped == 1 else "s"
    return (
        f"{dropped} demo{s} left out of the prompt: {'its' if dropped == 1 else 'their'} "
        "recorded text reads like instructions to the agent (a prompt injection?)"
    )
