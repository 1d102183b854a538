"""`ocdspy serve`: the OpenAI-compatible endpoint, over real HTTP on 127.0.0.1.

Most tests inject a scripted engine (a `request -> reply line` function), so the HTTP layer is
tested without llama.cpp; the integration tests run the built-in model, and real OpenCode
1.18.33 against it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocdspy.opencode_chat import Environment, opencode_request, tool_definitions
from ocdspy.serve import PROVIDER_ID, Completion, resolve_paths, serving, working_directory
from ocdspy.serve.engine import read_reply
from ocdspy.shipped import ContextOverflow, check_context
from opencode_support.opencode_env import ensure_opencode, have_node, isolated_env, run_opencode
from test_shipped import example

REPO = Path(__file__).resolve().parents[1]
CWD = "/w/proj"


def chat_request(*, stream: bool = True, tools: bool = True, **extra: Any) -> dict[str, Any]:
    """What OpenCode sends at the start of a turn (its env block names CWD)."""
    request = opencode_request(
        "You fix bugs.", example(), 0, env=Environment(cwd=CWD), tools=("read", "bash", "grep")
    )
    request.update({"model": "smollm2-135m", "stream": stream, **extra})
    if not tools:
        request.pop("tools")
        request.pop("tool_choice")
    return request


def post(
    base_url: str,
    body: Any,
    *,
    path: str = "/chat/completions",
    method: str = "POST",
    under_v1: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    full = (url.path if under_v1 else "") + path
    conn.request(method, full, body=data if method == "POST" else None)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def get(base_url: str, path: str, *, under_v1: bool = True) -> tuple[int, Any]:
    status, _, raw = post(base_url, b"", path=path, method="GET", under_v1=under_v1)
    return status, json.loads(raw)


def events(raw: bytes) -> list[Any]:
    """The server-sent events of a stream, `[DONE]` as the string."""
    out: list[Any] = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def error_of(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def replies(line: str) -> Callable[[dict[str, Any]], str]:
    return lambda request: line


# ---------------------------------------------------------------------------------------------
# Replies on the wire


def test_streamed_tool_call_is_one_delta_with_the_path_resolved_against_the_project() -> None:
    with serving(engine=replies('call: read {"filePath": "calc.py"}')) as srv:
        status, headers, raw = post(
            srv.base_url, chat_request(stream_options={"include_usage": True})
        )
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    chunks = events(raw)
    assert chunks[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    calls = [
        call
        for c in chunks[:-1]
        for ch in c["choices"]
        for call in ch["delta"].get("tool_calls", ())
    ]
    assert len(calls) == 1 and calls[0]["id"].startswith("call_") and calls[0]["index"] == 0
    assert calls[0]["function"]["name"] == "read"
    assert json.loads(calls[0]["function"]["arguments"]) == {"filePath": f"{CWD}/calc.py"}
    finishes = [ch["finish_reason"] for c in chunks[:-1] for ch in c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    usage = chunks[-2]
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] > 0
    assert usage["usage"]["total_tokens"] == sum(
        usage["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )


def test_streamed_answer_is_text_and_stops() -> None:
    with serving(engine=replies("answer: The bug is fixed.")) as srv:
        status, _, raw = post(srv.base_url, chat_request())
    chunks = events(raw)
    text = "".join(ch["delta"].get("content") or "" for c in chunks[:-1] for ch in c["choices"])
    assert status == 200 and text == "The bug is fixed."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks[:-1])  # not asked for


def test_non_streamed_call_and_answer() -> None:
    lines = iter(['call: grep {"pattern": "def add", "path": "src"}', "answer: Done."])
    with serving(engine=lambda request: next(lines)) as srv:
        call = json.loads(post(srv.base_url, chat_request(stream=False))[2])
        answer = json.loads(post(srv.base_url, chat_request(stream=False))[2])
    assert call["object"] == "chat.completion"
    choice = call["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    fn = choice["message"]["tool_calls"][0]["function"]
    assert fn["name"] == "grep"
    assert json.loads(fn["arguments"]) == {"pattern": "def add", "path": f"{CWD}/src"}
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Done."}
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["prompt_tokens"]


def test_models_lists_the_served_id_on_both_paths() -> None:
    with serving(engine=replies("answer: x")) as srv:
        for under_v1 in (True, False):
            status, body = get(srv.base_url, "/models", under_v1=under_v1)
            assert status == 200
            assert [m["id"] for m in body["data"]] == ["smollm2-135m"] == [srv.model_id]


class Recorder:
    """An engine that keeps what it was asked."""

    n_ctx = 8192

    def __init__(self, line: str = "answer: A title") -> None:
        self.line = line
        self.calls: list[tuple[dict[str, Any], int]] = []

    def complete(self, request: dict[str, Any], max_tokens: int) -> Completion:
        self.calls.append((request, max_tokens))
        return Completion(self.line, 10, 3)


def test_a_request_without_tools_gets_text_within_a_capped_budget() -> None:
    engine = Recorder("answer: Fix calc add")
    with serving(engine=engine, reply_tokens=100) as srv:
        first = json.loads(post(srv.base_url, chat_request(stream=False, tools=False))[2])
        post(srv.base_url, chat_request(tools=False, max_tokens=32000))
        post(srv.base_url, chat_request(tools=False, max_completion_tokens=20))
    assert first["choices"][0]["message"]["content"] == "Fix calc add"
    assert [budget for _, budget in engine.calls] == [100, 100, 20]
    assert engine.calls[0][0]["tools"] == []


def test_tool_choice_none_offers_the_model_no_tool() -> None:
    engine = Recorder()
    with serving(engine=engine) as srv:
        post(srv.base_url, chat_request(tool_choice="none"))
        post(
            srv.base_url,
            chat_request(tool_choice={"type": "function", "function": {"name": "grep"}}),
        )
        post(srv.base_url, chat_request())
    offered = [[t["function"]["name"] for t in r["tools"]] for r, _ in engine.calls]
    assert offered == [[], ["grep"], ["read", "bash", "grep"]]


def test_the_served_id_is_accepted_with_the_provider_prefix() -> None:
    with serving(engine=replies("answer: ok")) as srv:
        status, _, _ = post(srv.base_url, chat_request(model=srv.opencode_model))
    assert status == 200 and srv.opencode_model == f"{PROVIDER_ID}/smollm2-135m"


# ---------------------------------------------------------------------------------------------
# Bad requests


BAD_TOOL = {"type": "function", "function": {"name": "my tool", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("body", "path", "method", "status", "needle"),
    [
        (b'{"model": "smollm2-135m", "messages": [', "/chat/completions", "POST", 400, "JSON"),
        ({"model": "smollm2-135m"}, "/chat/completions", "POST", 400, "messages"),
        ({"model": "smollm2-135m", "messages": []}, "/chat/completions", "POST", 400, "messages"),
        ([1, 2], "/chat/completions", "POST", 400, "JSON object"),
        (chat_request(model="gpt-4o"), "/chat/completions", "POST", 404, "gpt-4o"),
        (chat_request(model="other/smollm2-135m"), "/chat/completions", "POST", 404, "other/"),
        (chat_request(tools=False, max_tokens="many"), "/chat/completions", "POST", 400, "max_"),
        (
            {**chat_request(), "tools": [*tool_definitions(["read"]), BAD_TOOL]},
            "/chat/completions",
            "POST",
            400,
            "'my tool'",
        ),
        (
            {
                **chat_request(),
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "deep", "parameters": {"type": "array"}},
                    }
                ],
            },
            "/chat/completions",
            "POST",
            400,
            "'deep'",
        ),
        (chat_request(), "/completions", "POST", 404, "/completions"),
        (b"", "/chat/completions", "GET", 405, "GET"),
        (b"", "/models", "DELETE", 405, "DELETE"),
        (b"", "/embeddings", "GET", 404, "/embeddings"),
    ],
)
def test_a_bad_request_gets_an_openai_error_body(
    body: Any, path: str, method: str, status: int, needle: str
) -> None:
    with serving(engine=replies("answer: never")) as srv:
        got, headers, raw = post(srv.base_url, body, path=path, method=method)
        assert got == status
        assert headers["Content-Type"] == "application/json"
        error = error_of(raw)
        assert needle in error["message"]
        assert error["type"] == "invalid_request_error"
        if status == 405:
            assert headers["Allow"] in ("GET", "POST")
        # The server lives on: the next good request is served.
        assert post(srv.base_url, chat_request(stream=False))[0] == 200


def test_unknown_model_error_says_model_not_found() -> None:
    with serving(engine=replies("answer: x")) as srv:
        _, _, raw = post(srv.base_url, chat_request(model="gpt-4o"))
    assert error_of(raw)["code"] == "model_not_found"


def test_a_prompt_over_the_context_is_a_400_that_counts_its_tokens() -> None:
    engine_calls: list[dict[str, Any]] = []

    def engine(request: dict[str, Any]) -> str:
        engine_calls.append(request)
        return "answer: x"

    body = chat_request(stream=True)
    # A long agent body (the task itself is clipped when rendered).
    body["messages"][0]["content"] = "Be careful. " * 250 + body["messages"][0]["content"]
    with serving(engine=engine, n_ctx=600) as srv:
        status, _, raw = post(srv.base_url, body)
        small = post(srv.base_url, chat_request(stream=False))[0]
    error = error_of(raw)
    assert status == 400 and error["code"] == "context_length_exceeded"
    assert "maximum context length is 600 tokens" in error["message"]
    assert "reply needs 256" in error["message"]
    # Only the small request reached the model.
    assert [r["messages"][-1]["content"] for r in engine_calls] == [example().task]
    assert small == 200


def test_check_context_counts_prompt_and_reply() -> None:
    check_context(7936, 256, 8192)
    with pytest.raises(ContextOverflow) as caught:
        check_context(7937, 256, 8192)
    assert (caught.value.prompt_tokens, caught.value.reply_tokens, caught.value.n_ctx) == (
        7937,
        256,
        8192,
    )
    assert "7937 tokens" in str(caught.value)


def test_an_engine_failure_is_a_500_body_and_the_server_goes_on() -> None:
    calls = iter([RuntimeError("llama exploded"), "answer: fine"])

    def engine(request: dict[str, Any]) -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    with serving(engine=engine) as srv:
        status, _, raw = post(srv.base_url, chat_request())
        again = post(srv.base_url, chat_request(stream=False))[0]
    assert status == 500 and "llama exploded" in error_of(raw)["message"]
    assert error_of(raw)["type"] == "server_error" and again == 200


# ---------------------------------------------------------------------------------------------
# One at a time, a bounded queue, clients that leave


class Gated:
    """An engine that holds every request until `release` is set."""

    n_ctx = 8192

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.order: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def complete(self, request: dict[str, Any], max_tokens: int) -> Completion:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.order.append(request["messages"][-1]["content"])
        self.started.set()
        self.release.wait(30)
        with self._lock:
            self.running -= 1
        return Completion("answer: done", 5, 2)


def _asking(base_url: str, task: str, results: dict[str, int]) -> threading.Thread:
    body = chat_request(stream=False)
    body["messages"][-1]["content"] = task

    def run() -> None:
        results[task] = post(base_url, body)[0]

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the server never got there")


def test_past_the_queue_bound_a_request_is_answered_429_at_once() -> None:
    engine = Gated()
    results: dict[str, int] = {}
    with serving(engine=engine, queue=1) as srv:
        first = _asking(srv.base_url, "first", results)
        engine.started.wait(30)
        second = _asking(srv.base_url, "second", results)
        _until(lambda: srv.server.gate.waiting == 1)
        status, headers, raw = post(srv.base_url, chat_request())
        engine.release.set()
        first.join(30)
        second.join(30)
    assert status == 429 and headers["Retry-After"] == "1"
    assert error_of(raw)["code"] == "queue_full"
    assert results == {"first": 200, "second": 200}
    assert engine.order == ["first", "second"] and engine.most_at_once == 1


def _abandon(base_url: str, body: dict[str, Any]) -> None:
    """Send a request, then reset the connection before the reply comes."""
    url = urllib.parse.urlsplit(base_url)
    data = json.dumps(body).encode()
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        # Linger 0: close sends a reset, as a killed client does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_client_gone_mid_stream_leaves_the_model_free_for_the_next() -> None:
    engine = Gated()
    with serving(engine=engine) as srv:
        _abandon(srv.base_url, chat_request(stream=True))
        engine.started.wait(30)
        engine.release.set()
        _until(lambda: srv.log[0].error is not None)
        status, _, raw = post(srv.base_url, chat_request(stream=True))
        log = srv.log
    assert status == 200 and events(raw)[-1] == "[DONE]"
    assert log[0].error is not None and "disconnected" in log[0].error
    assert log[1].error is None and log[1].status == 200


# ---------------------------------------------------------------------------------------------
# Paths, the reply line, the provider snippet


def test_working_directory_comes_from_the_env_block() -> None:
    assert working_directory(chat_request()) == CWD
    assert working_directory({"messages": [{"role": "system", "content": "no env"}]}) is None
    assert (
        working_directory({"messages": [{"role": "user", "content": "Working directory: /x"}]})
        is None
    )


def test_relative_path_arguments_are_resolved_and_others_kept() -> None:
    args = {"filePath": "src/../calc.py", "path": "/abs/dir", "pattern": "a/b", "content": "x"}
    assert resolve_paths(args, CWD) == {
        "filePath": f"{CWD}/calc.py",
        "path": "/abs/dir",
        "pattern": "a/b",
        "content": "x",
    }
    assert resolve_paths({"filePath": "calc.py"}, None) == {"filePath": "calc.py"}
    assert resolve_paths({"path": ""}, CWD) == {"path": ""}


def test_a_call_cut_at_the_budget_is_sent_as_text_not_as_a_broken_call() -> None:
    cut = Completion('call: write {"filePath": "a.py", "content": "def f(', 5, 256, "length")
    reply = read_reply(cut, chat_request())
    assert reply.tool is None and reply.finish_reason == "length"
    assert reply.content is not None and reply.content.startswith("call: write")
    plain = read_reply(Completion("just words", 5, 2), chat_request())
    assert plain.content == "just words" and plain.finish_reason == "stop"


def test_the_provider_snippet_points_opencode_at_the_server() -> None:
    with serving(engine=replies("answer: x"), n_ctx=4096) as srv:
        config = srv.provider_config()
        snippet = json.loads(srv.snippet())
        base_url = srv.base_url
        port = srv.port
    assert base_url == f"http://127.0.0.1:{port}/v1" and port > 0
    assert snippet == {"provider": config}
    block = config[PROVIDER_ID]
    assert block["npm"] == "@ai-sdk/openai-compatible"
    assert block["options"]["baseURL"] == base_url
    model = block["models"]["smollm2-135m"]
    assert model["tool_call"] is True and model["limit"] == {"context": 4096, "output": 256}


def test_the_port_is_released_when_the_block_ends() -> None:
    with serving(engine=replies("answer: x")) as srv:
        port = srv.port
        assert get(srv.base_url, "/models")[0] == 200
    assert_port_free(port)


def assert_port_free(port: int) -> None:
    """Nothing listens on `port` (reuse-address, as a restarted server binds: a closed
    connection's TIME_WAIT does not count, a listening socket does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


# ---------------------------------------------------------------------------------------------
# A real client: LiteLLM through DSPy


def test_dspy_and_litellm_drive_the_server_with_tools() -> None:
    import dspy

    from ocdspy.opencode_chat import parse_reply
    from ocdspy.shipped import ApiModelCall

    lines = iter(['call: read {"filePath": "calc.py"}', "answer: It adds."])
    with serving(engine=lambda request: next(lines)) as srv:
        lm = dspy.LM(
            f"openai/{srv.model_id}",
            api_base=srv.base_url,
            api_key="x",
            cache=False,
            num_retries=0,
        )
        call = parse_reply(ApiModelCall(lm)(chat_request(stream=False)))
        text = lm("what does add do?")
    assert call.tool == "read" and call.arguments == {"filePath": f"{CWD}/calc.py"}
    assert text == ["It adds."]


# ---------------------------------------------------------------------------------------------
# The command


# `python -m ocdspy serve …` with Ctrl-C handled as in a terminal: a test run started in the
# background (`cmd &` in a script) has SIGINT ignored, and its children would inherit that.
_SERVE_WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['ocdspy', *sys.argv[1:]]; runpy.run_module('ocdspy', run_name='__main__')"
)


