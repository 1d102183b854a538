"""One agent on one turn in real OpenCode: `opencode run --agent NAME --model M --format json
MESSAGE` in the restored workspace, under a temp HOME that holds only what the run needs, its
JSON event stream read as it arrives.

The events relied on (OpenCode 1.18.33, one JSON object a line, each with `type`, `timestamp`,
`sessionID` and a `part` shaped as in the store): `step_start` (a model step begins),
`tool_use` (a finished call: `part.tool`, `part.state{status, input, output | error,
metadata}`), `text` (`part.text`), `step_finish` (`part.tokens`, `part.reason`), and `error`
(`error{name, data}`). Unknown types are ignored.

A run ends by itself, or is ended (its whole process group killed) when it passes its step cap,
repeats the same failing call `LOOP_REPEATS` times in a row, or runs past its timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from ocdspy.convert import main_argument
from ocdspy.errors import DataError
from ocdspy.layout import PLUGINS_DIR
from ocdspy.replay.turns import Call
from ocdspy.sessions.opencode.raw import as_dict

Status = Literal["ok", "error", "loop", "step-cap", "timeout"]
LOOP_REPEATS = 3
DEFAULT_MAX_STEPS = 25
DEFAULT_TIMEOUT = 300.0
AGENTS_DIR = "agents"
# Keep OpenCode local and quiet: no model catalogue, updates, default plugins, LSP downloads,
# sharing, or skills and prompts picked up from other tools' folders.
QUIET_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
}
# What a run inherits from the caller's environment; nothing else (no API keys of the machine).
PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")
# Tools whose permission is `edit` in OpenCode's permission settings.
_EDIT_TOOLS = frozenset({"edit", "write", "multiedit", "apply_patch", "patch"})


def home_dirs(home: Path) -> dict[str, Path]:
    """The HOME and XDG variables that put every OpenCode file of a run under `home`."""
    return {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
    }


class RunResult(BaseModel):
    """What one run did, read from its events."""

    status: Status
    steps: int = 0
    calls: list[Call] = Field(default_factory=list)
    failed_calls: int = 0
    response: str = ""
    tokens_input: int = 0
    tokens_output: int = 0
    wall_s: float = 0.0
    exit_code: int | None = None
    errors: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Watching the event stream


@dataclass
class Watch:
    """Reads a run's events one by one; says when the run must be ended, and why."""

    max_steps: int
    workspace: str
    loop_repeats: int = LOOP_REPEATS
    steps: int = 0
    calls: list[Call] = field(default_factory=list)
    failed_calls: int = 0
    texts: list[str] = field(default_factory=list)
    tokens_input: int = 0
    tokens_output: int = 0
    errors: list[str] = field(default_factory=list)
    _last_failure: str | None = None
    _repeats: int = 0

    def feed(self, event: Mapping[str, Any]) -> Status | None:
        """One event; the status that ends the run now ("loop", "step-cap"), else None."""
        kind = event.get("type")
        part = as_dict(event.get("part"))
        if kind == "step_start":
            self.steps += 1
            self.texts = []
            if self.steps > self.max_steps:
                return "step-cap"
        elif kind == "tool_use":
            return self._tool(part)
        elif kind == "text" and isinstance(part.get("text"), str):
            self.texts.append(part["text"])
        elif kind == "step_finish":
            tokens = as_dict(part.get("tokens"))
            self.tokens_input += _int(tokens.get("input"))
            self.tokens_output += _int(tokens.get("output"))
        elif kind == "error":
            self.errors.append(_error_line(event.get("error")))
        return None

    def _tool(self, part: Mapping[str, Any]) -> Status | None:
        tool = str(part.get("tool") or "?")
        state = as_dict(part.get("state"))
        args = as_dict(state.get("input"))
        self.calls.append(Call(tool=tool, target=main_argument(tool, args, self.workspace)))
        if not _failed(tool, state):
            self._last_failure, self._repeats = None, 0
            return None
        self.failed_calls += 1
        key = json.dumps([tool, args], sort_keys=True, default=str)
        self._repeats = self._repeats + 1 if key == self._last_failure else 1
        self._last_failure = key
        return "loop" if self._repeats >= self.loop_repeats else None

    @property
    def response(self) -> str:
        return "".join(self.texts).strip()


