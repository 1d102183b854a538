"""The one mapping from OpenCode's objects to the session-log model: a `RawSession` (whichever
reader built it) -> a `SessionLog`, one turn per user request.

The rules (what a turn is, when an action or a turn failed) are documented for users in
docs/opencode-sources.md; keep the two in step. `MAPPING_VERSION` changes whenever a rule
changes, so `collect` knows its earlier output is stale.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from ocdspy.sessions.opencode.raw import (
    RawMessage,
    RawSession,
    ReadContext,
    as_dict,
    as_number,
    as_text,
    iso_ms,
)
from ocdspy.sessions.read import Problem, ReadItem, SessionRead

MAPPING_VERSION = 1

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


@dataclass
class _SessionScope:
    """One session being mapped: its reader's context, its id and the problems found so far."""

    context: ReadContext
    session_id: str
    problems: list[Problem] = field(default_factory=list)

    def warn(self, where: str, message: str) -> None:
        self.problems.append(
            self.context.problem(f"session {self.session_id}: {where}", message, "warning")
        )


@dataclass(frozen=True)
class _Tokens:
    input: float = 0.0
    output: float = 0.0
    reasoning: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0

    @classmethod
    def of(cls, info: dict[str, Any]) -> _Tokens:
        """The `tokens` of a message or session info; what is missing or not a number is 0."""
        tokens = as_dict(info.get("tokens"))
        cache = as_dict(tokens.get("cache"))
        return cls(
            as_number(tokens.get("input")),
            as_number(tokens.get("output")),
            as_number(tokens.get("reasoning")),
            as_number(cache.get("read")),
            as_number(cache.get("write")),
        )

    def __add__(self, other: _Tokens) -> _Tokens:
        return _Tokens(
            self.input + other.input,
            self.output + other.output,
            self.reasoning + other.reasoning,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
        )


def _model_name(provider: Any, model: Any) -> str | None:
    if as_text(model) is None:
        return None
    return f"{provider}/{model}" if as_text(provider) else str(model)