def _start_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _SERVE_WITH_CTRL_C, "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"the server exited before printing {marker!r}: {seen}")


def test_wait_wakes_for_ctrl_c_delivered_to_another_thread() -> None:
    """The kernel hands a process's SIGINT to any of its threads (the server's, llama.cpp's).
    `wait` must still raise KeyboardInterrupt in the main thread, not block for good."""
    main = threading.get_ident()
    rescued = threading.Event()

    def interrupt_from_here() -> None:
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this thread, not main
        if not done.wait(5):  # the main thread did not wake: interrupt it directly
            rescued.set()
            signal.pthread_kill(main, signal.SIGINT)

    done = threading.Event()
    # Python's own Ctrl-C handler, whatever an earlier test or library installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with serving(engine=replies("answer: x")) as srv:
            helper = threading.Thread(target=interrupt_from_here, daemon=True)
            helper.start()
            with pytest.raises(KeyboardInterrupt):
                srv.wait()
            done.set()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not rescued.is_set()


def test_cli_serve_prints_the_snippet_answers_and_stops_on_ctrl_c() -> None:
    proc = _start_cli("--threads", "1")
    try:
        printed = _read_until(proc, "then: opencode --model ocdspy/smollm2-135m")
        snippet = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
        base_url = snippet["provider"]["ocdspy"]["options"]["baseURL"]
        assert snippet["provider"]["ocdspy"]["models"]["smollm2-135m"]["limit"]["context"] == 8192
        status, body = get(base_url, "/models")
        assert status == 200 and body["data"][0]["id"] == "smollm2-135m"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == ["interrupted: the server stopped"]
    assert_port_free(urllib.parse.urlsplit(base_url).port or 0)


