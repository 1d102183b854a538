"""What the three readers build: OpenCode's own objects (a session info, its messages and each
message's parts, FORMATS.md sections 2 and 3) in OpenCode's shapes, plus the lenient value
helpers every reader and the mapping use on them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ocdspy.sessions.read import Problem

FORMAT_EXPORT = "opencode-export"
FORMAT_DB = "opencode-db"
FORMAT_STORAGE = "opencode-storage"


@dataclass
class RawMessage:
    info: dict[str, Any]
    parts: list[dict[str, Any]]
    # Why some of this message's parts are missing (unreadable records); empty when whole.
    damaged: list[str] = field(default_factory=list)


@dataclass
class RawSession:
    info: dict[str, Any]
    messages: list[RawMessage]


@dataclass
class ReadContext:
    """Per-input state of one reader run: where problems go and what was already reported."""

    file: str
    source_format: str
    unknown_part_types: set[str] = field(default_factory=set)
    unknown_statuses: set[str] = field(default_factory=set)

    def problem(self, where: str, message: str, severity: str = "error") -> Problem:
        return Problem(self.file, where, message, severity)  # type: ignore[arg-type]


def iso_ms(value: Any) -> str | None:
    """Epoch milliseconds -> ISO-8601 UTC with a Z, as the plugin format writes timestamps."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        moment = datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_number(value: Any) -> float:
    """A finite number as is; anything else counts as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return value


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_text(value: Any) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def parse_record(data: Any) -> Any:
    """A stored JSON record (text or bytes) -> its value; None when it is not readable JSON."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    if not isinstance(data, str):
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