def _texts(parts: list[dict[str, Any]], *, synthetic: bool = False) -> list[str]:
    """The text of `text` parts; synthetic ones (added by OpenCode, not typed) only on request.
    Parts marked `ignored` are never taken."""
    texts = []
    for part in parts:
        if part.get("type") != "text" or part.get("ignored"):
            continue
        if bool(part.get("synthetic")) != synthetic:
            continue
        text = part.get("text")
        if isinstance(text, str) and text.strip():
            texts.append(text.strip())
    return texts


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
    state = as_dict(part.get("state"))
    raw_input = state.get("input")
    args = (
        raw_input
        if isinstance(raw_input, dict)
        else ({} if raw_input is None else {"input": raw_input})
    )
    extra: dict[str, Any] = {"status": state.get("status")}
    result, success = _call_outcome(part, state, extra)
    if as_text(state.get("title")):
        extra["title"] = state["title"]
    times = as_dict(state.get("time"))
    start, end = times.get("start"), times.get("end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        extra["durationMs"] = end - start
    return Action(
        step=step,
        tool=str(part.get("tool") or "unknown"),
        callID=as_text(part.get("callID")),
        args=args,
        result=result,
        success=success,
        timestamp=iso_ms(start),
        **extra,
    )


def _call_outcome(
    part: dict[str, Any], state: dict[str, Any], extra: dict[str, Any]
) -> tuple[Any, bool | None]:
    """What a tool call returned and whether it succeeded (None: unknown state); how it failed
    and what its metadata tells goes into `extra`."""
    status = state.get("status")
    if status == "completed":
        return state.get("output"), _completed_call(part, as_dict(state.get("metadata")), extra)
    if status == "error":
        error = state.get("error")
        extra["failureKind"] = _error_kind(error)
        return error, False
    if status in ("pending", "running"):
        extra["failureKind"] = "interrupted"
        return None, False
    return None, None


def _completed_call(part: dict[str, Any], metadata: dict[str, Any], extra: dict[str, Any]) -> bool:
    exit_code = metadata.get("exit")
    success = True
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        extra["exitCode"] = exit_code
        if exit_code != 0:
            success = False
            extra["failureKind"] = "exit-code"
    if metadata.get("truncated") is True:
        extra["outputTruncated"] = True
    child = as_text(metadata.get("sessionId"))
    if part.get("tool") == "task" and child:
        extra["childSession"] = child
    return success


def _error_kind(error: Any) -> str:
    text = error if isinstance(error, str) else json.dumps(error, default=str)
    if _PERMISSION_REFUSED.search(text):
        return "permission-denied"
    if _ABORTED.search(text):
        return "aborted"
    return "tool-error"


# ---------------------------------------------------------------------------------------------
# Grouping messages into turns


@dataclass
class _TurnMessages:
    """One user request and the assistant messages that answer it."""

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
    for part in parts:
        part_type = part.get("type")
        if part_type == "text" and not part.get("synthetic") and not part.get("ignored"):
            return False
        if part_type in ("file", "subtask", "agent"):
            return False
    return any(part.get("type") == "compaction" or part.get("synthetic") for part in parts)


def _group_turns(raw: RawSession, scope: _SessionScope) -> list[_TurnMessages]:
    turns: list[_TurnMessages] = []
    by_user: dict[str, _TurnMessages] = {}
    for message in raw.messages:
        info = message.info
        role = info.get("role")
        message_id = str(info.get("id") or "?")
        if role == "user":
            if turns and _is_automatic(message.parts):
                # Not a new request: what follows still answers the previous one.
                turns[-1].continued += 1
                turns[-1].damaged.extend(message.damaged)
                by_user[message_id] = turns[-1]
                continue
            turn = _TurnMessages(info, message.parts, damaged=list(message.damaged))
            turns.append(turn)
            by_user[message_id] = turn
        elif role == "assistant":
            parent = info.get("parentID")
            target = by_user.get(parent) if isinstance(parent, str) else None
            if target is None:
                if not turns:
                    scope.warn(
                        f"message {message_id}",
                        "assistant message before any user message; ignored",
                    )
                    continue
                target = turns[-1]
            if info.get("summary") is True:
                # A compaction summary: OpenCode's own bookkeeping, not an answer to the user.
                target.continued += 1
                continue
            target.replies.append(message)
            target.damaged.extend(message.damaged)
        else:
            scope.warn(f"message {message_id}", f"unknown message role {role!r}; message ignored")
    return turns


# ---------------------------------------------------------------------------------------------
# Turns


@dataclass
class _Replies:
    """What the assistant's replies to one request said, did and cost."""

    actions: list[Action] = field(default_factory=list)
    ignored_parts: Counter[str] = field(default_factory=Counter)
    modified_files: list[str] = field(default_factory=list)
    response: str = ""
    final_message: str | None = None
    tokens: _Tokens = field(default_factory=_Tokens)
    cost: float = 0.0
    errors: list[str] = field(default_factory=list)
    # The worktree's snapshot tree before the first step, and the files OpenCode's `patch`
    # parts name: what `replay` restores the turn from and scores its outcome against.
    snapshot: str | None = None
    patched_files: list[str] = field(default_factory=list)

    def file_modified(self, path: str) -> None:
        if path not in self.modified_files:
            self.modified_files.append(path)


def _build_turn(
    messages: _TurnMessages,
    history: list[ConversationMessage],
    session_dir: str | None,
    scope: _SessionScope,
) -> Turn:
    replies = _read_replies(messages.replies, scope)
    for part in messages.user_parts:
        if part.get("type") not in KNOWN_PART_TYPES:
            _unknown_part(part, scope)
    completed, stop_failures = _how_it_stopped(messages.replies)
    failures = [
        *replies.errors,
        *stop_failures,
        *_unrecovered_failures(replies.actions),
        *(f"incomplete record: {why}" for why in messages.damaged),
    ]
    start = as_dict(messages.user.get("time")).get("created")
    duration = _duration(start, messages.replies)
    outcome = Outcome(
        success=not failures,
        taskCompleted=completed,
        metrics=_turn_metrics(replies, duration),
        failureReasons=failures,
    )
    return Turn(
        input=_turn_input(messages, history, session_dir),
        actions=replies.actions,
        output=TurnOutput(response=replies.response, finalMessage=replies.final_message),
        outcome=outcome,
        agent=_agent_info(messages, replies.tokens),
        metadata=TurnMetadata(
            timestamp=iso_ms(start),
            sessionId=scope.session_id,
            duration=duration,
            messageCount=1 + len(messages.replies),
        ),
        **_turn_extra(messages, replies),
    )


def _read_replies(replies: list[RawMessage], scope: _SessionScope) -> _Replies:
    seen = _Replies()
    for reply in replies:
        texts = _texts(reply.parts)
        if texts:
            seen.response, seen.final_message = "\n\n".join(texts), as_text(reply.info.get("id"))
        seen.tokens += _Tokens.of(reply.info)
        seen.cost += as_number(reply.info.get("cost"))
        for part in reply.parts:
            _read_part(part, seen, scope)
        error = reply.info.get("error")
        if error:
            seen.errors.append(_assistant_error(error, str(reply.info.get("id") or "?")))
    return seen


def _read_part(part: dict[str, Any], seen: _Replies, scope: _SessionScope) -> None:
    part_type = part.get("type")
    if part_type == "tool":
        _read_tool_call(part, seen, scope)
    elif part_type == "patch":
        seen.ignored_parts[part_type] += 1
        for path in part.get("files") or []:
            if isinstance(path, str):
                seen.file_modified(path)
                if path not in seen.patched_files:
                    seen.patched_files.append(path)
    elif part_type == "step-start" and seen.snapshot is None and as_text(part.get("snapshot")):
        seen.ignored_parts[part_type] += 1
        seen.snapshot = str(part["snapshot"])
    elif part_type in KNOWN_PART_TYPES:
        if part_type != "text":
            seen.ignored_parts[str(part_type)] += 1
    else:
        seen.ignored_parts[str(part_type)] += 1
        _unknown_part(part, scope)


def _read_tool_call(part: dict[str, Any], seen: _Replies, scope: _SessionScope) -> None:
    action = tool_action(part, len(seen.actions) + 1)
    extra = action.model_extra or {}
    where = f"part {part.get('id', '?')}"
    status = extra.get("status")
    if extra.get("failureKind") == "interrupted":
        scope.warn(
            where,
            f"tool call '{action.tool}' is still '{status}': the session was interrupted; "
            "the call is kept as a failed action",
        )
    elif action.success is None and str(status) not in scope.context.unknown_statuses:
        scope.context.unknown_statuses.add(str(status))
        scope.warn(
            where, f"unknown tool state {status!r}; the call is kept with an unknown outcome"
        )
    if action.success and action.tool in _FILE_TOOLS:
        path = action.args.get("filePath")
        if isinstance(path, str):
            seen.file_modified(path)
    seen.actions.append(action)


def _unknown_part(part: dict[str, Any], scope: _SessionScope) -> None:
    part_type = str(part.get("type"))
    if part_type in scope.context.unknown_part_types:
        return
    scope.context.unknown_part_types.add(part_type)
    scope.warn(
        f"part {part.get('id', '?')}",
        f"unknown part type {part_type!r} (written by a newer OpenCode?); parts of this type are "
        "ignored",
    )


def _assistant_error(error: Any, message_id: str) -> str:
    fields = as_dict(error)
    name = as_text(fields.get("name")) or "error"
    detail = as_text(as_dict(fields.get("data")).get("message"))
    return (
        f"assistant error {name}" + (f": {detail}" if detail else "") + f" (message {message_id})"
    )


def _how_it_stopped(replies: list[RawMessage]) -> tuple[bool, list[str]]:
    """Did the agent finish the request, and if not, why: from each step's finish reason."""
    if not replies:
        return False, ["no assistant reply"]
    completed = not any(reply.info.get("error") for reply in replies)
    failures = []
    last = len(replies) - 1
    for position, reply in enumerate(replies):
        finish = reply.info.get("finish")
        if reply.info.get("error"):
            continue  # already a failure; its finish reason adds nothing
        if position == last and finish != "stop":
            completed = False
            failures.append(
                f"last step finished with {finish!r} instead of 'stop'"
                if finish
                else "last step has no finish reason (interrupted)"
            )
        elif position != last and finish not in (None, "stop", *_CONTINUING_FINISH):
            completed = False
            failures.append(f"a step finished with {finish!r}")
    return completed, failures


def _unrecovered_failures(actions: list[Action]) -> list[str]:
    """A failed call counts against the turn unless a later call of the same tool succeeded."""
    failures = []
    for position, action in enumerate(actions):
        if action.success is not False:
            continue
        recovered = any(
            later.tool == action.tool and later.success for later in actions[position + 1 :]
        )
        if not recovered:
            kind = (action.model_extra or {}).get("failureKind", "failed")
            failures.append(f"tool {action.tool} failed ({kind}) at step {action.step}")
    return failures


def _duration(start: Any, replies: list[RawMessage]) -> float | None:
    """Seconds from the request to the last reply's completion."""
    ends = [
        end
        for reply in replies
        if isinstance(end := as_dict(reply.info.get("time")).get("completed"), (int, float))
    ]
    return (max(ends) - start) / 1000 if ends and isinstance(start, (int, float)) else None


def _turn_metrics(replies: _Replies, duration: float | None) -> Metrics:
    tokens = replies.tokens
    tokens_in = tokens.input + tokens.cache_read
    return Metrics(
        filesModified=len(replies.modified_files),
        timeToCompletion=duration,
        toolCallCount=len(replies.actions),
        tokenCost=TokenCost(
            input=tokens.input,
            output=tokens.output,
            cache=TokenCache(read=tokens.cache_read, write=tokens.cache_write),
        ),
        cacheHitRate=(tokens.cache_read / tokens_in) if tokens_in else None,
        reasoningTokens=tokens.reasoning,
    )


def _task_text(parts: list[dict[str, Any]]) -> str:
    typed = _texts(parts)
    if typed:
        return "\n\n".join(typed)
    prompts = [
        part["prompt"].strip()
        for part in parts
        if part.get("type") == "subtask" and isinstance(part.get("prompt"), str)
    ]
    if prompts:
        return "\n\n".join(prompts)
    return "\n\n".join(_texts(parts, synthetic=True))


def _attached_files(parts: list[dict[str, Any]]) -> list[str]:
    files = []
    for part in parts:
        if part.get("type") != "file":
            continue
        source = as_dict(part.get("source"))
        name = as_text(source.get("path")) or as_text(part.get("filename"))
        url = as_text(part.get("url"))
        if name is None and url and url.startswith("file://"):
            name = url[len("file://") :]
        if name and name not in files:
            files.append(name)
    return files


def _turn_input(
    messages: _TurnMessages, history: list[ConversationMessage], session_dir: str | None
) -> TurnInput:
    first_reply = messages.replies[0].info if messages.replies else {}
    cwd = as_text(as_dict(first_reply.get("path")).get("cwd")) or session_dir
    return TurnInput(
        task=_task_text(messages.user_parts),
        context=Context(workingDirectory=cwd, relevantFiles=_attached_files(messages.user_parts)),
        conversationHistory=list(history),
    )


def _agent_info(messages: _TurnMessages, tokens: _Tokens) -> AgentInfo:
    """The agent and model of the last reply (else of the request), with the turn's tokens."""
    user = messages.user
    last_reply = messages.replies[-1].info if messages.replies else {}
    user_model = as_dict(user.get("model"))
    model = _model_name(last_reply.get("providerID"), last_reply.get("modelID")) or _model_name(
        user_model.get("providerID"), user_model.get("modelID")
    )
    agent = (
        as_text(last_reply.get("agent"))
        or as_text(last_reply.get("mode"))
        or as_text(user.get("agent"))
    )
    return AgentInfo(
        name=agent,
        model=model,
        promptTokens=int(tokens.input),
        completionTokens=int(tokens.output),
    )


def _turn_extra(messages: _TurnMessages, replies: _Replies) -> dict[str, Any]:
    extra: dict[str, Any] = {"cost": replies.cost, "userMessage": as_text(messages.user.get("id"))}
    if replies.ignored_parts:
        extra["ignoredParts"] = dict(sorted(replies.ignored_parts.items()))
    if messages.continued:
        extra["continuedAfterCompaction"] = messages.continued
    if replies.snapshot:
        extra["snapshot"] = replies.snapshot
    if replies.patched_files:
        extra["patchedFiles"] = replies.patched_files
    return extra


# ---------------------------------------------------------------------------------------------
# Sessions


def build_session(raw: RawSession, context: ReadContext) -> tuple[SessionLog, list[Problem]]:
    """OpenCode's session, messages and parts -> one `SessionLog`, one turn per user request."""
    info = raw.info
    scope = _SessionScope(context, str(info.get("id")))
    turns = _build_turns(_group_turns(raw, scope), as_text(info.get("directory")), scope)
    extra = _session_extra(info, turns, context)
    outcome = _session_outcome(turns)
    log = SessionLog(
        session=scope.session_id,
        # The session's own last update, not the time of reading: the same session always
        # gives the same bytes.
        generated=iso_ms(as_dict(info.get("time")).get("updated")),
        totalExamples=len(turns),
        outcome=outcome,
        examples=turns,
        **extra,
    )
    return log, scope.problems


def _build_turns(
    groups: list[_TurnMessages], session_dir: str | None, scope: _SessionScope
) -> list[Turn]:
    """Each turn sees the conversation before it: every earlier request and its response."""
    history: list[ConversationMessage] = []
    turns: list[Turn] = []
    for messages in groups:
        turn = _build_turn(messages, history, session_dir, scope)
        turns.append(turn)
        history.append(
            ConversationMessage(
                role="user",
                content=turn.input.task,
                timestamp=turn.metadata.timestamp if turn.metadata else None,
            )
        )
        if turn.output.response:
            history.append(ConversationMessage(role="assistant", content=turn.output.response))
    return turns


def _session_extra(info: dict[str, Any], turns: list[Turn], context: ReadContext) -> dict[str, Any]:
    """The session's provenance and OpenCode's own totals, kept as extra fields."""
    time = as_dict(info.get("time"))
    model = as_dict(info.get("model"))
    tokens = _Tokens.of(info)
    children = [
        child
        for turn in turns
        for action in turn.actions
        if isinstance(child := (action.model_extra or {}).get("childSession"), str)
    ]
    extra: dict[str, Any] = {
        "sourceFormat": context.source_format,
        "opencodeVersion": as_text(info.get("version")),
        "parentSession": as_text(info.get("parentID")),
        "childSessions": children or None,
        "projectID": as_text(info.get("projectID")),
        "directory": as_text(info.get("directory")),
        "title": as_text(info.get("title")),
        "slug": as_text(info.get("slug")),
        "agent": as_text(info.get("agent")),
        "model": _model_name(model.get("providerID"), model.get("id")),
        "cost": as_number(info.get("cost")),
        "tokens": {
            "input": tokens.input,
            "output": tokens.output,
            "reasoning": tokens.reasoning,
            "cache": {"read": tokens.cache_read, "write": tokens.cache_write},
        },
        "summary": info.get("summary") if isinstance(info.get("summary"), dict) else None,
        "timeCreated": iso_ms(time.get("created")),
        "timeUpdated": iso_ms(time.get("updated")),
        "timeUpdatedMs": time.get("updated") if isinstance(time.get("updated"), int) else None,
    }
    if isinstance(info.get("dbColumns"), dict):
        extra["dbColumns"] = info["dbColumns"]
    return {key: value for key, value in extra.items() if value is not None}


def _session_outcome(turns: list[Turn]) -> Outcome:
    successes = [turn.outcome.success for turn in turns if turn.outcome is not None]
    last = turns[-1].outcome if turns else None
    return Outcome(
        success=all(successes) if successes else None,
        taskCompleted=last.taskCompleted if last else None,
        metrics=Metrics(
            toolCallCount=sum(len(turn.actions) for turn in turns),
            tokenCost=TokenCost(
                input=sum(turn.agent.promptTokens or 0 for turn in turns if turn.agent),
                output=sum(turn.agent.completionTokens or 0 for turn in turns if turn.agent),
            ),
        ),
    )


def map_session(raw: RawSession, context: ReadContext, path: Path) -> Iterator[ReadItem]:
    """A reader's last step: the mapped session and the problems found on the way, or one
    problem when the session cannot be mapped at all."""
    try:
        log, problems = build_session(raw, context)
    except (ValueError, TypeError, OverflowError) as e:  # ValidationError is a ValueError
        first = str(e).splitlines()[0]
        yield context.problem(
            f"session {raw.info.get('id')}", f"cannot be mapped ({first}); skipped"
        )
        return
    yield from problems
    # No content key: another copy of this session (a later export, the database, a collected
    # file) is the same session seen at another time, not a conflict, so a repeat is a warning.
    yield SessionRead(log, path, context.source_format, None)