def test_cli_serve_on_a_taken_port_is_one_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start_cli("--threads", "1", "--port", str(port))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert err.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# The built-in model (integration)


@pytest.mark.integration
def test_a_grammar_llama_cpp_cannot_parse_is_refused_not_a_crash() -> None:
    from ocdspy.lm.local import _load, grammar_parses
    from ocdspy.shipped import GrammarError, LocalModelCall

    call = LocalModelCall(n_threads=1)
    llama = _load(call.model_path, call.n_ctx, call.n_threads, call.seed).llama
    assert grammar_parses(llama, 'root ::= "a"')
    assert not grammar_parses(llama, "root ::= undefined-rule")
    # A tool name with a backspace becomes a GBNF escape llama.cpp does not know.
    request = chat_request(stream=False)
    request["tools"] = [{"type": "function", "function": {"name": "re\bad", "parameters": {}}}]
    with pytest.raises(GrammarError):
        call.complete(request)


@pytest.mark.integration
def test_the_built_in_model_refuses_a_prompt_over_its_context_with_a_400() -> None:
    body = chat_request()
    body["messages"][0]["content"] = "Be careful. " * 300 + body["messages"][0]["content"]
    with serving(n_ctx=1024, n_threads=1) as srv:
        status, _, raw = post(srv.base_url, body)
        assert srv.log[-1].prompt_tokens == 0  # never generated
    error = error_of(raw)
    assert status == 400 and error["code"] == "context_length_exceeded"
    assert "maximum context length is 1024 tokens" in error["message"]


