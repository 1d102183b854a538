"""OpenCode's own session stores, read as session logs: `opencode export` files, the SQLite
database (`opencode.db`, OpenCode >= 1.2) and the legacy JSON `storage/` tree.

All three hold the same objects (FORMATS.md sections 2 and 3): a session info, its messages and
each message's parts. Each reader rebuilds those objects into a `RawSession`, and one mapping,
`build_session`, turns a `RawSession` into a `SessionLog`. So the same session read from any of
the three yields the same turns, and everything downstream works unchanged.

The mapping rules (what a turn is, when an action or a turn failed) are documented for users
in docs/opencode-sources.md; keep the two in step. `MAPPING_VERSION` changes whenever a rule
changes, so `collect` knows its earlier output is stale.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocdspy.sessions.model import (
    Action,
    AgentInfo,
    Context,
    ConversationMessage,
    Metrics,
    Outcome,
    SessionLog,
    TokenCache,
    TokenCost,
    Turn,
    TurnInput,
    TurnMetadata,
    TurnOutput,
)
from ocdspy.sessions.read import (
    SQLITE_MAGIC,
    VALUE_READERS,
    Problem,
    ReadItem,
    SessionRead,
    register_reader,
)

if TYPE_CHECKING:
    import sqlite3

MAPPING_VERSION = 1

FORMAT_EXPORT = "opencode-export"
FORMAT_DB = "opencode-db"
FORMAT_STORAGE = "opencode-storage"

# Part types OpenCode 1.18 writes. Anything else is reported once per input and ignored.
KNOWN_PART_TYPES = frozenset(
    {
        "text",
        "reasoning",
        "tool",
        "step-start",
        "step-finish",
        "patch",
        "file",
        "subtask",
        "agent",
        "snapshot",
        "retry",
        "compaction",
    }
)
# Finish reasons after which OpenCode itself goes on with the next step of the same turn.
_CONTINUING_FINISH = frozenset({"tool-calls", "unknown"})
# What OpenCode writes into a tool's error when a permission was refused: a `deny` rule
# ("The user has specified a rule which prevents you ..."), the user saying no ("The user
# rejected permission ..."), saying no with feedback, or dismissing a question.
_PERMISSION_REFUSED = re.compile(
    r"specified a rule which prevents you|rejected permission|PermissionDeniedError|"
    r"PermissionRejectedError|PermissionCorrectedError|QuestionRejectedError|user dismissed",
    re.IGNORECASE,
)
_ABORTED = re.compile(r"\baborted\b", re.IGNORECASE)
_FILE_TOOLS = frozenset({"write", "edit", "multiedit"})
# Problems of one kind reported individually per input before they are only counted.
_MAX_REPORTED = 10


# ---------------------------------------------------------------------------------------------
# What the readers build: OpenCode's objects, in OpenCode's shapes


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
class _Context:
    """Per-input state of one reader run: where problems go and what was already reported."""

    file: str
    source_format: str
    unknown_part_types: set[str] = field(default_factory=set)
    unknown_statuses: set[str] = field(default_factory=set)

    def problem(self, where: str, message: str, severity: str = "error") -> Problem:
        return Problem(self.file, where, message, severity)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Small helpers


def iso_ms(value: Any) -> str | None:
    """Epoch milliseconds -> ISO-8601 UTC with a Z, as the plugin format writes timestamps."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        dt = datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _model_name(provider: Any, model: Any) -> str | None:
    if _str(model) is None:
        return None
    return f"{provider}/{model}" if _str(provider) else str(model)


def _tokens(info: dict[str, Any]) -> tuple[float, float, float, float, float]:
    t = _dict(info.get("tokens"))
    cache = _dict(t.get("cache"))
    return (
        _num(t.get("input")),
        _num(t.get("output")),
        _num(t.get("reasoning")),
        _num(cache.get("read")),
        _num(cache.get("write")),
    )


def _texts(parts: list[dict[str, Any]], *, synthetic: bool = False) -> list[str]:
    """The text of `text` parts; synthetic ones (added by OpenCode, not typed) only on request.
    Parts marked `ignored` are never taken."""
    out = []
    for p in parts:
        if p.get("type") != "text" or p.get("ignored"):
            continue
        if bool(p.get("synthetic")) != synthetic:
            continue
        text = p.get("text")
        if isinstance(text, str) and text.strip():
            out.append(text.strip())
    return out


