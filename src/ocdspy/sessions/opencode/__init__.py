"""OpenCode's own session stores, read as session logs: `opencode export` files (`export`), the
SQLite database (`database`: `opencode.db`, OpenCode >= 1.2) and the legacy JSON `storage/`
tree (`storage`).

All three hold the same objects (FORMATS.md sections 2 and 3): a session info, its messages and
each message's parts. Each reader rebuilds those objects into a `RawSession` (`raw`), and one
mapping, `mapping.build_session`, turns a `RawSession` into a `SessionLog`. So the same session
read from any of the three yields the same turns, and everything downstream works unchanged.
The two stores share `store`: headers to choose sessions from, one session read at a time.

Importing this package registers the three readers with `ocdspy.sessions.read`.
"""

from ocdspy.sessions.opencode.database import OpenCodeDB, describe_db_error, read_opencode_db
from ocdspy.sessions.opencode.export import read_export_value
from ocdspy.sessions.opencode.mapping import MAPPING_VERSION, build_session, tool_action
from ocdspy.sessions.opencode.raw import FORMAT_DB, FORMAT_EXPORT, FORMAT_STORAGE, RawSession
from ocdspy.sessions.opencode.storage import OpenCodeStorage, read_opencode_storage
from ocdspy.sessions.opencode.store import OpenCodeStore, SessionHeader, StoreError

__all__ = [
    "FORMAT_DB",
    "FORMAT_EXPORT",
    "FORMAT_STORAGE",
    "MAPPING_VERSION",
    "OpenCodeDB",
    "OpenCodeStorage",
    "OpenCodeStore",
    "RawSession",
    "SessionHeader",
    "StoreError",
    "build_session",
    "describe_db_error",
    "read_export_value",
    "read_opencode_db",
    "read_opencode_storage",
    "tool_action",
]
