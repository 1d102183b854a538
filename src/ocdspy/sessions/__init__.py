"""Reading recorded sessions, whatever format they come in."""

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
