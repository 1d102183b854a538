"""Showing names that come from outside (file names, model names) on a terminal, safely.

A file name may hold newlines and escape sequences: printed raw, it splits one message over
several lines or moves the cursor and recolours the terminal. Every file name the CLI or a
message shows goes through `show_path`.
"""

from __future__ import annotations

import os
import re

# C0/C1 controls and DEL, plus the format characters that reorder or hide text (bidi overrides,
# zero-width, line/paragraph separators).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    special = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if c in special:
        return special[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control or invisible-format character written as an escape (`\\n`,
    `\\x1b`, `\\u202e`), so it shows as one line and as what it is. A backslash stays as is."""
    return _UNSAFE.sub(_escape, text)


def show_path(path: str | os.PathLike[str]) -> str:
    """A path as it should appear in a message: one line, nothing the terminal interprets.
    Bytes that are not valid UTF-8 (kept by Python as surrogates) show as `\\xNN`."""
    text = os.fspath(path)
    if any("\udc80" <= c <= "\udcff" for c in text):
        text = "".join(
            f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in text
        )
    return printable(text)