def _failed(tool: str, state: Mapping[str, Any]) -> bool:
    if state.get("status") == "error":
        return True
    metadata = as_dict(state.get("metadata"))
    exit_code = metadata.get("exit")
    return tool == "bash" and isinstance(exit_code, int) and exit_code != 0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _error_line(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    data = as_dict(error.get("data"))
    message = data.get("message") or error.get("message") or ""
    return f"{error.get('name') or 'error'}: {message}".strip().rstrip(":")


def watch_events(lines: Iterable[str], watch: Watch) -> Status | None:
    """Feed JSON lines to `watch` until one ends the run (its status) or they run out."""
    for line in lines:
        event = _event(line)
        if event is not None:
            stop = watch.feed(event)
            if stop:
                return stop
    return None


def _event(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------
# The temp HOME


def permission_policy(tools: Iterable[str]) -> dict[str, Any]:
    """Allow the tools the recording used, deny every other one and anything outside the
    workspace (OpenCode's `permission` setting)."""
    policy: dict[str, Any] = {"*": "deny"}
    for tool in sorted(set(tools)):
        policy["edit" if tool in _EDIT_TOOLS else tool] = "allow"
    policy["external_directory"] = "deny"
    return policy


def agent_text_for_run(text: str, policy: Mapping[str, Any]) -> str:
    """The agent file as installed for a run: its body unchanged; its `model` dropped (the run's
    `--model` decides); its `permission` no wider than `policy` (a rule of the agent's own is
    kept only where the policy allows the tool)."""
    from ocdspy.export import parse_agent_file

    try:
        front, body = parse_agent_file(text)
    except (ValueError, yaml.YAMLError):
        front, body = {}, text
    front.pop("model", None)
    own = as_dict(front.get("permission"))
    merged = dict(policy)
    for key, value in own.items():
        if policy.get(key) == "allow":
            merged[key] = value
    front["permission"] = merged
    front.setdefault("description", "agent under replay")
    front.setdefault("mode", "primary")
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000).strip()
    return f"---\n{head}\n---\n{body}"


@dataclass
class AgentSetup:
    """One agent as a run installs it."""

    name: str
    text: str
    plugin_files: list[Path] = field(default_factory=list)


def prepare_home(
    home: Path,
    *,
    agent: AgentSetup,
    model: str,
    provider: Mapping[str, Any],
    policy: Mapping[str, Any],
) -> dict[str, str]:
    """Write the temp HOME (config, the agent, its plugin) and return the run's environment."""
    config_dir = home / ".config" / "opencode"
    dirs = home_dirs(home)
    for d in (*dirs.values(), config_dir / AGENTS_DIR):
        d.mkdir(parents=True, exist_ok=True)
    config = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "model": model,
        "small_model": model,
        "provider": dict(provider),
        "permission": dict(policy),
    }
    (config_dir / "opencode.json").write_text(json.dumps(config, indent=2) + "\n")
    (config_dir / AGENTS_DIR / f"{agent.name}.md").write_text(
        agent_text_for_run(agent.text, policy), encoding="utf-8"
    )
    if agent.plugin_files:
        plugins = config_dir / PLUGINS_DIR
        plugins.mkdir(exist_ok=True)
        for path in agent.plugin_files:
            (plugins / path.name).write_bytes(path.read_bytes())
    env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({k: str(v) for k, v in dirs.items()})
    env.update(QUIET_ENV)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class RunSpec:
    opencode: Path
    agent: str
    model: str
    message: str
    workspace: Path
    env: dict[str, str]
    max_steps: int = DEFAULT_MAX_STEPS
    timeout: float = DEFAULT_TIMEOUT


def run_agent(spec: RunSpec) -> RunResult:
    """Run OpenCode once and read its events as they come; end it on a loop, the step cap or
    the timeout. Ctrl-C kills the run and is raised again."""
    # The message goes in on standard input: OpenCode takes it as is there, while a message
    # given as an argument is quoted when it holds a space.
    args = [str(spec.opencode), "run", "--agent", spec.agent, "--model", spec.model]
    # A title of our own: OpenCode then sends no title request, which on a one-at-a-time
    # server (`ocdspy serve`) would run before the agent's first step and eat its timeout.
    args += ["--format", "json", "--title", f"ocdspy replay: {spec.agent}"]
    watch = Watch(max_steps=spec.max_steps, workspace=str(spec.workspace))
    stderr_path = Path(spec.env["HOME"]) / "opencode-stderr.txt"
    started = time.monotonic()
    with stderr_path.open("wb") as stderr:
        try:
            proc = subprocess.Popen(
                args,
                cwd=spec.workspace,
                env=spec.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as e:
            raise DataError(f"{spec.opencode}: cannot run OpenCode ({e.strerror or e})") from None
        threading.Thread(target=_send, args=(proc, spec.message), daemon=True).start()
        try:
            status = _follow(proc, watch, started + spec.timeout)
        finally:
            _kill_group(proc)
    result = RunResult(
        status=status or "ok",
        steps=min(watch.steps, spec.max_steps),
        calls=watch.calls,
        failed_calls=watch.failed_calls,
        response=watch.response,
        tokens_input=watch.tokens_input,
        tokens_output=watch.tokens_output,
        wall_s=round(time.monotonic() - started, 2),
        exit_code=proc.returncode,
        errors=watch.errors,
    )
    if status is None and (proc.returncode or watch.errors):
        result.status = "error"
        if not watch.errors:
            result.errors.append(_stderr_line(stderr_path, proc.returncode))
    return result


def _send(proc: subprocess.Popen[bytes], message: str) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        proc.stdin.write(message.encode("utf-8"))
    with contextlib.suppress(OSError):
        proc.stdin.close()


def _follow(proc: subprocess.Popen[bytes], watch: Watch, deadline: float) -> Status | None:
    """Read the events until the process ends (None) or must be ended (its status)."""
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        try:
            raw = lines.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
        if raw is None:
            proc.wait()
            return None
        stop = watch_events([raw.decode("utf-8", "replace")], watch)
        if stop:
            return stop


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the run and everything it started (its tools run in the same process group)."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    else:
        # The run is over; tools it left running in its group are not.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.stdout is not None:
        proc.stdout.close()


def _stderr_line(path: Path, code: int | None) -> str:
    try:
        lines = [ln for ln in path.read_text("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    return f"opencode exited with {code}" + (f": {lines[-1].strip()[:300]}" if lines else "")


# ---------------------------------------------------------------------------------------------
# Verifying


class VerifyResult(BaseModel):
    command: str
    exit_code: int | None = Field(description="None when it ran past its timeout.")
    output: str = Field("", description="The last lines it printed.")


def verify(command: str, workspace: Path, *, timeout: float) -> VerifyResult:
    """Run `command` with the shell in `workspace`; its exit status is the verdict."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=workspace,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, code = b"", None
    finally:
        _kill_group(proc)
    tail = "\n".join(out.decode("utf-8", "replace").strip().splitlines()[-5:])
    return VerifyResult(command=command, exit_code=code, output=tail)