READER_AGENT = """---
description: Reads the file the user names.
mode: primary
steps: 3
---
You read files.

<example>
user: show todo.txt
call: read {"filePath": "todo.txt"}
</example>

<example>
user: show todo.txt
call: read {"filePath": "todo.txt"}
result: ok: <path>/home/me/todo.txt</path> (5 lines)
answer: I read todo.txt.
</example>
"""


@pytest.mark.integration
@pytest.mark.skipif(not have_node(), reason="node and npm are needed to install OpenCode")
def test_real_opencode_drives_the_built_in_model_through_serve(tmp_path: Path) -> None:
    """OpenCode 1.18.33 sends its real requests (streamed, 10 tools, a title request); the
    model's call is a real tool call OpenCode runs, with the relative path resolved. The
    agent's `steps` and OpenCode's timeout bound the run."""
    binary = ensure_opencode("1.18.33")
    assert binary is not None
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("The secret word is pineapple.\n")
    # One llama.cpp thread: on a shared machine, spinning threads cost more than they give.
    with serving(port=0, n_threads=1) as srv:
        env = isolated_env(
            tmp_path,
            srv.base_url,
            config={
                "provider": srv.provider_config(),
                "model": srv.opencode_model,
                "small_model": srv.opencode_model,
            },
        )
        agents = Path(env["HOME"]) / ".config" / "opencode" / "agent"
        agents.mkdir(parents=True)
        (agents / "reader.md").write_text(READER_AGENT)
        args = ["run", "--agent", "reader", "--model", srv.opencode_model, "--format", "json"]
        ran = run_opencode(binary, [*args, "show notes.txt"], env=env, cwd=project, timeout=170)
        log = srv.log
    assert ran.returncode == 0, ran.stderr[-2000:]
    calls = [e for e in log if e.tool is not None]
    assert calls and all(e.status == 200 for e in log), [e.summary() for e in log]
    assert calls[0].tool == "read"
    assert calls[0].arguments["filePath"] == str(project / "notes.txt")
    # OpenCode ran that call: the file's text came back in its events.
    events_ = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    outputs = [e["part"]["state"].get("output", "") for e in events_ if e.get("type") == "tool_use"]
    assert any("pineapple" in out for out in outputs), ran.stdout[-2000:]
    # What OpenCode's real first request of the turn renders to (the module docstring's figure).
    first = next(e for e in log if e.tools)
    print(f"first request: {first.prompt_tokens} prompt tokens, {first.tools} tools")
    assert first.tools == 10 and 300 < first.prompt_tokens < srv.n_ctx // 4
