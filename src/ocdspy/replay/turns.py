"""Which turns a replay re-runs (the validation split's), and what was recorded about each one:
the user's first message as typed, the snapshot the turn started from, the files it changed,
the tools it used and the trajectory the metric compares against.

The split's examples are redacted and carry no snapshot, so each turn is looked up again in
OpenCode's own store by session id and turn number (read-only, as `collect` reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ocdspy.collect import StoreLocation, open_store
from ocdspy.convert import Example, relative_to_cwd
from ocdspy.errors import DataError
from ocdspy.sessions.opencode import SessionHeader
from ocdspy.sessions.read import SessionRead

_EDIT_TOOLS = frozenset({"edit", "write", "multiedit", "apply_patch"})


class Call(BaseModel):
    """One tool call as the metric reads it: the tool and its main argument."""

    tool: str
    target: str


class ReplayTurn(BaseModel):
    """One held-out turn and what the recording says about it."""

    id: str = Field(description="The example id: session id / turn number (0-based).")
    session_id: str
    turn_index: int
    message: str = Field(description="The user's first message of the turn, as recorded.")
    directory: str | None = Field(None, description="The folder the session worked in.")
    project_id: str | None = None
    snapshot: str | None = Field(None, description="Tree hash of the worktree at the start.")
    changed_files: list[str] = Field(
        default_factory=list, description="Files the turn changed (relative to `directory`)."
    )
    tools: list[str] = Field(default_factory=list, description="Tools the turn called.")
    calls: list[Call] = Field(default_factory=list, description="The recorded trajectory.")
    response: str = ""
    problem: str | None = Field(None, description="Why the turn cannot be replayed, if so.")


def held_out(examples: Sequence[Example], *, limit: int | None = None) -> list[Example]:
    """The top-level turns of `examples`, one per (session, turn), in order; at most `limit`.
    Sub-agent sessions are run by their parent's `task` call, never on their own."""
    seen: set[tuple[str, int]] = set()
    chosen: list[Example] = []
    for ex in examples:
        key = (ex.session_id, ex.turn_index)
        if ex.parent_session_id or key in seen:
            continue
        seen.add(key)
        chosen.append(ex)
    return chosen[:limit] if limit is not None else chosen


def base_turn(ex: Example) -> ReplayTurn:
    return ReplayTurn(
        id=ex.id,
        session_id=ex.session_id,
        turn_index=ex.turn_index,
        message=ex.task,
        tools=sorted({a.tool for a in ex.actions}),
        # Until the store's `patch` parts say better: the files its edits named.
        changed_files=sorted(
            {a.target for a in ex.actions if a.tool in _EDIT_TOOLS and a.success is not False}
        ),
        calls=[Call(tool=a.tool, target=a.target) for a in ex.actions],
        response=ex.response,
    )


def recorded_turns(examples: Sequence[Example], location: StoreLocation) -> list[ReplayTurn]:
    """Each example as a `ReplayTurn`, its facts read from the store at `location`. A turn the
    store cannot give (the session is not there, the turn is gone) keeps a `problem` line."""
    turns = [base_turn(ex) for ex in examples]
    try:
        store = open_store(location)
    except DataError as e:
        for turn in turns:
            turn.problem = str(e)
        return turns
    with store:
        headers = {h.id: h for h in store.headers()}
        for turn in turns:
            header = headers.get(turn.session_id)
            if header is None:
                turn.problem = (
                    f"session {turn.session_id} is not in the OpenCode store at {location.path} "
                    "(recorded on another machine?)"
                )
                continue
            log = _read_session(store, header)
            if log is None or turn.turn_index >= len(log.session.examples):
                turn.problem = f"session {turn.session_id}: turn {turn.turn_index} not found"
                continue
            _fill(turn, log)
    return turns


def _read_session(store: Any, header: SessionHeader) -> SessionRead | None:
    import sqlite3

    try:
        for item in store.read(header):
            if isinstance(item, SessionRead):
                return item
    except sqlite3.Error:
        return None
    return None


def _fill(turn: ReplayTurn, read: SessionRead) -> None:
    session = read.session
    recorded = session.examples[turn.turn_index]
    extra: dict[str, Any] = recorded.model_extra or {}
    session_extra: dict[str, Any] = session.model_extra or {}
    directory = session_extra.get("directory") or recorded.input.context.workingDirectory
    turn.directory = directory if isinstance(directory, str) else None
    project = session_extra.get("projectID")
    turn.project_id = project if isinstance(project, str) else None
    snapshot = extra.get("snapshot")
    turn.snapshot = snapshot if isinstance(snapshot, str) else None
    patched = [p for p in extra.get("patchedFiles") or [] if isinstance(p, str)]
    if patched:
        turn.changed_files = sorted({relative_to_cwd(p, turn.directory) for p in patched})
    # The message as typed (the split holds it redacted); the run sends it to the model.
    if recorded.input.task:
        turn.message = recorded.input.task


def first_message_problem(turn: ReplayTurn) -> str | None:
    if not turn.message.strip():
        return f"session {turn.session_id} turn {turn.turn_index}: no user message to send"
    return None


def store_data_dir(location: StoreLocation) -> Path:
    """OpenCode's data folder for a store: the folder of `opencode.db` or of `storage/`."""
    return location.path.parent
