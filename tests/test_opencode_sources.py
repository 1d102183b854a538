"""Reading OpenCode's own sessions: `opencode export` files, opencode.db and the legacy storage/
tree. The mapping rules of docs/opencode-sources.md are tested one by one on small synthetic
exports; the readers on the real sessions recorded in tests/data/opencode/."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocdspy.convert import ConvertSettings, convert, load_examples, turn_to_example
from ocdspy.sessions.model import SessionLog
from ocdspy.sessions.opencode import database as opencode_database
from ocdspy.sessions.read import Problem, SessionRead, Source, discover, read_paths, read_source
from ocdspy.validate import validate

DATA = Path(__file__).parent / "data"
REC = DATA / "opencode"
SAMPLES = DATA / "opencode-samples"
SETTINGS = ConvertSettings(require_success=False, result_max_chars=2000, redact=True)


def scenario(name: str, *, child: bool = False) -> str:
    """Session id of a recorded scenario (tests/data/opencode/manifest.json)."""
    manifest = json.loads((REC / "manifest.json").read_text())
    for s in manifest["sessions"]:
        if s["scenario"] == name and bool(s["parent_id"]) == child:
            return s["id"]
    raise LookupError(name)


def read_all(*paths: Path) -> tuple[dict[str, SessionRead], list[Problem]]:
    sessions: dict[str, SessionRead] = {}
    problems: list[Problem] = []
    _, items = read_paths(list(paths))
    for item in items:
        if isinstance(item, Problem):
            problems.append(item)
        else:
            sessions[item.session.session_id or "?"] = item
    return sessions, problems


def examples(reads: dict[str, SessionRead]) -> dict[str, dict[str, Any]]:
    """Every turn as convert writes it, minus where it was read from."""
    out = {}
    for read in reads.values():
        for i in range(len(read.session.examples)):
            ex = turn_to_example(read, i, SETTINGS, Counter(), "-")
            out[ex.id] = ex.model_dump(exclude={"source", "source_format"})
    return out


# ---------------------------------------------------------------------------------------------
# Building small exports


class Builder:
    """Writes `opencode export`-shaped sessions with sequential ids and times."""

    def __init__(self, sid: str = "ses_test", **info: Any) -> None:
        self.sid = sid
        self.info = {
            "id": sid,
            "directory": "/work/proj",
            "version": "1.18.33",
            "time": {"created": 1_000, "updated": 9_000},
            **info,
        }
        self.messages: list[dict[str, Any]] = []
        self.n = 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n:04d}"

    def user(self, *parts: dict[str, Any] | str) -> str:
        mid = self._id("msg")
        body = [text(p) if isinstance(p, str) else p for p in parts]
        self.messages.append(
            {
                "info": {
                    "id": mid,
                    "sessionID": self.sid,
                    "role": "user",
                    "agent": "build",
                    "time": {"created": self.n * 1000},
                    "model": {"providerID": "prov", "modelID": "m1"},
                },
                "parts": [{**p, "id": self._id("prt")} for p in body],
            }
        )
        return mid

    def reply(
        self,
        parent: str,
        *parts: dict[str, Any] | str,
        finish: str | None = "stop",
        error: dict[str, Any] | None = None,
        tokens: dict[str, Any] | None = None,
        cost: float = 0.0,
        **info: Any,
    ) -> str:
        mid = self._id("msg")
        body = [text(p) if isinstance(p, str) else p for p in parts]
        minfo: dict[str, Any] = {
            "id": mid,
            "sessionID": self.sid,
            "role": "assistant",
            "parentID": parent,
            "agent": "build",
            "mode": "build",
            "providerID": "prov",
            "modelID": "m1",
            "path": {"cwd": "/work/proj", "root": "/work/proj"},
            "cost": cost,
            "tokens": tokens
            or {"input": 100, "output": 10, "reasoning": 0, "cache": {"read": 0, "write": 0}},
            "time": {"created": self.n * 1000, "completed": self.n * 1000 + 500},
            **info,
        }
        if finish is not None:
            minfo["finish"] = finish
        if error is not None:
            minfo["error"] = error
        self.messages.append({"info": minfo, "parts": [{**p, "id": self._id("prt")} for p in body]})
        return mid

    def value(self) -> dict[str, Any]:
        return {"info": self.info, "messages": self.messages}

    def read(self, tmp_path: Path) -> tuple[SessionLog, list[Problem]]:
        path = tmp_path / f"{self.sid}.json"
        path.write_text(json.dumps(self.value()))
        items = list(read_source(Source(path, "json")))
        logs = [i.session for i in items if isinstance(i, SessionRead)]
        assert len(logs) == 1, items
        assert all(i.format == "opencode-export" for i in items if isinstance(i, SessionRead))
        return logs[0], [i for i in items if isinstance(i, Problem)]


def text(t: str, **kw: Any) -> dict[str, Any]:
    return {"type": "text", "text": t, **kw}


def tool(
    name: str,
    status: str = "completed",
    *,
    output: Any = "ok",
    error: str | None = None,
    metadata: dict[str, Any] | None = None,
    **args: Any,
) -> dict[str, Any]:
    state: dict[str, Any] = {"status": status, "input": args, "time": {"start": 5_000}}
    if status == "completed":
        state.update(
            output=output, title=name, metadata=metadata or {}, time={"start": 5_000, "end": 5_250}
        )
    elif status == "error":
        state.update(error=error or "boom", time={"start": 5_000, "end": 5_100})
    return {"type": "tool", "tool": name, "callID": f"call_{name}", "state": state}


def outcome(log: SessionLog, turn: int = 0) -> tuple[bool | None, bool | None, list[str]]:
    o = log.examples[turn].outcome
    assert o is not None
    return o.success, o.taskCompleted, (o.model_extra or {}).get("failureReasons", [])


# ---------------------------------------------------------------------------------------------
# Turns, task, actions, response


def test_one_turn_per_user_message_with_its_replies(tmp_path: Path) -> None:
    b = Builder()
    u1 = b.user("fix the bug")
    b.reply(u1, "Let me look.", tool("read", filePath="/work/proj/a.py"), finish="tool-calls")
    b.reply(
        u1,
        tool("edit", filePath="/work/proj/a.py", oldString="a", newString="b"),
        finish="tool-calls",
    )
    b.reply(u1, "Fixed the bug in a.py.")
    u2 = b.user("thanks, now run the tests")
    b.reply(u2, tool("bash", command="pytest", metadata={"exit": 0}), finish="tool-calls")
    b.reply(u2, "All tests pass.")
    log, problems = b.read(tmp_path)
    assert problems == []
    assert [t.input.task for t in log.examples] == ["fix the bug", "thanks, now run the tests"]
    first, second = log.examples
    assert [a.tool for a in first.actions] == ["read", "edit"]
    assert [a.step for a in first.actions] == [1, 2]
    assert first.actions[0].args == {"filePath": "/work/proj/a.py"}
    assert first.actions[0].result == "ok" and first.actions[0].success is True
    assert first.actions[0].callID == "call_read"
    assert (first.actions[0].model_extra or {})["durationMs"] == 250
    # Narration before a tool call is not the answer; the last text is.
    assert first.output.response == "Fixed the bug in a.py."
    assert first.output.finalMessage == b.messages[3]["info"]["id"]
    assert first.input.context.workingDirectory == "/work/proj"
    assert first.metadata is not None and first.metadata.messageCount == 4
    # Earlier turns become the conversation history of later ones.
    assert [(m.role, m.content) for m in second.input.conversationHistory] == [
        ("user", "fix the bug"),
        ("assistant", "Fixed the bug in a.py."),
    ]
    assert first.input.conversationHistory == []
    assert first.agent is not None and first.agent.name == "build"
    assert first.agent.model == "prov/m1"
    assert outcome(log, 0)[0] is True and outcome(log, 1)[0] is True


def test_task_leaves_out_synthetic_and_ignored_text(tmp_path: Path) -> None:
    b = Builder()
    u = b.user(
        text("Called the Read tool with …", synthetic=True),
        "explain main.py",
        text("draft", ignored=True),
        {
            "type": "file",
            "mime": "text/plain",
            "filename": "main.py",
            "url": "file:///work/proj/main.py",
        },
    )
    b.reply(u, "It prints hello.")
    log, _ = b.read(tmp_path)
    assert log.examples[0].input.task == "explain main.py"
    assert log.examples[0].input.context.relevantFiles == ["main.py"]


def test_subtask_prompt_is_the_task_when_nothing_was_typed(tmp_path: Path) -> None:
    b = Builder()
    u = b.user(
        {"type": "subtask", "prompt": "review a.py", "description": "review", "agent": "general"}
    )
    b.reply(u, "Reviewed.")
    log, _ = b.read(tmp_path)
    assert log.examples[0].input.task == "review a.py"


def test_compaction_continues_the_same_turn(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("refactor the parser")
    b.reply(u, tool("read", filePath="p.py"), finish="tool-calls")
    c = b.user({"type": "compaction", "auto": True})
    b.reply(c, "Summary of the conversation so far …", summary=True)
    cont = b.user(text("Continue if you have next steps", synthetic=True))
    b.reply(cont, tool("edit", filePath="p.py", oldString="x", newString="y"), finish="tool-calls")
    b.reply(cont, "Refactored the parser.")
    log, _ = b.read(tmp_path)
    assert len(log.examples) == 1
    turn = log.examples[0]
    assert [a.tool for a in turn.actions] == ["read", "edit"]
    assert turn.output.response == "Refactored the parser."
    assert (turn.model_extra or {})["continuedAfterCompaction"] == 3
    assert outcome(log)[0] is True


def test_reasoning_and_step_parts_are_counted_not_mapped(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("do it")
    b.reply(
        u,
        {"type": "step-start", "snapshot": "abc"},
        {"type": "reasoning", "text": "hmm"},
        tool("write", filePath="/work/proj/n.py", content="x"),
        {"type": "step-finish", "reason": "tool-calls", "cost": 0, "tokens": {}},
        {"type": "patch", "hash": "h", "files": ["/work/proj/n.py", "/work/proj/m.py"]},
        finish="tool-calls",
    )
    b.reply(u, "Done.")
    log, problems = b.read(tmp_path)
    assert problems == []
    turn = log.examples[0]
    assert [a.tool for a in turn.actions] == ["write"]
    assert (turn.model_extra or {})["ignoredParts"] == {
        "patch": 1,
        "reasoning": 1,
        "step-finish": 1,
        "step-start": 1,
    }
    assert turn.outcome is not None and turn.outcome.metrics is not None
    assert turn.outcome.metrics.filesModified == 2


def test_tokens_cost_and_time_come_from_the_messages(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("go")
    b.reply(
        u,
        tool("read", filePath="a"),
        finish="tool-calls",
        cost=0.25,
        tokens={"input": 1000, "output": 50, "reasoning": 7, "cache": {"read": 3000, "write": 20}},
    )
    b.reply(
        u,
        "ok",
        cost=0.5,
        tokens={"input": 200, "output": 30, "reasoning": 0, "cache": {"read": 1000, "write": 0}},
    )
    log, _ = b.read(tmp_path)
    turn = log.examples[0]
    assert turn.outcome is not None and turn.outcome.metrics is not None
    m = turn.outcome.metrics
    assert m.tokenCost is not None and m.tokenCost.cache is not None
    assert (m.tokenCost.input, m.tokenCost.output) == (1200, 80)
    assert (m.tokenCost.cache.read, m.tokenCost.cache.write) == (4000, 20)
    assert (m.model_extra or {})["reasoningTokens"] == 7
    assert m.cacheHitRate == pytest.approx(4000 / 5200)
    assert m.toolCallCount == 1
    assert (turn.model_extra or {})["cost"] == pytest.approx(0.75)
    assert turn.agent is not None and turn.agent.promptTokens == 1200
    # From the user message (created at 1 s) to the last answer's completion (5.5 s).
    assert b.messages[0]["info"]["time"]["created"] == 1000
    assert b.messages[-1]["info"]["time"]["completed"] == 5500
    assert m.timeToCompletion == pytest.approx(4.5)
    ex = examples({"s": SessionRead(log, tmp_path, "opencode-export")})["ses_test/0"]
    assert ex["metrics"]["cost"] == pytest.approx(0.75)
    assert ex["metrics"]["tokens_input"] == 1200


# ---------------------------------------------------------------------------------------------
# Outcome rules


def test_rule_tool_error_fails_the_action_and_the_turn(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("read it")
    b.reply(
        u,
        tool("read", "error", error="Error: File not found: /x", filePath="/x"),
        finish="tool-calls",
    )
    b.reply(u, "The file does not exist.")
    log, _ = b.read(tmp_path)
    action = log.examples[0].actions[0]
    assert action.success is False
    assert (action.model_extra or {})["failureKind"] == "tool-error"
    assert action.result == "Error: File not found: /x"
    success, completed, reasons = outcome(log)
    assert (success, completed) == (False, True)
    assert reasons == ["tool read failed (tool-error) at step 1"]


def test_rule_nonzero_exit_fails_a_completed_command(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("migrate")
    b.reply(
        u,
        tool("bash", output="no such file", metadata={"exit": 2}, command="./m.sh"),
        finish="tool-calls",
    )
    b.reply(u, "The script is missing.")
    log, _ = b.read(tmp_path)
    action = log.examples[0].actions[0]
    assert action.success is False
    assert (action.model_extra or {})["failureKind"] == "exit-code"
    assert (action.model_extra or {})["exitCode"] == 2
    assert outcome(log)[0] is False


def test_rule_zero_or_missing_exit_is_success(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("go")
    b.reply(
        u,
        tool("bash", metadata={"exit": 0}, command="true"),
        tool("bash", metadata={"exit": None}, command="sleep 1"),
        finish="tool-calls",
    )
    b.reply(u, "done")
    log, _ = b.read(tmp_path)
    assert [a.success for a in log.examples[0].actions] == [True, True]
    assert outcome(log)[0] is True


@pytest.mark.parametrize(
    "message",
    [
        "The user has specified a rule which prevents you from using this specific tool call. "
        "Here are some of the relevant rules [...]",
        "The user rejected permission to use this specific tool call.",
        "The user rejected permission to use this specific tool call with the following feedback: "
        "no",
        "Error: QuestionRejectedError",
    ],
)
def test_rule_refused_permission_is_its_own_failure_kind(tmp_path: Path, message: str) -> None:
    b = Builder()
    u = b.user("clean up")
    b.reply(u, tool("bash", "error", error=message, command="rm -rf build"), finish="tool-calls")
    b.reply(u, "I am not allowed to delete files here.")
    log, _ = b.read(tmp_path)
    action = log.examples[0].actions[0]
    assert (action.success, (action.model_extra or {})["failureKind"]) == (
        False,
        "permission-denied",
    )
    success, completed, reasons = outcome(log)
    assert (success, completed) == (False, True)
    assert reasons == ["tool bash failed (permission-denied) at step 1"]


def test_rule_aborted_tool(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("go")
    b.reply(
        u,
        tool("bash", "error", error="Tool execution aborted", command="sleep 100"),
        finish="tool-calls",
    )
    log, _ = b.read(tmp_path)
    assert (log.examples[0].actions[0].model_extra or {})["failureKind"] == "aborted"
    assert outcome(log)[:2] == (False, False)


def test_rule_a_failure_recovered_by_the_same_tool_does_not_count(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("make the tests pass")
    b.reply(u, tool("bash", metadata={"exit": 1}, command="pytest"), finish="tool-calls")
    b.reply(u, tool("edit", filePath="a.py", oldString="+", newString="*"), finish="tool-calls")
    b.reply(u, tool("bash", metadata={"exit": 0}, command="pytest"), finish="tool-calls")
    b.reply(u, "Tests pass now.")
    log, _ = b.read(tmp_path)
    assert [a.success for a in log.examples[0].actions] == [False, True, True]
    assert outcome(log) == (True, True, [])


def test_rule_a_failure_followed_only_by_other_tools_counts(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("make the tests pass")
    b.reply(u, tool("bash", metadata={"exit": 1}, command="pytest"), finish="tool-calls")
    b.reply(u, tool("edit", filePath="a.py", oldString="+", newString="*"), finish="tool-calls")
    b.reply(u, "Should pass now.")
    log, _ = b.read(tmp_path)
    assert outcome(log)[0] is False


def test_rule_assistant_error_fails_the_turn(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("summarise")
    b.reply(
        u,
        finish=None,
        error={"name": "APIError", "data": {"message": "Bad request", "statusCode": 400}},
    )
    log, _ = b.read(tmp_path)
    success, completed, reasons = outcome(log)
    assert (success, completed) == (False, False)
    assert reasons == [
        f"assistant error APIError: Bad request (message {b.messages[1]['info']['id']})"
    ]
    assert log.examples[0].output.response == ""


@pytest.mark.parametrize("finish", ["length", "content-filter", "error", "tool-calls"])
def test_rule_last_step_must_finish_with_stop(tmp_path: Path, finish: str) -> None:
    b = Builder()
    u = b.user("write a long essay")
    b.reply(u, "Once upon a time", finish=finish)
    log, _ = b.read(tmp_path)
    success, completed, reasons = outcome(log)
    assert (success, completed) == (False, False)
    assert reasons == [f"last step finished with {finish!r} instead of 'stop'"]


def test_rule_missing_finish_means_interrupted(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("go")
    b.reply(u, "Working on", finish=None)
    log, _ = b.read(tmp_path)
    assert outcome(log) == (False, False, ["last step has no finish reason (interrupted)"])


def test_rule_abnormal_intermediate_finish(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("go")
    b.reply(u, tool("read", filePath="a"), finish="length")
    b.reply(u, "done")
    log, _ = b.read(tmp_path)
    assert outcome(log) == (False, False, ["a step finished with 'length'"])


def test_rule_unanswered_request(tmp_path: Path) -> None:
    b = Builder()
    b.user("hello?")
    log, _ = b.read(tmp_path)
    assert outcome(log) == (False, False, ["no assistant reply"])


def test_rule_tool_left_running_is_interrupted(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("build it")
    b.reply(u, tool("bash", "running", command="make"), finish=None)
    log, problems = b.read(tmp_path)
    action = log.examples[0].actions[0]
    assert (action.success, (action.model_extra or {})["failureKind"]) == (False, "interrupted")
    assert outcome(log)[0] is False
    assert len(problems) == 1 and problems[0].severity == "warning"
    assert "still 'running'" in problems[0].message and "interrupted" in problems[0].message


def test_unknown_part_type_and_tool_state_are_warnings(tmp_path: Path) -> None:
    b = Builder()
    u = b.user("go")
    b.reply(
        u,
        {"type": "hologram", "data": 1},
        {"type": "hologram", "data": 2},
        tool("read", "queued", filePath="a"),
        finish="tool-calls",
    )
    b.reply(u, "done")
    log, problems = b.read(tmp_path)
    assert [p.severity for p in problems] == ["warning", "warning"]
    assert "unknown part type 'hologram'" in problems[0].message  # once, not per part
    assert "unknown tool state 'queued'" in problems[1].message
    assert log.examples[0].actions[0].success is None
    assert (log.examples[0].model_extra or {})["ignoredParts"] == {"hologram": 2}
    assert outcome(log)[0] is True


def test_provenance_is_kept_on_the_session(tmp_path: Path) -> None:
    b = Builder(
        "ses_child",
        parentID="ses_parent",
        projectID="p1",
        title="Sub",
        agent="general",
        model={"id": "m1", "providerID": "prov"},
        cost=0.5,
        tokens={"input": 10, "output": 2, "reasoning": 0, "cache": {"read": 1, "write": 0}},
    )
    u = b.user("review")
    b.reply(u, "ok")
    log, _ = b.read(tmp_path)
    extra = log.model_extra or {}
    assert extra["sourceFormat"] == "opencode-export"
    assert extra["parentSession"] == "ses_parent"
    assert extra["opencodeVersion"] == "1.18.33"
    assert extra["model"] == "prov/m1" and extra["agent"] == "general"
    assert extra["cost"] == 0.5 and extra["tokens"]["cache"]["read"] == 1
    assert log.generated == "1970-01-01T00:00:09.000Z"
    ex = examples({"s": SessionRead(log, tmp_path, "opencode-export")})["ses_child/0"]
    assert ex["parent_session_id"] == "ses_parent"


@pytest.mark.parametrize(
    "value, message",
    [
        ({"info": [], "messages": []}, "session info must be an object"),
        ({"info": {"title": "x"}, "messages": []}, "session info has no 'id'"),
        ({"info": {"id": "ses_x"}, "messages": {}}, "must be an array"),
        ({"info": {"id": "ses_x"}, "messages": [{"info": {}, "parts": 3}]}, "not a message"),
    ],
)
def test_malformed_export_is_a_problem(tmp_path: Path, value: Any, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(value))
    items = list(read_source(Source(path, "json")))
    assert [type(i) for i in items] == [Problem]
    assert message in items[0].message


# ---------------------------------------------------------------------------------------------
# Real recorded sessions


def test_recorded_scenarios_map_as_documented() -> None:
    reads, problems = read_all(REC / "opencode.db")
    assert problems == []
    assert len(reads) == len(json.loads((REC / "manifest.json").read_text())["sessions"])

    def turn0(name: str, child: bool = False) -> Any:
        return reads[scenario(name, child=child)].session.examples[0]

    fix = turn0("fix-total")
    assert [(a.tool, a.success) for a in fix.actions] == [
        ("bash", False),
        ("read", True),
        ("edit", True),
        ("bash", True),
    ]
    assert (fix.actions[0].model_extra or {})["exitCode"] == 1
    assert fix.outcome.success is True and fix.outcome.metrics.filesModified == 1
    assert fix.output.response.startswith("Fixed `LineItem.total`")

    missing = turn0("missing-script")
    assert (missing.actions[0].model_extra or {})["failureKind"] == "exit-code"
    assert (missing.outcome.success, missing.outcome.taskCompleted) == (False, True)

    refused = turn0("refused-cleanup")
    assert (refused.actions[0].model_extra or {})["failureKind"] == "permission-denied"
    assert (refused.outcome.success, refused.outcome.taskCompleted) == (False, True)

    rejected = turn0("rejected-push")
    assert (rejected.actions[0].model_extra or {})["failureKind"] == "permission-denied"
    assert (rejected.outcome.success, rejected.outcome.taskCompleted) == (False, False)

    api = turn0("api-error")
    assert (api.outcome.success, api.outcome.taskCompleted) == (False, False)
    assert "APIError" in api.outcome.model_extra["failureReasons"][0]

    assert len(reads[scenario("changelog-two-turns")].session.examples) == 2
    assert all(t.outcome.success for t in reads[scenario("changelog-two-turns")].session.examples)
    assert turn0("find-totals").outcome.success is True

    parent = reads[scenario("subagent-review")].session
    child = reads[scenario("subagent-review", child=True)].session
    task = parent.examples[0].actions[0]
    assert task.tool == "task" and (task.model_extra or {})["childSession"] == child.session
    assert (child.model_extra or {})["parentSession"] == parent.session
    assert (parent.model_extra or {})["childSessions"] == [child.session]
    assert child.examples[0].agent.name == "general"
    assert (parent.model_extra or {})["opencodeVersion"] == "1.18.33"
    assert (reads[scenario("fix-total")].session.model_extra or {})["opencodeVersion"] == "1.1.65"


def test_same_session_from_db_storage_tree_and_export_gives_identical_examples() -> None:
    db, p1 = read_all(REC / "opencode.db")
    tree, p2 = read_all(REC / "legacy-storage")
    exported, p3 = read_all(*sorted((REC / "exports").glob("*.json")))
    assert p1 == p2 == p3 == []
    assert {r.format for r in db.values()} == {"opencode-db"}
    assert {r.format for r in tree.values()} == {"opencode-storage"}
    assert {r.format for r in exported.values()} == {"opencode-export"}
    from_db, from_tree, from_export = examples(db), examples(tree), examples(exported)
    assert from_db == from_export
    assert len(from_tree) >= 4  # the sessions recorded by OpenCode 1.1.65 (pre-1.2 storage)
    assert from_tree == {k: v for k, v in from_db.items() if k in from_tree}
    # Not only the examples: the whole session log, but for where it was read from.
    for sid, read in tree.items():
        a = read.session.model_dump()
        b = db[sid].session.model_dump()
        a.pop("sourceFormat"), b.pop("sourceFormat")
        # A pre-1.2 session file keeps no agent, model or token totals of its own.
        for key in ("agent", "model", "tokens", "cost"):
            a.pop(key, None), b.pop(key, None)
        assert a == b


def test_export_samples_read() -> None:
    reads, problems = read_all(SAMPLES)
    assert problems == []
    by_title = {len(r.session.examples): r.session for r in reads.values()}
    failed = by_title[1]
    assert failed.examples[0].actions[0].success is False
    assert failed.examples[0].outcome.success is False
    multi = by_title[2]
    assert [t.outcome.success for t in multi.examples] == [True, True]


def test_validate_reports_the_format_of_each_input(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(REC / "opencode.db", raw / "opencode.db")
    shutil.copytree(REC / "legacy-storage", raw / "storage")
    shutil.copy(SAMPLES / "failed-command.json", raw / "export-1.json")
    shutil.copy(
        DATA / "plugin" / next(p.name for p in (DATA / "plugin").glob("*.json")),
        raw / "plugin-log.json",
    )
    report = validate([raw], min_examples=1)
    formats = {Path(f.file).name: f.format for f in report.files}
    assert formats == {
        "opencode.db": "opencode-db",
        "storage": "opencode-storage",
        "export-1.json": "opencode-export",
        "plugin-log.json": "plugin",
    }
    # The storage tree (read first) repeats 3 sessions of the database: warnings, not errors.
    assert [p.severity for p in report.problems] == ["warning"] * 3
    assert all("already read" in p.message for p in report.problems)
    assert report.total_sessions == 9 + 1 + 1
    assert report.valid


def test_convert_reads_a_database_and_keeps_sub_agents_linked(tmp_path: Path) -> None:
    res = convert([REC / "opencode.db"], tmp_path / "out", require_success=False)
    assert res.manifest.sources[0].format == "opencode-db"
    exs = {e.session_id: e for e in load_examples(res.examples_path)}
    child = scenario("subagent-review", child=True)
    assert exs[child].parent_session_id == scenario("subagent-review")
    assert all(e.source_format == "opencode-db" for e in exs.values())


# ---------------------------------------------------------------------------------------------
# Damaged databases


@pytest.fixture
def db_copy(tmp_path: Path) -> Path:
    path = tmp_path / "opencode.db"
    shutil.copy(REC / "opencode.db", path)
    return path


def read_db(path: Path) -> tuple[dict[str, SessionLog], list[Problem]]:
    items = list(read_source(Source(path, "opencode-db")))
    return (
        {i.session.session or "": i.session for i in items if isinstance(i, SessionRead)},
        [i for i in items if isinstance(i, Problem)],
    )


def edit_part(db: Path, where: str, change: Any) -> str:
    conn = sqlite3.connect(db)
    pid, data = conn.execute(f"SELECT id, data FROM part WHERE {where} LIMIT 1").fetchone()
    new = change(json.loads(data)) if callable(change) else change
    conn.execute(
        "UPDATE part SET data = ? WHERE id = ?",
        (new if isinstance(new, str) else json.dumps(new), pid),
    )
    conn.commit()
    conn.close()
    return pid


def test_corrupt_part_row_skips_the_part_and_fails_its_turn(db_copy: Path) -> None:
    sid = scenario("find-totals")
    pid = edit_part(
        db_copy,
        f"session_id = '{sid}' AND data LIKE '%\"tool\":\"grep\"%'",
        '{"type": "tool", "tool": "gr',
    )
    sessions, problems = read_db(db_copy)
    assert len(sessions) == 9
    assert [(p.severity, p.where) for p in problems] == [("error", f"session {sid}: part {pid}")]
    assert "invalid JSON" in problems[0].message
    turn = sessions[sid].examples[0]
    assert [a.tool for a in turn.actions] == ["glob", "read"]
    assert turn.outcome.success is False
    assert any("unreadable" in r for r in turn.outcome.model_extra["failureReasons"])
    others = [s for k, s in sessions.items() if k != sid]
    assert all(s.examples for s in others)


def test_corrupt_message_row_skips_only_its_session(db_copy: Path) -> None:
    sid = scenario("missing-script")
    conn = sqlite3.connect(db_copy)
    conn.execute(
        "UPDATE message SET data = 'not json' WHERE id = (SELECT id FROM message "
        "WHERE session_id = ? LIMIT 1)",
        (sid,),
    )
    conn.commit()
    conn.close()
    sessions, problems = read_db(db_copy)
    assert sid not in sessions and len(sessions) == 8
    assert len(problems) == 1 and "session is skipped" in problems[0].message


def test_unknown_part_type_in_db(db_copy: Path) -> None:
    sid = scenario("fix-total")
    edit_part(
        db_copy,
        f"session_id = '{sid}' AND data LIKE '%step-start%'",
        lambda d: {**d, "type": "future-part"},
    )
    sessions, problems = read_db(db_copy)
    assert len(sessions) == 9
    assert [p.severity for p in problems] == ["warning"]
    assert "unknown part type 'future-part'" in problems[0].message
    assert sessions[sid].examples[0].outcome.success is True


def test_tool_still_running_in_db(db_copy: Path) -> None:
    sid = scenario("find-totals")

    def running(d: dict[str, Any]) -> dict[str, Any]:
        d["state"] = {
            "status": "running",
            "input": d["state"]["input"],
            "time": {"start": d["state"]["time"]["start"]},
        }
        return d

    edit_part(db_copy, f"session_id = '{sid}' AND data LIKE '%\"tool\":\"read\"%'", running)
    sessions, problems = read_db(db_copy)
    assert len(sessions) == 9
    assert [p.severity for p in problems] == ["warning"]
    assert "still 'running'" in problems[0].message
    read = sessions[sid].examples[0].actions[-1]
    assert (read.tool, read.success, read.model_extra["failureKind"]) == (
        "read",
        False,
        "interrupted",
    )


def test_unknown_future_column(db_copy: Path) -> None:
    conn = sqlite3.connect(db_copy)
    conn.execute("ALTER TABLE session ADD COLUMN mood text")
    conn.execute("ALTER TABLE part ADD COLUMN shard integer")
    conn.execute("ALTER TABLE message ADD COLUMN shard integer")
    conn.execute("UPDATE session SET mood = 'sunny'")
    conn.commit()
    conn.close()
    sessions, problems = read_db(db_copy)
    assert len(sessions) == 9
    assert [(p.severity, p.where) for p in problems] == [("warning", "table session")]
    assert "mood" in problems[0].message
    assert all((s.model_extra or {})["dbColumns"] == {"mood": "sunny"} for s in sessions.values())
    # And the examples are the same as without the column.
    fresh, _ = read_db(REC / "opencode.db")
    for sid, log in sessions.items():
        assert log.examples == fresh[sid].examples


def test_locked_database_is_one_clear_problem(
    db_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opencode_database, "DEFAULT_BUSY_TIMEOUT", 0.1)
    writer = sqlite3.connect(db_copy, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: readers must wait
    try:
        sessions, problems = read_db(db_copy)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert sessions == {}
    assert len(problems) == 1
    assert "locked by another process" in problems[0].message
    assert "0.1s" in problems[0].message


def test_live_database_in_wal_mode_is_read_without_blocking(db_copy: Path) -> None:
    conn = sqlite3.connect(db_copy)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    writer = sqlite3.connect(db_copy, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # OpenCode in the middle of writing
    writer.execute("UPDATE session SET title = 'renamed'")
    writer.execute("DELETE FROM part")
    try:
        sessions, problems = read_db(db_copy)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert problems == [] and len(sessions) == 9
    assert all(s.examples for s in sessions.values())
    assert not any((s.model_extra or {}).get("title") == "renamed" for s in sessions.values())


def _grown_db(path: Path, copies: int) -> None:
    """The recorded sessions `copies` times over, sessions first and parts last in the file,
    so that cutting the file's tail loses parts of some sessions but not the session list."""
    src = sqlite3.connect(REC / "opencode.db")
    dst = sqlite3.connect(path)
    src.backup(dst)
    src.close()
    sessions = dst.execute("SELECT * FROM session").fetchall()
    messages = dst.execute(
        "SELECT id, session_id, time_created, time_updated, data FROM message"
    ).fetchall()
    parts = dst.execute(
        "SELECT id, message_id, session_id, time_created, time_updated, data FROM part"
    ).fetchall()
    for table in ("part", "message", "session"):
        dst.execute(f"DELETE FROM {table}")
    cols = len(sessions[0])
    for k in range(copies):
        dst.executemany(
            f"INSERT INTO session VALUES ({', '.join('?' * cols)})",
            [(f"{r[0]}_{k}", *r[1:3], r[3] and f"{r[3]}_{k}", *r[4:]) for r in sessions],
        )
    for k in range(copies):
        rows = []
        for mid, sid, tc, tu, data in messages:
            info = json.loads(data)
            if info.get("parentID"):
                info["parentID"] = f"{info['parentID']}_{k}"
            rows.append((f"{mid}_{k}", f"{sid}_{k}", tc, tu, json.dumps(info)))
        dst.executemany(
            "INSERT INTO message (id, session_id, time_created, time_updated, data) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    for k in range(copies):
        dst.executemany(
            "INSERT INTO part (id, message_id, session_id, time_created, "
            "time_updated, data) VALUES (?, ?, ?, ?, ?, ?)",
            [(f"{p}_{k}", f"{m}_{k}", f"{s}_{k}", tc, tu, d) for p, m, s, tc, tu, d in parts],
        )
    dst.commit()
    dst.close()


def test_truncated_database_reads_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    _grown_db(path, 30)
    whole, _ = read_db(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(int(size * 0.85))
    sessions, problems = read_db(path)
    assert problems[0].severity == "error"
    assert "truncated" in problems[0].message and f"of {size} bytes" in problems[0].message
    skipped = [p for p in problems[1:] if p.where.startswith("session ")]
    assert skipped and all("past the end of the truncated file" in p.message for p in skipped)
    assert 0 < len(sessions) < len(whole)
    # What was read is read correctly.
    for sid, log in sessions.items():
        assert log.examples == whole[sid].examples


@pytest.mark.parametrize("cut", [50, 3000])
def test_database_cut_short_is_reported(db_copy: Path, cut: int) -> None:
    with db_copy.open("r+b") as f:
        f.truncate(cut)
    sessions, problems = read_db(db_copy)
    assert sessions == {}
    assert len(problems) >= 1 and "truncated" in problems[-1].message


def test_sqlite_file_that_is_not_opencode(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    assert discover([path]).sources[0].format == "opencode-db"
    sessions, problems = read_db(path)
    assert sessions == {} and "not an OpenCode database" in problems[0].message


def test_reading_never_writes_the_database(db_copy: Path) -> None:
    before = db_copy.read_bytes()
    read_db(db_copy)
    assert db_copy.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Damaged storage trees


def test_storage_tree_with_broken_files(tmp_path: Path) -> None:
    tree = tmp_path / "storage"
    shutil.copytree(REC / "legacy-storage", tree)
    sid = scenario("fix-total")
    part = sorted((tree / "part").glob("*/*.json"))[0]
    part.write_text("{broken")
    other = scenario("missing-script")
    msg = sorted((tree / "message" / other).glob("*.json"))[0]
    msg.write_text("")
    sessions, problems = read_all(tree)
    assert other not in sessions and sid in sessions
    assert len(sessions) == 2
    # Problems are counted against the tree and name the broken file inside it.
    assert {p.file for p in problems} == {str(tree)}
    msgs = {p.where: p.message for p in problems}
    assert "invalid JSON; part skipped" in msgs[part.relative_to(tree).as_posix()]
    empty = msgs[msg.relative_to(tree).as_posix()]
    assert "file is empty" in empty and "is skipped" in empty
    report = validate([tree], min_examples=1)
    assert [(f.format, f.sessions, f.errors) for f in report.files] == [("opencode-storage", 2, 2)]


# ---------------------------------------------------------------------------------------------
# Whatever an export holds, reading it never raises


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(
    [
        "id",
        "role",
        "parentID",
        "type",
        "tool",
        "state",
        "status",
        "input",
        "output",
        "error",
        "metadata",
        "exit",
        "text",
        "synthetic",
        "finish",
        "time",
        "created",
        "completed",
        "tokens",
        "cost",
        "summary",
        "files",
        "agent",
        "modelID",
        "providerID",
        "path",
        "cwd",
        "prompt",
    ]
)
_objects = st.recursive(
    st.dictionaries(_keys, _values, max_size=6),
    lambda c: st.dictionaries(_keys, c | _values, max_size=6),
    max_leaves=20,
)
_parts = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["text", "tool", "patch", "file", "subtask", "compaction", "zzz"]
            )
        },
        optional={
            "text": _values,
            "tool": _values,
            "synthetic": _values,
            "files": _values,
            "state": st.fixed_dictionaries(
                {"status": st.sampled_from(["completed", "error", "running", "pending", "?"])},
                optional={
                    "input": _values,
                    "output": _values,
                    "error": _values,
                    "metadata": _objects,
                    "time": _objects,
                },
            ),
        },
    )
    | _objects,
    max_size=4,
)
_messages = st.lists(
    st.fixed_dictionaries(
        {
            "info": st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system"])},
                optional={
                    "id": st.sampled_from(["m1", "m2", "m3"]),
                    "parentID": st.sampled_from(["m1", "m2", "x"]) | _values,
                    "finish": _values,
                    "error": _values,
                    "tokens": _objects,
                    "time": _objects,
                    "summary": _values,
                    "cost": _values,
                    "agent": _values,
                    "path": _values,
                },
            ),
            "parts": _parts,
        }
    )
    | _values,
    max_size=5,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    info=st.fixed_dictionaries(
        {"id": st.text(min_size=1, max_size=5)},
        optional={"time": _objects, "model": _values, "tokens": _values, "parentID": _values},
    )
    | _values,
    messages=_messages | _values,
)
def test_export_reader_never_raises(tmp_path: Path, info: Any, messages: Any) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"info": info, "messages": messages}))
    for item in read_source(Source(path, "json")):
        assert isinstance(item, (Problem, SessionRead))
