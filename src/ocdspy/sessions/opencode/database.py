"""`opencode.db`, OpenCode's SQLite database (OpenCode >= 1.2): tables `session`, `message` and
`part`, each message and part a JSON record in a `data` column, read back into OpenCode's
objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ocdspy.sessions.opencode.mapping import map_session
from ocdspy.sessions.opencode.raw import (
    FORMAT_DB,
    RawMessage,
    RawSession,
    ReadContext,
    as_int,
    parse_record,
)
from ocdspy.sessions.opencode.store import OpenCodeStore, SessionHeader, StoreError, read_store
from ocdspy.sessions.read import SQLITE_MAGIC, Problem, ReadItem, register_reader

if TYPE_CHECKING:
    import sqlite3

# The `session` table's columns in OpenCode 1.18, and what they become in the session info.
_SESSION_COLUMNS = (
    "id",
    "project_id",
    "workspace_id",
    "parent_id",
    "slug",
    "directory",
    "path",
    "title",
    "version",
    "share_url",
    "summary_additions",
    "summary_deletions",
    "summary_files",
    "summary_diffs",
    "metadata",
    "cost",
    "tokens_input",
    "tokens_output",
    "tokens_reasoning",
    "tokens_cache_read",
    "tokens_cache_write",
    "revert",
    "permission",
    "agent",
    "model",
    "time_created",
    "time_updated",
    "time_compacting",
    "time_archived",
)
# Held out of the info: large and of no use to a training example.
_SKIPPED_SESSION_COLUMNS = frozenset({"summary_diffs"})
_REQUIRED = {
    "session": ("id",),
    "message": ("id", "session_id", "data"),
    "part": ("id", "message_id", "session_id", "data"),
}
DEFAULT_BUSY_TIMEOUT = 5.0


def _json_column(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def session_info_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A `session` row -> the session info `opencode export` prints for it."""
    info: dict[str, Any] = {"id": row.get("id")}
    for column, key in (
        ("slug", "slug"),
        ("project_id", "projectID"),
        ("workspace_id", "workspaceID"),
        ("directory", "directory"),
        ("path", "path"),
        ("parent_id", "parentID"),
        ("title", "title"),
        ("agent", "agent"),
        ("version", "version"),
    ):
        if row.get(column) is not None:
            info[key] = row[column]
    if row.get("model") is not None:
        info["model"] = _json_column(row["model"])
    summary = {key: row.get(f"summary_{key}") for key in ("additions", "deletions", "files")}
    if any(value is not None for value in summary.values()):
        info["summary"] = summary
    if row.get("share_url"):
        info["share"] = {"url": row["share_url"]}
    info["cost"] = row.get("cost") or 0
    info["tokens"] = {
        "input": row.get("tokens_input") or 0,
        "output": row.get("tokens_output") or 0,
        "reasoning": row.get("tokens_reasoning") or 0,
        "cache": {
            "read": row.get("tokens_cache_read") or 0,
            "write": row.get("tokens_cache_write") or 0,
        },
    }
    for column in ("metadata", "permission", "revert"):
        if row.get(column) is not None:
            info[column] = _json_column(row[column])
    time = {"created": row.get("time_created"), "updated": row.get("time_updated")}
    for column, key in (("time_compacting", "compacting"), ("time_archived", "archived")):
        if row.get(column) is not None:
            time[key] = row[column]
    info["time"] = time
    unknown = {
        key: _json_column(value) for key, value in row.items() if key not in _SESSION_COLUMNS
    }
    if unknown:
        info["dbColumns"] = unknown
    return info


