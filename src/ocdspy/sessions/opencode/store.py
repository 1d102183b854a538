"""What OpenCode's two session stores (the SQLite database and the legacy JSON `storage/` tree)
share: a list of session headers to choose from, reading one session at a time, and turning a
store that fails under the reader into problems instead of a crash."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ocdspy.sessions.read import Problem, ReadItem

# Sessions that fail to read for one reason, reported one by one before they are only counted.
_MAX_REPORTED = 10


@dataclass(frozen=True)
class SessionHeader:
    """The little `collect` needs to choose a session before reading it."""

    id: str
    parent_id: str | None
    directory: str | None
    title: str | None
    time_created: int
    time_updated: int


class StoreError(Exception):
    """The store as a whole cannot be read (locked, damaged, not OpenCode's)."""


class OpenCodeStore:
    path: Path
    format: str
    # Problems found while opening or listing, handed out once by `take_problems`.
    problems: list[Problem]
    # The store's file ends early: sessions stored past the end fail to read.
    truncated: bool = False

    def take_problems(self) -> list[Problem]:
        taken, self.problems = self.problems, []
        return taken

    def headers(self) -> list[SessionHeader]:
        raise NotImplementedError

    def read(self, header: SessionHeader) -> Iterator[ReadItem]:
        raise NotImplementedError

    def describe_error(self, error: Exception) -> str:
        """Why reading failed, in one line (only the database fails in the middle of a read)."""
        return str(error)

    def close(self) -> None:
        return None

    def __enter__(self) -> OpenCodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_store(path: Path, open_store: Callable[[Path], OpenCodeStore]) -> Iterator[ReadItem]:
    """A store reader for validate / convert: open the store, list its sessions, read them."""
    import sqlite3

    try:
        store = open_store(path)
    except StoreError as e:
        yield Problem(str(path), "", str(e))
        return
    with store:
        try:
            headers = store.headers()
        except StoreError as e:
            yield from store.take_problems()
            yield Problem(str(store.path), "", str(e))
            return
        except sqlite3.Error as e:
            yield Problem(str(store.path), "", store.describe_error(e))
            return
        yield from store.take_problems()
        yield from read_sessions(store, headers)


def read_sessions(store: OpenCodeStore, headers: list[SessionHeader]) -> Iterator[ReadItem]:
    """Read the given sessions, turning database failures into problems: a session that fails
    is skipped; a locked database stops the read with one message saying how much is left."""
    import sqlite3

    file = str(store.path)
    failed = 0
    for position, header in enumerate(headers):
        try:
            yield from store.read(header)
        except sqlite3.Error as e:
            if store.truncated:
                message = "its records lie past the end of the truncated file"
            else:
                message = store.describe_error(e)
            if "locked" in message:
                yield Problem(
                    file,
                    f"session {header.id}",
                    f"{message}; {len(headers) - position} sessions were not read",
                )
                return
            failed += 1
            if failed <= _MAX_REPORTED:
                yield Problem(file, f"session {header.id}", f"{message}; session skipped")
    if failed > _MAX_REPORTED:
        yield Problem(
            file,
            "",
            f"... and {failed - _MAX_REPORTED} more sessions could not be read for the same reason",
        )
