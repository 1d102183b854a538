"""`opencode export` files: {"info": {...}, "messages": [{"info": {...}, "parts": [...]}]}.

The JSON reader parses the file and hands the value here (`VALUE_READERS`), so a file is read
from disk once whichever format it turns out to be."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ocdspy.sessions.opencode.mapping import map_session
from ocdspy.sessions.opencode.raw import FORMAT_EXPORT, RawMessage, RawSession, ReadContext
from ocdspy.sessions.read import VALUE_READERS, Problem, ReadItem


def read_export_value(path: Path, value: Any, content_key: str) -> Iterator[ReadItem]:
    """An already-parsed `opencode export` file: {"info": {...}, "messages": [{info, parts}]}."""
    context = ReadContext(str(path), FORMAT_EXPORT)
    info = value.get("info")
    bad = _check_info(info, "info", context)
    if bad:
        yield bad
        return
    messages = value.get("messages")
    if not isinstance(messages, list):
        yield context.problem("messages", "must be an array of {info, parts}")
        return
    raw_messages: list[RawMessage] = []
    for index, entry in enumerate(messages):
        message_info = entry.get("info") if isinstance(entry, dict) else None
        parts = entry.get("parts", []) if isinstance(entry, dict) else None
        if not isinstance(message_info, dict) or not isinstance(parts, list):
            yield context.problem(
                f"messages[{index}]",
                "not a message ({info, parts}); the session is "
                "skipped, since its turns cannot be rebuilt without it",
            )
            return
        damaged = [
            f"messages[{index}].parts[{position}] is not an object"
            for position, part in enumerate(parts)
            if not isinstance(part, dict)
        ]
        for why in damaged:
            yield context.problem(why, "not a part object; skipped")
        whole = [part for part in parts if isinstance(part, dict)]
        raw_messages.append(RawMessage(message_info, whole, damaged))
    yield from map_session(RawSession(info, raw_messages), context, path)


def _check_info(value: Any, where: str, context: ReadContext) -> Problem | None:
    if not isinstance(value, dict):
        return context.problem(where, "session info must be an object")
    if not isinstance(value.get("id"), str) or not value["id"]:
        return context.problem(where, "session info has no 'id'")
    return None


VALUE_READERS[FORMAT_EXPORT] = read_export_value
