"""Tests of the OpenCode recording support: the scripted model server, the checked-in
recordings in ``tests/data/opencode``, and (integration) a fresh recording with real OpenCode.
"""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    from tests.opencode_support import fake_openai as fo
    from tests.opencode_support.opencode_env import have_node
except ImportError:  # tests/ itself on sys.path (pytest's default import mode)
    from opencode_support import fake_openai as fo  # type: ignore[no-redef]
    from opencode_support.opencode_env import have_node  # type: ignore[no-redef]

DATA = Path(__file__).parent / "data" / "opencode"


# --------------------------------------------------------------------------- helpers


def post(url: str, body: dict, timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sse_events(raw: str) -> list:
    events = []
    for block in raw.split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def chat(user: str, **extra) -> dict:
    return {
        "model": "coder",
        "messages": [{"role": "system", "content": "You help."}, {"role": "user", "content": user}],
        **extra,
    }


def parts_of(con: sqlite3.Connection) -> list[dict]:
    return [json.loads(d) for (d,) in con.execute("select data from part order by message_id, id")]


# --------------------------------------------------------------------------- fake server


def test_non_streaming_text_and_tool_calls() -> None:
    script = fo.Script(
        {"fixbug": [fo.tools(fo.call("read", filePath="/p/a.py")), fo.text("Fixed it.")]}
    )
    with fo.FakeOpenAI(script) as server:
        status, raw = post(server.base_url, chat("please fixbug now"))
        assert status == 200
        reply = json.loads(raw)
        assert reply["object"] == "chat.completion"
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        tc = choice["message"]["tool_calls"][0]
        assert tc["function"]["name"] == "read"
        assert json.loads(tc["function"]["arguments"]) == {"filePath": "/p/a.py"}
        assert reply["usage"]["total_tokens"] > 0

        # step 1: one assistant message follows the user message
        body = chat("please fixbug now")
        body["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [tc]},
            {"role": "tool", "tool_call_id": tc["id"], "content": "x = 1"},
        ]
        status, raw = post(server.base_url, body)
        reply = json.loads(raw)
        assert reply["choices"][0]["message"]["content"] == "Fixed it."
        assert reply["choices"][0]["finish_reason"] == "stop"

        # no marker: default script; a title request gets the title
        assert (
            json.loads(post(server.base_url, chat("hello"))[1])["choices"][0]["message"]["content"]
            == "Done."
        )
        title_req = {
            "model": "coder",
            "messages": [
                {"role": "system", "content": "You are a title generator."},
                {"role": "user", "content": "fixbug"},
            ],
        }
        assert (
            json.loads(post(server.base_url, title_req)[1])["choices"][0]["message"]["content"]
            == "Scripted session"
        )
        assert len(server.requests) == 4
        assert server.requests[0]["messages"][1]["content"] == "please fixbug now"


def test_streaming_tool_calls_then_text() -> None:
    script = fo.Script(
        {
            "go": [
                fo.tools(
                    fo.call("bash", command="ls -la", description="List"),
                    fo.call("glob", pattern="**/*.py"),
                    text="Looking.",
                )
            ]
        }
    )
    with fo.FakeOpenAI(script) as server:
        status, raw = post(
            server.base_url, chat("go", stream=True, stream_options={"include_usage": True})
        )
    assert status == 200
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "Looking."
    calls: dict[int, dict] = {}
    for c in chunks:
        for d in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            entry = calls.setdefault(d["index"], {"name": "", "arguments": ""})
            entry["name"] += d.get("function", {}).get("name", "")
            entry["arguments"] += d.get("function", {}).get("arguments", "")
    assert calls[0]["name"] == "bash" and json.loads(calls[0]["arguments"])["command"] == "ls -la"
    assert calls[1]["name"] == "glob" and json.loads(calls[1]["arguments"]) == {
        "pattern": "**/*.py"
    }
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_sequence_models_endpoint_and_scripted_error() -> None:
    with fo.FakeOpenAI(fo.Sequence(["one", fo.error(429, "slow down"), "three"])) as server:
        assert (
            json.loads(post(server.base_url, chat("a"))[1])["choices"][0]["message"]["content"]
            == "one"
        )
        status, raw = post(server.base_url, chat("b"))
        assert status == 429 and json.loads(raw)["error"]["message"] == "slow down"
        for _ in range(2):  # last step repeats
            assert (
                json.loads(post(server.base_url, chat("c"))[1])["choices"][0]["message"]["content"]
                == "three"
            )
        with urllib.request.urlopen(server.base_url + "/models", timeout=5) as resp:
            assert json.load(resp)["data"][0]["id"] == "coder"
        assert [r.number for r in server.log] == [1, 2, 3, 4, 0]


def test_hang_step_is_closed_without_a_reply() -> None:
    """A ``hang`` step holds the request, then closes it with no response (an aborted turn)."""
    script = fo.Script({"stall": [fo.hang(0.3)], "fine": [fo.text("ok")]})
    with fo.FakeOpenAI(script) as server:
        start = time.monotonic()
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            post(server.base_url, chat("please stall"))
        assert time.monotonic() - start >= 0.3
        assert post(server.base_url, chat("fine now"))[0] == 200


def test_fault_injection() -> None:
    faults = fo.Faults(fail={1: 500}, malformed={2, 3}, hang={4}, hang_seconds=5)
    with fo.FakeOpenAI(fo.Sequence(["ok"]), faults=faults) as server:
        status, raw = post(server.base_url, chat("x"))
        assert status == 500 and json.loads(raw)["error"]["type"] == "server_error"
        status, raw = post(server.base_url, chat("x"))
        assert status == 200
        with pytest.raises(ValueError):
            json.loads(raw)
        status, raw = post(server.base_url, chat("x", stream=True))
        with pytest.raises(ValueError):
            sse_events(raw)
        start = time.monotonic()
        with pytest.raises((TimeoutError, urllib.error.URLError, OSError)):
            post(server.base_url, chat("x"), timeout=0.5)
        assert time.monotonic() - start < 3
        assert post(server.base_url, chat("x"))[0] == 200  # request 5 is fine
    with fo.FakeOpenAI(
        fo.Sequence(["ok"]), faults=fo.Faults(latency=0.3, fail_always=503)
    ) as server:
        start = time.monotonic()
        assert post(server.base_url, chat("x"))[0] == 503
        assert time.monotonic() - start >= 0.3


# --------------------------------------------------------------------------- checked-in data


def check_recording(root: Path, *, legacy: bool) -> None:
    """Properties every recording must have (checked-in or fresh)."""
    db = root / "opencode.db"
    assert db.exists() and not Path(str(db) + "-wal").exists()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = {n for (n,) in con.execute("select name from sqlite_master where type='table'")}
        assert {"session", "message", "part", "project"} <= tables
        sessions = {r[0]: r for r in con.execute("select id, parent_id, version from session")}
        parts = parts_of(con)
        tool_parts = [p for p in parts if p["type"] == "tool"]
        assert {"read", "edit", "write", "bash", "glob", "grep", "task"} <= {
            p["tool"] for p in tool_parts
        }
        assert any(
            p["tool"] == "bash"
            and p["state"]["status"] == "completed"
            and p["state"]["metadata"].get("exit") not in (0, None)
            for p in tool_parts
        )
        assert any(
            p["tool"] == "bash"
            and p["state"]["status"] == "completed"
            and p["state"]["metadata"].get("exit") == 0
            for p in tool_parts
        )
        errors = [p["state"]["error"] for p in tool_parts if p["state"]["status"] == "error"]
        assert any(
            "rule which prevents you from using this specific tool call" in e for e in errors
        )
        assert any("rejected permission" in e for e in errors)
        users = {}
        for sid, data in con.execute("select session_id, data from message"):
            if json.loads(data)["role"] == "user":
                users[sid] = users.get(sid, 0) + 1
        assert 2 in users.values()
        assert any(parent for (_, parent, _) in sessions.values())
        msg_errors = [
            json.loads(d).get("error") for (d,) in con.execute("select data from message")
        ]
        assert any(e and e["name"] == "APIError" for e in msg_errors)
        db_messages = {
            sid: {m for (m,) in con.execute("select id from message where session_id = ?", (sid,))}
            for sid in sessions
        }
    finally:
        con.close()

    exports = {p.stem: json.loads(p.read_text()) for p in (root / "exports").glob("*.json")}
    assert set(exports) == set(sessions)
    for sid, doc in exports.items():
        assert doc["info"]["id"] == sid
        assert {m["info"]["id"] for m in doc["messages"]} == db_messages[sid]

    if legacy:
        storage = root / "legacy-storage"
        legacy_ids = {p.stem for p in storage.glob("session/*/*.json")}
        assert legacy_ids and legacy_ids <= set(sessions)
        assert all(sessions[s][2] == "1.1.65" for s in legacy_ids)
        for sid in legacy_ids:
            files = {p.stem for p in (storage / "message" / sid).glob("*.json")}
            assert files == db_messages[sid]


@pytest.mark.skipif(not (DATA / "opencode.db").exists(), reason="no checked-in recording")
def test_checked_in_recording_is_consistent() -> None:
    check_recording(DATA, legacy=True)
    manifest = json.loads((DATA / "manifest.json").read_text())
    con = sqlite3.connect(f"file:{DATA / 'opencode.db'}?mode=ro", uri=True)
    try:
        ids = {i for (i,) in con.execute("select id from session")}
    finally:
        con.close()
    assert {s["id"] for s in manifest["sessions"]} == ids


# --------------------------------------------------------------------------- integration


@pytest.mark.integration
@pytest.mark.skipif(not have_node(), reason="node/npm not installed")
def test_record_real_opencode(tmp_path: Path) -> None:
    """Record every scenario with real OpenCode 1.18.33 (set OCDSPY_RECORD_LEGACY=1 to also
    record with 1.1.65 and migrate with 1.2.27, as for the checked-in data)."""
    try:
        from tests.opencode_support.record import LEGACY_VERSION, record
    except ImportError:
        from opencode_support.record import LEGACY_VERSION, record  # type: ignore[no-redef]

    legacy = os.environ.get("OCDSPY_RECORD_LEGACY") == "1"
    out = tmp_path / "out"
    rec = record(
        out,
        legacy_version=LEGACY_VERSION if legacy else None,
        work_dir=tmp_path / "work",
        timeout=120,
        log=lambda s: None,
    )
    assert len(rec.sessions) >= 8
    check_recording(out, legacy=legacy)
