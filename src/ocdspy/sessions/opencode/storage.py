"""The legacy JSON `storage/` tree (OpenCode before 1.2): one JSON file per session info,
message and part, read back into OpenCode's objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ocdspy.sessions.opencode.mapping import map_session
from ocdspy.sessions.opencode.raw import (
    FORMAT_STORAGE,
    RawMessage,
    RawSession,
    ReadContext,
    as_dict,
    as_int,
    as_text,
    parse_record,
)
from ocdspy.sessions.opencode.store import OpenCodeStore, SessionHeader, StoreError, read_store
from ocdspy.sessions.read import Problem, ReadItem, register_reader


class OpenCodeStorage(OpenCodeStore):
    """The pre-1.2 `storage/` tree: session/<projectID>/<id>.json, message/<sessionID>/<id>.json,
    part/<messageID>/<id>.json. Every file carries its own ids; file names sort in id order."""

    format = FORMAT_STORAGE

    def __init__(self, path: Path) -> None:
        self.path = path
        self.context = ReadContext(str(path), FORMAT_STORAGE)
        self.problems: list[Problem] = []
        self._files: dict[str, Path] = {}
        if not (path / "session").is_dir():
            raise StoreError("not an OpenCode storage directory: it has no session/ folder")

    def _problem(self, file: Path, message: str) -> Problem:
        """Problems name the tree as the input and the broken file inside it, so `validate`
        counts them against the tree."""
        return Problem(str(self.path), file.relative_to(self.path).as_posix(), message)

    def _load(self, file: Path) -> tuple[Any, str | None]:
        try:
            data = file.read_bytes()
        except OSError as e:
            return None, f"cannot read: {e.strerror or e}"
        value = parse_record(data)
        if value is None:
            return None, "invalid JSON" if data.strip() else "file is empty"
        return value, None

    def headers(self) -> list[SessionHeader]:
        headers = []
        for file in sorted((self.path / "session").glob("*/*.json")):
            value, err = self._load(file)
            if err or not isinstance(value, dict) or not as_text(value.get("id")):
                self.problems.append(
                    self._problem(file, f"{err or 'not a session info object'}; skipped")
                )
                continue
            time = as_dict(value.get("time"))
            created = as_int(time.get("created"))
            header = SessionHeader(
                value["id"],
                as_text(value.get("parentID")),
                as_text(value.get("directory")),
                as_text(value.get("title")),
                created,
                as_int(time.get("updated")) or created,
            )
            self._files[header.id] = file
            headers.append(header)
        headers.sort(key=lambda header: (header.time_created, header.id))
        return headers

    def read(self, header: SessionHeader) -> Iterator[ReadItem]:
        file = self._files.get(header.id)
        info, err = self._load(file) if file else (None, "session file vanished")
        if not isinstance(info, dict):
            yield self.context.problem(f"session {header.id}", err or "not a session info object")
            return
        raw_messages: list[RawMessage] = []
        for message_file in _json_files(self.path / "message" / header.id):
            message_info, err = self._load(message_file)
            if not isinstance(message_info, dict) or not as_text(message_info.get("id")):
                yield self._problem(
                    message_file,
                    f"{err or 'not a message object'}; session {header.id} is skipped, since "
                    "its turns cannot be rebuilt without it",
                )
                return
            message = RawMessage(message_info, [], [])
            yield from self._take_parts(message)
            raw_messages.append(message)
        yield from map_session(RawSession(info, raw_messages), self.context, self.path)

    def _take_parts(self, message: RawMessage) -> Iterator[Problem]:
        """Add a message's part files to it; an unreadable one is a problem and marks the
        message damaged."""
        for part_file in _json_files(self.path / "part" / message.info["id"]):
            part, err = self._load(part_file)
            if not isinstance(part, dict):
                message.damaged.append(f"part {part_file.stem} unreadable")
                yield self._problem(
                    part_file,
                    f"{err or 'not a part object'}; part skipped and its turn marked unsuccessful",
                )
                continue
            message.parts.append(part)


def _json_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@register_reader(FORMAT_STORAGE)
def read_opencode_storage(path: Path) -> Iterator[ReadItem]:
    return read_store(path, OpenCodeStorage)