# ---------------------------------------------------------------------------------------------
# Actions


def tool_action(part: dict[str, Any], step: int) -> Action:
    """One `tool` part -> one action, with `success` and, on failure, a `failureKind`:

    - `tool-error`: the tool ended in state `error`;
    - `permission-denied`: state `error` because a permission was refused (a deny rule, the
      user rejecting the call or dismissing a question);
    - `aborted`: state `error` because the run was cancelled;
    - `exit-code`: state `completed`, but the command's `metadata.exit` is non-zero;
    - `interrupted`: still `pending` or `running` in storage: OpenCode stopped mid-call.
    """
    state = _dict(part.get("state"))
    status = state.get("status")
    raw_input = state.get("input")
    args = (
        raw_input
        if isinstance(raw_input, dict)
        else ({} if raw_input is None else {"input": raw_input})
    )
    times = _dict(state.get("time"))
    extra: dict[str, Any] = {"status": status}
    result: Any = None
    success: bool | None
    if status == "completed":
        result = state.get("output")
        metadata = _dict(state.get("metadata"))
        exit_code = metadata.get("exit")
        success = True
        if isinstance(exit_code, int) and not isinstance(exit_code, bool):
            extra["exitCode"] = exit_code
            if exit_code != 0:
                success = False
                extra["failureKind"] = "exit-code"
        if metadata.get("truncated") is True:
            extra["outputTruncated"] = True
        child = _str(metadata.get("sessionId"))
        if part.get("tool") == "task" and child:
            extra["childSession"] = child
    elif status == "error":
        result = state.get("error")
        success = False
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        if _PERMISSION_REFUSED.search(text):
            extra["failureKind"] = "permission-denied"
        elif _ABORTED.search(text):
            extra["failureKind"] = "aborted"
        else:
            extra["failureKind"] = "tool-error"
    elif status in ("pending", "running"):
        success = False
        extra["failureKind"] = "interrupted"
    else:
        success = None
    if _str(state.get("title")):
        extra["title"] = state["title"]
    start, end = times.get("start"), times.get("end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        extra["durationMs"] = end - start
    return Action(
        step=step,
        tool=str(part.get("tool") or "unknown"),
        callID=_str(part.get("callID")),
        args=args,
        result=result,
        success=success,
        timestamp=iso_ms(start),
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# Turns


@dataclass
class _TurnParts:
    user: dict[str, Any]
    user_parts: list[dict[str, Any]]
    replies: list[RawMessage] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    # Replies that came after automatic user messages (compaction, "continue"), merged here.
    continued: int = 0


def _is_automatic(parts: list[dict[str, Any]]) -> bool:
    """A user message nobody typed: only synthetic text and/or a `compaction` marker (OpenCode
    adds these when it compacts a long session and then carries on with the same request)."""
    if not parts:
        return False
    for p in parts:
        t = p.get("type")
        if t == "text" and not p.get("synthetic") and not p.get("ignored"):
            return False
        if t in ("file", "subtask", "agent"):
            return False
    return any(p.get("type") == "compaction" or p.get("synthetic") for p in parts)


def _group_turns(
    raw: RawSession, ctx: _Context, sid: str
) -> tuple[list[_TurnParts], list[Problem]]:
    problems: list[Problem] = []
    turns: list[_TurnParts] = []
    by_user: dict[str, _TurnParts] = {}
    for msg in raw.messages:
        info = msg.info
        role = info.get("role")
        mid = str(info.get("id") or "?")
        if role == "user":
            if turns and _is_automatic(msg.parts):
                # Not a new request: what follows still answers the previous one.
                turns[-1].continued += 1
                turns[-1].damaged.extend(msg.damaged)
                by_user[mid] = turns[-1]
                continue
            turn = _TurnParts(user=info, user_parts=msg.parts, damaged=list(msg.damaged))
            turns.append(turn)
            by_user[mid] = turn
        elif role == "assistant":
            parent = info.get("parentID")
            target = by_user.get(parent) if isinstance(parent, str) else None
            if target is None:
                if not turns:
                    problems.append(
                        ctx.problem(
                            f"session {sid}: message {mid}",
                            "assistant message before any user message; ignored",
                            "warning",
                        )
                    )
                    continue
                target = turns[-1]
            if info.get("summary") is True:
                # A compaction summary: OpenCode's own bookkeeping, not an answer to the user.
                target.continued += 1
                continue
            target.replies.append(msg)
            target.damaged.extend(msg.damaged)
        else:
            problems.append(
                ctx.problem(
                    f"session {sid}: message {mid}",
                    f"unknown message role {role!r}; message ignored",
                    "warning",
                )
            )
    return turns, problems


def _task_text(parts: list[dict[str, Any]]) -> str:
    typed = _texts(parts)
    if typed:
        return "\n\n".join(typed)
    prompts = [
        p["prompt"].strip()
        for p in parts
        if p.get("type") == "subtask" and isinstance(p.get("prompt"), str)
    ]
    if prompts:
        return "\n\n".join(prompts)
    return "\n\n".join(_texts(parts, synthetic=True))


def _attached_files(parts: list[dict[str, Any]]) -> list[str]:
    files = []
    for p in parts:
        if p.get("type") != "file":
            continue
        source = _dict(p.get("source"))
        name = _str(source.get("path")) or _str(p.get("filename"))
        url = _str(p.get("url"))
        if name is None and url and url.startswith("file://"):
            name = url[len("file://") :]
        if name and name not in files:
            files.append(name)
    return files


def _build_turn(
    tp: _TurnParts,
    index: int,
    history: list[ConversationMessage],
    sid: str,
    session_dir: str | None,
    ctx: _Context,
    problems: list[Problem],
) -> tuple[Turn, str]:
    user = tp.user
    actions: list[Action] = []
    ignored: Counter[str] = Counter()
    modified: list[str] = []
    response, final_message = "", None
    tin = tout = treason = cread = cwrite = 0.0
    cost = 0.0
    failures: list[str] = []
    for reply in tp.replies:
        rid = str(reply.info.get("id") or "?")
        texts = _texts(reply.parts)
        if texts:
            response, final_message = "\n\n".join(texts), _str(reply.info.get("id"))
        i, o, r, cr, cw = _tokens(reply.info)
        tin, tout, treason, cread, cwrite = tin + i, tout + o, treason + r, cread + cr, cwrite + cw
        cost += _num(reply.info.get("cost"))
        for part in reply.parts:
            ptype = part.get("type")
            if ptype == "tool":
                action = tool_action(part, len(actions) + 1)
                extra = action.model_extra or {}
                if extra.get("failureKind") == "interrupted":
                    problems.append(
                        ctx.problem(
                            f"session {sid}: part {part.get('id', '?')}",
                            f"tool call '{action.tool}' is still '{extra.get('status')}': "
                            "the session was interrupted; the call is kept as a failed action",
                            "warning",
                        )
                    )
                elif action.success is None:
                    status = extra.get("status")
                    if str(status) not in ctx.unknown_statuses:
                        ctx.unknown_statuses.add(str(status))
                        problems.append(
                            ctx.problem(
                                f"session {sid}: part {part.get('id', '?')}",
                                f"unknown tool state {status!r}; the call is kept with an unknown "
                                "outcome",
                                "warning",
                            )
                        )
                if action.success and action.tool in _FILE_TOOLS:
                    path = action.args.get("filePath")
                    if isinstance(path, str) and path not in modified:
                        modified.append(path)
                actions.append(action)
            elif ptype == "patch":
                ignored[ptype] += 1
                for f in part.get("files") or []:
                    if isinstance(f, str) and f not in modified:
                        modified.append(f)
            elif ptype in KNOWN_PART_TYPES:
                if ptype != "text":
                    ignored[str(ptype)] += 1
            else:
                ignored[str(ptype)] += 1
                _unknown_part(part, sid, ctx, problems)
        err = reply.info.get("error")
        if err:
            e = _dict(err)
            name = _str(e.get("name")) or "error"
            detail = _str(_dict(e.get("data")).get("message"))
            failures.append(
                f"assistant error {name}" + (f": {detail}" if detail else "") + f" (message {rid})"
            )
    for part in tp.user_parts:
        ptype = part.get("type")
        if ptype not in KNOWN_PART_TYPES:
            _unknown_part(part, sid, ctx, problems)

    # When did the agent stop, and why?
    if not tp.replies:
        failures.append("no assistant reply")
        completed = False
    else:
        completed = not any(r.info.get("error") for r in tp.replies)
        for pos, reply in enumerate(tp.replies):
            finish = reply.info.get("finish")
            last = pos == len(tp.replies) - 1
            if reply.info.get("error"):
                continue  # already a failure; its finish reason adds nothing
            if last and finish != "stop":
                completed = False
                failures.append(
                    f"last step finished with {finish!r} instead of 'stop'"
                    if finish
                    else "last step has no finish reason (interrupted)"
                )
            elif not last and finish not in (None, "stop", *_CONTINUING_FINISH):
                completed = False
                failures.append(f"a step finished with {finish!r}")
    # A failed call counts against the turn unless a later call of the same tool succeeded.
    for pos, action in enumerate(actions):
        if action.success is not False:
            continue
        recovered = any(a.tool == action.tool and a.success for a in actions[pos + 1 :])
        if not recovered:
            kind = (action.model_extra or {}).get("failureKind", "failed")
            failures.append(f"tool {action.tool} failed ({kind}) at step {action.step}")
    for why in tp.damaged:
        failures.append(f"incomplete record: {why}")
    success = not failures

    first_reply = tp.replies[0].info if tp.replies else {}
    last_reply = tp.replies[-1].info if tp.replies else {}
    cwd = _str(_dict(first_reply.get("path")).get("cwd")) or session_dir
    user_model = _dict(user.get("model"))
    model = _model_name(last_reply.get("providerID"), last_reply.get("modelID")) or _model_name(
        user_model.get("providerID"), user_model.get("modelID")
    )
    agent = _str(last_reply.get("agent")) or _str(last_reply.get("mode")) or _str(user.get("agent"))
    start = _dict(user.get("time")).get("created")
    ends = [
        end
        for r in tp.replies
        if isinstance(end := _dict(r.info.get("time")).get("completed"), (int, float))
    ]
    duration = (max(ends) - start) / 1000 if ends and isinstance(start, (int, float)) else None
    task = _task_text(tp.user_parts)
    tokens_in = tin + cread
    metrics = Metrics(
        filesModified=len(modified),
        timeToCompletion=duration,
        toolCallCount=len(actions),
        tokenCost=TokenCost(input=tin, output=tout, cache=TokenCache(read=cread, write=cwrite)),
        cacheHitRate=(cread / tokens_in) if tokens_in else None,
        reasoningTokens=treason,
    )
    outcome = Outcome(
        success=success, taskCompleted=completed, metrics=metrics, failureReasons=failures
    )
    turn_extra: dict[str, Any] = {"cost": cost, "userMessage": _str(user.get("id"))}
    if ignored:
        turn_extra["ignoredParts"] = dict(sorted(ignored.items()))
    if tp.continued:
        turn_extra["continuedAfterCompaction"] = tp.continued
    turn = Turn(
        input=TurnInput(
            task=task,
            context=Context(workingDirectory=cwd, relevantFiles=_attached_files(tp.user_parts)),
            conversationHistory=list(history),
        ),
        actions=actions,
        output=TurnOutput(response=response, finalMessage=final_message),
        outcome=outcome,
        agent=AgentInfo(name=agent, model=model, promptTokens=int(tin), completionTokens=int(tout)),
        metadata=TurnMetadata(
            timestamp=iso_ms(start),
            sessionId=sid,
            duration=duration,
            messageCount=1 + len(tp.replies),
        ),
        **turn_extra,
    )
    return turn, response


def _unknown_part(part: dict[str, Any], sid: str, ctx: _Context, problems: list[Problem]) -> None:
    ptype = str(part.get("type"))
    if ptype in ctx.unknown_part_types:
        return
    ctx.unknown_part_types.add(ptype)
    problems.append(
        ctx.problem(
            f"session {sid}: part {part.get('id', '?')}",
            f"unknown part type {ptype!r} (written by a newer OpenCode?); parts of this type are "
            "ignored",
            "warning",
        )
    )


# ---------------------------------------------------------------------------------------------
# Sessions


def build_session(raw: RawSession, ctx: _Context) -> tuple[SessionLog, list[Problem]]:
    """OpenCode's session, messages and parts -> one `SessionLog`, one turn per user request."""
    info = raw.info
    sid = str(info.get("id"))
    groups, problems = _group_turns(raw, ctx, sid)
    history: list[ConversationMessage] = []
    turns: list[Turn] = []
    session_dir = _str(info.get("directory"))
    for index, tp in enumerate(groups):
        turn, response = _build_turn(tp, index, history, sid, session_dir, ctx, problems)
        turns.append(turn)
        history.append(
            ConversationMessage(
                role="user",
                content=turn.input.task,
                timestamp=turn.metadata.timestamp if turn.metadata else None,
            )
        )
        if response:
            history.append(ConversationMessage(role="assistant", content=response))

    time = _dict(info.get("time"))
    model = _dict(info.get("model"))
    si, so, sr, scr, scw = _tokens(info)
    children = [
        c
        for t in turns
        for a in t.actions
        if isinstance(c := (a.model_extra or {}).get("childSession"), str)
    ]
    extra: dict[str, Any] = {
        "sourceFormat": ctx.source_format,
        "opencodeVersion": _str(info.get("version")),
        "parentSession": _str(info.get("parentID")),
        "childSessions": children or None,
        "projectID": _str(info.get("projectID")),
        "directory": session_dir,
        "title": _str(info.get("title")),
        "slug": _str(info.get("slug")),
        "agent": _str(info.get("agent")),
        "model": _model_name(model.get("providerID"), model.get("id")),
        "cost": _num(info.get("cost")),
        "tokens": {
            "input": si,
            "output": so,
            "reasoning": sr,
            "cache": {"read": scr, "write": scw},
        },
        "summary": info.get("summary") if isinstance(info.get("summary"), dict) else None,
        "timeCreated": iso_ms(time.get("created")),
        "timeUpdated": iso_ms(time.get("updated")),
        "timeUpdatedMs": time.get("updated") if isinstance(time.get("updated"), int) else None,
    }
    if isinstance(info.get("dbColumns"), dict):
        extra["dbColumns"] = info["dbColumns"]
    extra = {k: v for k, v in extra.items() if v is not None}
    ok = [t.outcome.success for t in turns if t.outcome is not None]
    tool_calls = sum(len(t.actions) for t in turns)
    session_outcome = Outcome(
        success=all(ok) if ok else None,
        taskCompleted=turns[-1].outcome.taskCompleted if turns and turns[-1].outcome else None,
        metrics=Metrics(
            toolCallCount=tool_calls,
            tokenCost=TokenCost(
                input=sum(t.agent.promptTokens or 0 for t in turns if t.agent),
                output=sum(t.agent.completionTokens or 0 for t in turns if t.agent),
            ),
        ),
    )
    log = SessionLog(
        session=sid,
        # The session's own last update, not the time of reading: the same session always
        # gives the same bytes.
        generated=iso_ms(time.get("updated")),
        totalExamples=len(turns),
        outcome=session_outcome,
        examples=turns,
        **extra,
    )
    return log, problems


def _check_info(value: Any, where: str, ctx: _Context) -> Problem | None:
    if not isinstance(value, dict):
        return ctx.problem(where, "session info must be an object")
    if not isinstance(value.get("id"), str) or not value["id"]:
        return ctx.problem(where, "session info has no 'id'")
    return None


def _finish(
    raw: RawSession, ctx: _Context, path: Path, content_key: str | None
) -> Iterator[ReadItem]:
    try:
        log, problems = build_session(raw, ctx)
    except (ValueError, TypeError, OverflowError) as e:  # ValidationError is a ValueError
        first = str(e).splitlines()[0]
        yield ctx.problem(f"session {raw.info.get('id')}", f"cannot be mapped ({first}); skipped")
        return
    yield from problems
    yield SessionRead(log, path, ctx.source_format, content_key)


# ---------------------------------------------------------------------------------------------
# `opencode export` files


def read_export_value(path: Path, value: Any, content_key: str) -> Iterator[ReadItem]:
    """An already-parsed `opencode export` file: {"info": {...}, "messages": [{info, parts}]}."""
    ctx = _Context(str(path), FORMAT_EXPORT)
    info = value.get("info")
    bad = _check_info(info, "info", ctx)
    if bad:
        yield bad
        return
    messages = value.get("messages")
    if not isinstance(messages, list):
        yield ctx.problem("messages", "must be an array of {info, parts}")
        return
    out: list[RawMessage] = []
    for i, entry in enumerate(messages):
        minfo = entry.get("info") if isinstance(entry, dict) else None
        parts = entry.get("parts", []) if isinstance(entry, dict) else None
        if not isinstance(minfo, dict) or not isinstance(parts, list):
            yield ctx.problem(
                f"messages[{i}]",
                "not a message ({info, parts}); the session is "
                "skipped, since its turns cannot be rebuilt without it",
            )
            return
        good = [p for p in parts if isinstance(p, dict)]
        damaged = [
            f"messages[{i}].parts[{j}] is not an object"
            for j, p in enumerate(parts)
            if not isinstance(p, dict)
        ]
        for why in damaged:
            yield ctx.problem(why, "not a part object; skipped")
        out.append(RawMessage(minfo, good, damaged))
    # No content key: another copy of this session (a later export, the database, a collected
    # file) is the same session seen at another time, not a conflict, so a repeat is a warning.
    yield from _finish(RawSession(info, out), ctx, path, None)


VALUE_READERS[FORMAT_EXPORT] = read_export_value


# ---------------------------------------------------------------------------------------------
# Session stores: the SQLite database and the legacy JSON tree


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

    def take_problems(self) -> list[Problem]:
        out, self.problems = self.problems, []
        return out

    def headers(self) -> list[SessionHeader]:
        raise NotImplementedError

    def read(self, header: SessionHeader) -> Iterator[ReadItem]:
        raise NotImplementedError

    def close(self) -> None:
        return None

    def __enter__(self) -> OpenCodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- SQLite ----------------------------------------------------------------------------------

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
    for col, key in (
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
        if row.get(col) is not None:
            info[key] = row[col]
    if row.get("model") is not None:
        info["model"] = _json_column(row["model"])
    summary = {k: row.get(f"summary_{k}") for k in ("additions", "deletions", "files")}
    if any(v is not None for v in summary.values()):
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
    for col in ("metadata", "permission", "revert"):
        if row.get(col) is not None:
            info[col] = _json_column(row[col])
    time = {"created": row.get("time_created"), "updated": row.get("time_updated")}
    for col, key in (("time_compacting", "compacting"), ("time_archived", "archived")):
        if row.get(col) is not None:
            time[key] = row[col]
    info["time"] = time
    unknown = {k: _json_column(v) for k, v in row.items() if k not in _SESSION_COLUMNS}
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
        import sqlite3

        self.path = path
        self.context = _Context(str(path), FORMAT_DB)
        self.truncated = False
        busy_timeout = DEFAULT_BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        self.timeout = busy_timeout
        self.problems: list[Problem] = []
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            self.conn: sqlite3.Connection = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(describe_db_error(path, e, busy_timeout)) from None
        try:
            self._columns = self._read_layout()
        except sqlite3.DatabaseError as e:
            state = _db_file_state(path)
            if not (state and "truncated" in state):
                self.conn.close()
                raise StoreError(describe_db_error(path, e, busy_timeout)) from None
            # SQLite refuses a file shorter than its header says unless told to trust the
            # file's size; then what is still there can be read. (On a read-only connection
            # this flag writes nothing.)
            self.truncated = True
            self.problems.append(
                Problem(
                    str(path),
                    "",
                    f"{state}: reading what is left; sessions stored in the missing "
                    "part are skipped",
                )
            )
            try:
                self.conn.execute("PRAGMA writable_schema = ON")
                self._columns = self._read_layout()
            except sqlite3.Error as e2:
                self.conn.close()
                raise StoreError(describe_db_error(path, e2, busy_timeout)) from None
        for table, cols in self._columns.items():
            if not cols:
                self.conn.close()
                state = _db_file_state(path)
                if state:  # SQLite sees a file cut inside its first page as an empty database
                    raise StoreError(f"{state}; nothing can be read from it")
                raise StoreError(f"not an OpenCode database: it has no '{table}' table")
            missing = [c for c in _REQUIRED[table] if c not in cols]
            if missing:
                self.conn.close()
                raise StoreError(
                    f"table '{table}' has no column {', '.join(missing)}: not a "
                    "database layout this version of ocdspy can read"
                )
        unknown = [c for c in self._columns["session"] if c not in _SESSION_COLUMNS]
        if unknown:
            self.problems.append(
                Problem(
                    str(path),
                    "table session",
                    f"columns unknown to this version of ocdspy ({', '.join(unknown)}), probably "
                    "from a newer OpenCode; their values are kept as `dbColumns`",
                    "warning",
                )
            )
        self._session_select = ", ".join(
            f'"{c}"' for c in self._columns["session"] if c not in _SKIPPED_SESSION_COLUMNS
        )

    def _read_layout(self) -> dict[str, list[str]]:
        return {t: self._table_columns(t) for t in ("session", "message", "part")}

    def _table_columns(self, table: str) -> list[str]:
        return [r[1] for r in self.conn.execute(f'PRAGMA table_info("{table}")')]

    def close(self) -> None:
        self.conn.close()

    def headers(self) -> list[SessionHeader]:
        import sqlite3

        cols = self._columns["session"]
        pick = ", ".join(
            c if c in cols else "NULL"
            for c in ("id", "parent_id", "directory", "title", "time_created", "time_updated")
        )
        try:
            rows = self.conn.execute(f"SELECT {pick} FROM session").fetchall()
        except sqlite3.Error as e:
            raise StoreError(describe_db_error(self.path, e, self.timeout)) from None
        out = [
            SessionHeader(str(r[0]), r[1], r[2], r[3], _int(r[4]), _int(r[5]) or _int(r[4]))
            for r in rows
            if r[0] is not None
        ]
        out.sort(key=lambda h: (h.time_created, h.id))
        return out

    def read(self, header: SessionHeader) -> Iterator[ReadItem]:
        """One session; raises sqlite3.Error when the database fails under us."""
        ctx = self.context
        order = "time_created, id" if "time_created" in self._columns["message"] else "id"
        self.conn.execute("BEGIN")
        try:
            cur = self.conn.execute(
                f"SELECT {self._session_select} FROM session WHERE id = ?", (header.id,)
            )
            names = [d[0] for d in cur.description]
            row = cur.fetchone()
            if row is None:  # deleted since the list was read
                return
            messages = self.conn.execute(
                f"SELECT id, data FROM message WHERE session_id = ? ORDER BY {order}", (header.id,)
            ).fetchall()
            parts = self.conn.execute(
                "SELECT id, message_id, data FROM part WHERE session_id = ? "
                "ORDER BY message_id, id",
                (header.id,),
            ).fetchall()
        finally:
            self.conn.execute("COMMIT")
        info = session_info_from_row(dict(zip(names, row, strict=True)))
        sid = header.id
        by_message: dict[str, list[tuple[str, Any]]] = {}
        for pid, mid, data in parts:
            by_message.setdefault(mid, []).append((pid, data))
        raw_messages: list[RawMessage] = []
        for mid, data in messages:
            minfo = _loads(data)
            if not isinstance(minfo, dict):
                yield ctx.problem(
                    f"session {sid}: message {mid}",
                    "unreadable record (invalid JSON in `data`); the session is "
                    "skipped, since its turns cannot be rebuilt without it",
                )
                return
            minfo["id"], minfo["sessionID"] = mid, sid
            good, damaged = [], []
            for pid, pdata in by_message.pop(mid, ()):
                p = _loads(pdata)
                if not isinstance(p, dict):
                    damaged.append(f"part {pid} unreadable")
                    yield ctx.problem(
                        f"session {sid}: part {pid}",
                        "unreadable record (invalid JSON in `data`); part skipped "
                        "and its turn marked unsuccessful",
                    )
                    continue
                p["id"], p["sessionID"], p["messageID"] = pid, sid, mid
                good.append(p)
            raw_messages.append(RawMessage(minfo, good, damaged))
        yield from _finish(RawSession(info, raw_messages), ctx, self.path, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _loads(data: Any) -> Any:
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    if not isinstance(data, str):
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


# --- Legacy JSON tree ------------------------------------------------------------------------


class OpenCodeStorage(OpenCodeStore):
    """The pre-1.2 `storage/` tree: session/<projectID>/<id>.json, message/<sessionID>/<id>.json,
    part/<messageID>/<id>.json. Every file carries its own ids; file names sort in id order."""

    format = FORMAT_STORAGE

    def __init__(self, path: Path) -> None:
        self.path = path
        self.context = _Context(str(path), FORMAT_STORAGE)
        self.problems: list[Problem] = []
        self._files: dict[str, Path] = {}
        if not (path / "session").is_dir():
            raise StoreError("not an OpenCode storage directory: it has no session/ folder")

    def _rel(self, f: Path) -> str:
        """Problems name the tree as the input and the broken file inside it, so `validate`
        counts them against the tree."""
        return f.relative_to(self.path).as_posix()

    def _load(self, f: Path) -> tuple[Any, str | None]:
        try:
            data = f.read_bytes()
        except OSError as e:
            return None, f"cannot read: {e.strerror or e}"
        value = _loads(data)
        if value is None:
            return None, "invalid JSON" if data.strip() else "file is empty"
        return value, None

    def headers(self) -> list[SessionHeader]:
        out = []
        for f in sorted((self.path / "session").glob("*/*.json")):
            value, err = self._load(f)
            if err or not isinstance(value, dict) or not _str(value.get("id")):
                self.problems.append(
                    Problem(
                        str(self.path),
                        self._rel(f),
                        f"{err or 'not a session info object'}; skipped",
                    )
                )
                continue
            time = _dict(value.get("time"))
            created = _int(time.get("created"))
            h = SessionHeader(
                value["id"],
                _str(value.get("parentID")),
                _str(value.get("directory")),
                _str(value.get("title")),
                created,
                _int(time.get("updated")) or created,
            )
            self._files[h.id] = f
            out.append(h)
        out.sort(key=lambda h: (h.time_created, h.id))
        return out

    def read(self, header: SessionHeader) -> Iterator[ReadItem]:
        ctx = self.context
        f = self._files.get(header.id)
        info, err = self._load(f) if f else (None, "session file vanished")
        if not isinstance(info, dict):
            yield ctx.problem(f"session {header.id}", err or "not a session info object")
            return
        raw_messages: list[RawMessage] = []
        mdir = self.path / "message" / header.id
        for mf in sorted(mdir.glob("*.json")) if mdir.is_dir() else []:
            minfo, err = self._load(mf)
            if not isinstance(minfo, dict) or not _str(minfo.get("id")):
                yield Problem(
                    str(self.path),
                    self._rel(mf),
                    f"{err or 'not a message object'}; session "
                    f"{header.id} is skipped, since its turns cannot be rebuilt "
                    "without it",
                )
                return
            good, damaged = [], []
            pdir = self.path / "part" / minfo["id"]
            for pf in sorted(pdir.glob("*.json")) if pdir.is_dir() else []:
                p, err = self._load(pf)
                if not isinstance(p, dict):
                    damaged.append(f"part {pf.stem} unreadable")
                    yield Problem(
                        str(self.path),
                        self._rel(pf),
                        f"{err or 'not a part object'}; part skipped "
                        "and its turn marked unsuccessful",
                    )
                    continue
                good.append(p)
            raw_messages.append(RawMessage(minfo, good, damaged))
        yield from _finish(RawSession(info, raw_messages), ctx, self.path, None)


# ---------------------------------------------------------------------------------------------
# Readers for validate / convert


@register_reader(FORMAT_DB)
def read_opencode_db(path: Path) -> Iterator[ReadItem]:
    try:
        store = OpenCodeDB(path)
    except StoreError as e:
        yield Problem(str(path), "", str(e))
        return
    with store:
        yield from _read_all(store)


@register_reader(FORMAT_STORAGE)
def read_opencode_storage(path: Path) -> Iterator[ReadItem]:
    try:
        store = OpenCodeStorage(path)
    except StoreError as e:
        yield Problem(str(path), "", str(e))
        return
    yield from _read_all(store)


def _read_all(store: OpenCodeStore) -> Iterator[ReadItem]:
    import sqlite3

    try:
        headers = store.headers()
    except StoreError as e:
        yield from store.take_problems()
        yield Problem(str(store.path), "", str(e))
        return
    except sqlite3.Error as e:
        yield Problem(str(store.path), "", describe_db_error(store.path, e, DEFAULT_BUSY_TIMEOUT))
        return
    yield from store.take_problems()
    yield from read_sessions(store, headers)


def read_sessions(store: OpenCodeStore, headers: list[SessionHeader]) -> Iterator[ReadItem]:
    """Read the given sessions, turning database failures into problems: a session that fails
    is skipped; a locked database stops the read with one message saying how much is left."""
    import sqlite3

    file = str(store.path)
    failed = 0
    for pos, header in enumerate(headers):
        try:
            yield from store.read(header)
        except sqlite3.Error as e:
            if getattr(store, "truncated", False):
                message = "its records lie past the end of the truncated file"
            else:
                message = describe_db_error(
                    store.path, e, getattr(store, "timeout", DEFAULT_BUSY_TIMEOUT)
                )
            if "locked" in message:
                yield Problem(
                    file,
                    f"session {header.id}",
                    f"{message}; {len(headers) - pos} sessions were not read",
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