def _db_file_state(path: Path) -> str | None:
    """Explain a damaged database from its header: truncated, or not a database at all."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(100)
    except OSError:
        return None
    if not head.startswith(SQLITE_MAGIC):
        return "the file is not an SQLite database"
    if len(head) < 100:
        return f"the file is truncated ({size} bytes, shorter than the SQLite header)"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    # The page count in the header is only trustworthy while the two counters agree.
    if head[24:28] == head[92:96] and pages and size < pages * page_size:
        return f"the file is truncated ({size} of {pages * page_size} bytes)"
    return None


def describe_db_error(path: Path, e: Exception, timeout: float) -> str:
    text = str(e)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return (
            f"the database is locked by another process (waited {timeout:g}s): another "
            "program holds a write lock on it; try again in a moment"
        )
    state = _db_file_state(path)
    if state:
        return f"{state}; it cannot be read completely ({text})"
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return f"the database file is damaged ({text})"
    if "unable to open" in low:
        return (
            "cannot open the database (unable to open database file: check permissions; "
            "a database in WAL mode also needs its -wal/-shm files or a writable folder)"
        )
    return f"cannot read the database ({text})"


class OpenCodeDB(OpenCodeStore):
    """`opencode.db`, opened read-only. OpenCode keeps it in WAL mode, so reading never blocks
    OpenCode and OpenCode never blocks us; each session is read in one read transaction, so a
    session being written meanwhile is seen whole, either before or after the write."""

    format = FORMAT_DB

    def __init__(self, path: Path, *, busy_timeout: float | None = None) -> None:
        self.path = path
        self.context = ReadContext(str(path), FORMAT_DB)
        self.truncated = False
        self.timeout = DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        self.problems: list[Problem] = []
        self.conn = self._connect()
        self._columns = self._read_layout()
        self._check_layout()
        self._session_select = ", ".join(
            f'"{column}"'
            for column in self._columns["session"]
            if column not in _SKIPPED_SESSION_COLUMNS
        )

    def _connect(self) -> sqlite3.Connection:
        import sqlite3

        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            return sqlite3.connect(
                uri, uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(describe_db_error(self.path, e, self.timeout)) from None

    def _fail(self, message: str) -> NoReturn:
        self.conn.close()
        raise StoreError(message) from None

    def _read_layout(self) -> dict[str, list[str]]:
        """Each table's columns; a truncated file is read as far as it goes, with a problem."""
        import sqlite3

        try:
            return self._table_columns()
        except sqlite3.DatabaseError as e:
            state = _db_file_state(self.path)
            if not (state and "truncated" in state):
                self._fail(describe_db_error(self.path, e, self.timeout))
            return self._read_truncated_layout(state)

    def _read_truncated_layout(self, state: str) -> dict[str, list[str]]:
        import sqlite3

        # SQLite refuses a file shorter than its header says unless told to trust the file's
        # size; then what is still there can be read. (On a read-only connection this flag
        # writes nothing.)
        self.truncated = True
        self.problems.append(
            Problem(
                str(self.path),
                "",
                f"{state}: reading what is left; sessions stored in the missing part are skipped",
            )
        )
        try:
            self.conn.execute("PRAGMA writable_schema = ON")
            return self._table_columns()
        except sqlite3.Error as e:
            self._fail(describe_db_error(self.path, e, self.timeout))

    def _table_columns(self) -> dict[str, list[str]]:
        return {
            table: [row[1] for row in self.conn.execute(f'PRAGMA table_info("{table}")')]
            for table in ("session", "message", "part")
        }

    def _check_layout(self) -> None:
        """Refuse what is not OpenCode's layout; note session columns a newer OpenCode added."""
        for table, columns in self._columns.items():
            if not columns:
                state = _db_file_state(self.path)
                if state:  # SQLite sees a file cut inside its first page as an empty database
                    self._fail(f"{state}; nothing can be read from it")
                self._fail(f"not an OpenCode database: it has no '{table}' table")
            missing = [column for column in _REQUIRED[table] if column not in columns]
            if missing:
                self._fail(
                    f"table '{table}' has no column {', '.join(missing)}: not a "
                    "database layout this version of ocdspy can read"
                )
        unknown = [column for column in self._columns["session"] if column not in _SESSION_COLUMNS]
        if unknown:
            self.problems.append(
                Problem(
                    str(self.path),
                    "table session",
                    f"columns unknown to this version of ocdspy ({', '.join(unknown)}), probably "
                    "from a newer OpenCode; their values are kept as `dbColumns`",
                    "warning",
                )
            )

    def close(self) -> None:
        self.conn.close()

    def describe_error(self, error: Exception) -> str:
        return describe_db_error(self.path, error, self.timeout)

    def headers(self) -> list[SessionHeader]:
        import sqlite3

        columns = self._columns["session"]
        pick = ", ".join(
            column if column in columns else "NULL"
            for column in ("id", "parent_id", "directory", "title", "time_created", "time_updated")
        )
        try:
            rows = self.conn.execute(f"SELECT {pick} FROM session").fetchall()
        except sqlite3.Error as e:
            raise StoreError(self.describe_error(e)) from None
        headers = [
            SessionHeader(
                str(row[0]),
                row[1],
                row[2],
                row[3],
                as_int(row[4]),
                as_int(row[5]) or as_int(row[4]),
            )
            for row in rows
            if row[0] is not None
        ]
        headers.sort(key=lambda header: (header.time_created, header.id))
        return headers

    def read(self, header: SessionHeader) -> Iterator[ReadItem]:
        """One session; raises sqlite3.Error when the database fails under us."""
        rows = self._fetch(header.id)
        if rows is None:  # deleted since the list was read
            return
        info, messages, parts = rows
        parts_of: dict[str, list[tuple[str, Any]]] = {}
        for part_id, message_id, data in parts:
            parts_of.setdefault(message_id, []).append((part_id, data))
        raw_messages: list[RawMessage] = []
        for message_id, data in messages:
            message_info = parse_record(data)
            if not isinstance(message_info, dict):
                yield self.context.problem(
                    f"session {header.id}: message {message_id}",
                    "unreadable record (invalid JSON in `data`); the session is "
                    "skipped, since its turns cannot be rebuilt without it",
                )
                return
            message_info["id"], message_info["sessionID"] = message_id, header.id
            message = RawMessage(message_info, [], [])
            yield from self._take_parts(message, parts_of.pop(message_id, []))
            raw_messages.append(message)
        yield from map_session(RawSession(info, raw_messages), self.context, self.path)

    def _fetch(
        self, session_id: str
    ) -> tuple[dict[str, Any], list[tuple[Any, ...]], list[tuple[Any, ...]]] | None:
        """A session's info, messages and parts, read in one transaction; None when it is gone."""
        order = "time_created, id" if "time_created" in self._columns["message"] else "id"
        self.conn.execute("BEGIN")
        try:
            cursor = self.conn.execute(
                f"SELECT {self._session_select} FROM session WHERE id = ?", (session_id,)
            )
            names = [column[0] for column in cursor.description]
            row = cursor.fetchone()
            if row is None:
                return None
            messages = self.conn.execute(
                f"SELECT id, data FROM message WHERE session_id = ? ORDER BY {order}",
                (session_id,),
            ).fetchall()
            parts = self.conn.execute(
                "SELECT id, message_id, data FROM part WHERE session_id = ? "
                "ORDER BY message_id, id",
                (session_id,),
            ).fetchall()
        finally:
            self.conn.execute("COMMIT")
        return session_info_from_row(dict(zip(names, row, strict=True))), messages, parts

    def _take_parts(self, message: RawMessage, records: list[tuple[str, Any]]) -> Iterator[Problem]:
        """Add a message's part records to it; an unreadable one is a problem and marks the
        message damaged."""
        session_id, message_id = message.info["sessionID"], message.info["id"]
        for part_id, data in records:
            part = parse_record(data)
            if not isinstance(part, dict):
                message.damaged.append(f"part {part_id} unreadable")
                yield self.context.problem(
                    f"session {session_id}: part {part_id}",
                    "unreadable record (invalid JSON in `data`); part skipped "
                    "and its turn marked unsuccessful",
                )
                continue
            part["id"], part["sessionID"], part["messageID"] = part_id, session_id, message_id
            message.parts.append(part)


@register_reader(FORMAT_DB)
def read_opencode_db(path: Path) -> Iterator[ReadItem]:
    return read_store(path, OpenCodeDB)
