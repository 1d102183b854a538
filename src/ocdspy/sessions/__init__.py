"""Reading recorded sessions, whatever format they come in."""

# Imported for its side effect: it registers the readers of OpenCode's own stores
# (`opencode export` files, opencode.db, the storage/ tree) with ocdspy.sessions.read.
from ocdspy.sessions import opencode as _opencode  # noqa: F401
from ocdspy.sessions.model import Action, SessionLog, Turn
from ocdspy.sessions.read import (
    Problem,
    SessionRead,
    Source,
    discover,
    read_paths,
    read_source,
)

__all__ = [
    "Action",
    "Problem",
    "SessionLog",
    "SessionRead",
    "Source",
    "Turn",
    "discover",
    "read_paths",
    "read_source",
]
