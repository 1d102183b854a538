"""export: an optimized program -> an OpenCode agent file (FORMATS.md section 5).

The agent file is Markdown with YAML front matter; its body is the agent's whole system prompt:
the optimized instructions, the chosen demonstrations as readable worked examples, and tool-use
guidance drawn from the recorded sessions. Provenance goes to a sidecar `NAME.meta.json`, never
into the front matter: OpenCode passes unknown front-matter keys to the model provider.

This module reads DSPy's saved-program JSON directly; it needs no DSPy import.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ocdspy import __version__
from ocdspy.artifacts import (
    Artifact,
    atomic_writer,
    bytes_sha256,
    remove_stale_temps,
    write_model_atomic,
    write_text_atomic,
)
from ocdspy.config import Settings
from ocdspy.convert import Example, load_examples
from ocdspy.display import printable, show_path
from ocdspy.errors import DataError, OcdspyError
from ocdspy.layout import PLUGINS_DIR, AgentFiles, Project, installed_agent, run_record_beside
from ocdspy.program.render import clip
from ocdspy.program.sanitize import (
    clean_text,
    dropped_warning,
    excerpt,
    injection_phrase,
    split_demos,
)
from ocdspy.program.select import DEFAULT_INTRO, DemoPool, pool_sha256
from ocdspy.program.select import render_demo as select_render_demo
from ocdspy.program.ship import ShipPlan, Step, plan_pool, plan_static
from ocdspy.redact import find_secrets, redact_text

if TYPE_CHECKING:
    from ocdspy.agents import AgentsReport
    from ocdspy.evaluate import Report

AgentMode = Literal["primary", "subagent", "all"]
DEMOS_SHOWN = 6
_NAME_OK = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# What DSPy's adapters put around fields; none of it may reach the prompt.
_DSPY_MARKERS = re.compile(r"\[\[ ## \w+ ## \]\]|\$\{\w+\}|^\s*(?:Input|Output) fields?:", re.M)

# ---------------------------------------------------------------------------------------------
# The agent file's front matter, as OpenCode validates it (unknown keys are rejected here because
# OpenCode would send them to the provider).


class AgentFrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    mode: AgentMode = "primary"
    model: str | None = Field(None, pattern=r"^[^/\s]+/\S.*$")
    variant: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    prompt: str | None = None
    tools: dict[str, bool] | None = None
    permission: dict[str, Any] | None = None
    disable: bool | None = None
    hidden: bool | None = None
    color: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}$")
    steps: int | None = Field(None, ge=1)

    @field_validator("permission")
    @classmethod
    def _permission_values(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        allowed = {"allow", "ask", "deny"}
        for key, value in (v or {}).items():
            values = value.values() if isinstance(value, dict) else [value]
            if any(x not in allowed for x in values):
                raise ValueError(f"permission.{key}: each value must be allow, ask or deny")
        return v


class ShippedForm(BaseModel):
    """One shipped form's score against the untuned agent, on the held-out steps."""

    score: float
    baseline: float
    difference: float
    ci_low: float
    ci_high: float
    steps: int
    report: str


class ExportMeta(Artifact):
    producer: str = f"ocdspy {__version__}"
    stage: str = "export"
    name: str
    agent_file: str
    agent_sha256: str
    program: str
    program_sha256: str
    run_record: str | None = None
    report: str | None = None
    baseline_score: float | None = Field(
        None, description="The program's evaluate scores (DSPy's form), not the file's."
    )
    optimized_score: float | None = None
    sessions: int | None = None
    target_model: str | None = None
    opencode_model: str | None = None
    demos: int = 0
    demos_dropped: int = Field(0, description="Demos left out: their text read as instructions.")
    plugin: str | None = Field(None, description="The demo plugin written beside the agent.")
    pool: str | None = Field(None, description="Its demo pool.")
    pool_demos: int = 0
    installed_form: str = Field("static", description="static, or plugin when one is written.")
    ship: ShipPlan | None = Field(
        None,
        description="How the static demos and the pool were chosen; any scores in it are "
        "training-side (the search's), not the held-out `shipped` scores.",
    )
    shipped: dict[str, ShippedForm] = Field(
        default_factory=dict,
        description="Each form's score as it reaches the model (`evaluate --agent`), by form.",
    )
    installed_to: str | None = None
    plugin_installed_to: list[str] = Field(default_factory=list)
    backup: str | None = None
    default_agent_set_in: str | None = None


class ExportResult(BaseModel):
    name: str
    agent_path: Path
    meta_path: Path
    installed_path: Path | None = None
    backup_path: Path | None = None
    config_path: Path | None = None
    config_backup: Path | None = None
    warnings: list[str] = Field(default_factory=list)
    demos_dropped: int = 0
    plugin_files: list[Path] = Field(default_factory=list)
    installed_plugin: list[Path] = Field(default_factory=list)
    installed_form: str = "static"
    shipped: dict[str, ShippedForm] = Field(default_factory=dict)
    front_matter: AgentFrontMatter
    program_used: str = Field("", description="Which program file, and from what kind of run.")


# ---------------------------------------------------------------------------------------------
# Names


def sanitize_name(raw: str) -> str:
    """Lower-case, `[a-z0-9-]` only: `qwen2.5-coder:7b` -> `qwen2-5-coder-7b`."""
    name = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-")
    return name


def default_agent_name(model: str) -> str:
    """The agent's name when none is given: the target model's, `-optimized`."""
    base = model.rsplit("/", 1)[-1]
    return f"{sanitize_name(base) or 'agent'}-optimized"


_OPENCODE_PROVIDERS = {
    "ollama": "ollama",
    "ollama_chat": "ollama",
    "openai": "openai",
    "anthropic": "anthropic",
}


def opencode_model(provider: str, model: str) -> str | None:
    """The `provider/model` OpenCode knows, from our settings or a DSPy/LiteLLM model string.

    `ollama_chat/qwen2.5-coder:7b` -> `ollama/qwen2.5-coder:7b`. The built-in local model runs
    inside ocdspy only, and an OpenAI-compatible endpoint has no provider name we can know:
    both give None (the agent then uses the model the user has selected in OpenCode).
    """
    if "/" in model:
        head, rest = model.split("/", 1)
        if head in _OPENCODE_PROVIDERS:
            return f"{_OPENCODE_PROVIDERS[head]}/{rest}"
    mapped = _OPENCODE_PROVIDERS.get(provider)
    if mapped is None:
        return None
    return f"{mapped}/{model}"


# ---------------------------------------------------------------------------------------------
# Reading the program


class ProgramParts(BaseModel):
    instructions: list[str]
    demos: list[dict[str, Any]]


def read_program(path: Path) -> ProgramParts:
    """Instructions and demos of every predictor in a DSPy-saved program JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a saved DSPy program ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a saved DSPy program (top level is not an object)")
    instructions: list[str] = []
    demos: list[dict[str, Any]] = []
    for key, value in data.items():
        if key == "metadata" or not isinstance(value, dict) or "signature" not in value:
            continue
        signature = value.get("signature") or {}
        text = signature.get("instructions") if isinstance(signature, dict) else None
        if isinstance(text, str) and text.strip():
            instructions.append(text.strip())
        for demo in value.get("demos") or []:
            if isinstance(demo, dict):
                demos.append(demo)
    if not instructions:
        raise DataError(
            f"{path}: no predictor with instructions found",
            hint="export a program saved by `ocdspy optimize`",
        )
    return ProgramParts(instructions=instructions, demos=demos)


# ---------------------------------------------------------------------------------------------
# Rendering the body


def _calls(demo: dict[str, Any]) -> list[tuple[str, str]]:
    plan = demo.get("plan")
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except json.JSONDecodeError:
            plan = None
    out: list[tuple[str, str]] = []
    if isinstance(plan, list):
        for call in plan:
            if isinstance(call, dict) and call.get("tool"):
                out.append((str(call["tool"]), str(call.get("target", "") or "")))
    return out


def _one_line(text: Any, limit: int = 300) -> str:
    """Session text as one short, sanitized line (see ocdspy.program.sanitize)."""
    return excerpt(text, limit)


def render_demo(demo: dict[str, Any], index: int) -> str:
    """A demonstration as a worked example a person (and a model) can read.

    It carries the task, the calls with their main arguments, their short outcomes and a short
    answer; never raw tool output, and never the prior conversation. All of it is session
    text, so all of it is sanitized; `render_body` drops demos that read as instructions.
    """
    lines = [f"### Example {index}", "", f"**Task:** {_one_line(demo.get('task', ''))}"]
    progress = str(demo.get("progress") or "").strip()
    if progress:
        steps = [_one_line(p, 200) for p in progress.splitlines()[:12]]
        lines += ["", "**Done so far:**", "", *[f"    {p}" for p in steps if p]]
    calls = _calls(demo)
    if calls:
        lines += ["", "**Tool calls:**", ""]
        lines += [
            f"{i}. `{_one_line(tool, 40)}` {_code(target)}"
            for i, (tool, target) in enumerate(calls, 1)
        ]
    elif demo.get("tool"):
        tool, target = _one_line(demo["tool"], 40), str(demo.get("target") or "")
        if tool == "finish":
            lines += ["", f"**Answer:** {_one_line(target, 600)}"]
        else:
            lines += ["", f"**Next call:** `{tool}` {_code(target)}"]
    if demo.get("response"):
        lines += ["", f"**Answer:** {_one_line(demo['response'], 600)}"]
    return "\n".join(lines)


def _code(text: str) -> str:
    text = _one_line(text, 200)
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class Guidance(BaseModel):
    sessions: int = 0
    turns: int = 0
    mean_calls: float = 0.0
    tools: list[tuple[str, int]] = Field(default_factory=list)
    commands: list[tuple[str, int]] = Field(default_factory=list)
    read_before_edit: tuple[int, int] = (0, 0)
    check_after_edit: tuple[int, int] = (0, 0)
    sequences: list[tuple[str, int, str]] = Field(
        default_factory=list,
        description="(kind of task, sessions, its most common sequence of tool steps).",
    )


_CD_PREFIX = re.compile(r"^\s*cd\s+(?:\"[^\"]*\"|'[^']*'|\S+)\s*(?:&&|;)\s*")
_ENV_PREFIX = re.compile(r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+")
_NEXT_COMMAND = re.compile(r"\s*(?:&&|\|\||;|\||\n)")


def shell_command(line: str) -> str | None:
    """The command a bash call runs, as a project habit: `cd DIR && python3 -m pytest -q`
    is `python3 -m pytest -q` (a leading `cd DIR &&` is where, not what), environment
    assignments go, and only the first command of a chain counts. None for a bare `cd`."""
    text = line
    while (match := _CD_PREFIX.match(text)) is not None:
        text = text[match.end() :]
    text = _ENV_PREFIX.sub("", text)
    first = _NEXT_COMMAND.split(text, maxsplit=1)[0]
    command = " ".join(first.split())
    if not command or command.split()[0] == "cd":
        return None
    return clip(redact_text(command), 80)


# Kinds of task, first match wins; a small keyword rule on the turn's request (lowercased).
TASK_KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("rename", re.compile(r"\brenam")),
    (
        "add a test",
        re.compile(r"\b(?:add|write|create|cover)\b.*\btests?\b|\btests? (?:for|that)\b"),
    ),
    (
        "list files",
        re.compile(r"\b(?:list|show)\b.*\b(?:files|folders|directory)\b|\bwhat files\b"),
    ),
    ("explain", re.compile(r"^\W*(?:why|how|what|explain|describe)\b|\bexplain\b")),
    ("fix a bug", re.compile(r"\b(?:fix|bug|fail|fails|failing|broken|crash|error|wrong)")),
    ("search", re.compile(r"\b(?:where|find|search|look for|locate|which file)\b")),
]
SEQUENCE_STEPS = 6


def task_kind(task: str) -> str:
    """fix a bug, add a test, rename, explain, search, list files, or other."""
    text = " ".join(task.lower().split())
    return next((kind for kind, rule in TASK_KINDS if rule.search(text)), "other")


def tool_sequence(example: Example) -> tuple[str, ...]:
    """The turn's tools in order, a repeated tool once, at most `SEQUENCE_STEPS`."""
    tools: list[str] = []
    for action in example.actions:
        if not tools or tools[-1] != action.tool:
            tools.append(action.tool)
    return tuple(tools[:SEQUENCE_STEPS])


def learn_sequences(examples: Sequence[Example]) -> list[tuple[str, int, str]]:
    """For each kind of task (`task_kind`, not "other") seen in at least 2 sessions: its most
    common sequence of tool steps, a `bash` step written with the kind's most common command."""
    sessions: dict[str, set[str]] = {}
    sequences: dict[str, Counter[tuple[str, ...]]] = {}
    commands: dict[str, Counter[str]] = {}
    for example in examples:
        kind = task_kind(example.task)
        if kind == "other" or not example.actions:
            continue
        sessions.setdefault(kind, set()).add(example.session_id)
        sequences.setdefault(kind, Counter())[tool_sequence(example)] += 1
        for action in example.actions:
            command = shell_command(action.target) if action.tool == "bash" else None
            if command and injection_phrase(command) is None:
                commands.setdefault(kind, Counter())[command] += 1
    out = []
    for kind, _ in TASK_KINDS:
        if len(sessions.get(kind, ())) < 2:
            continue
        common = commands.get(kind, Counter()).most_common(1)
        steps = [
            _code(tool) + (f" {_code(common[0][0])}" if tool == "bash" and common else "")
            for tool in _most_common(sequences[kind])
        ]
        out.append((kind, len(sessions[kind]), " → ".join(steps)))
    return out


def _most_common(counts: Counter[tuple[str, ...]]) -> tuple[str, ...]:
    """The most frequent sequence; on a tie the shorter, then the first seen."""
    return max(counts.items(), key=lambda kv: (kv[1], -len(kv[0])))[0]


def learn_guidance(examples_path: Path | None) -> Guidance:
    """Tool-use habits of the recorded successful turns the program was optimized on."""
    guidance = Guidance()
    if examples_path is None or not examples_path.is_file():
        return guidance
    tools: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    sessions: set[str] = set()
    calls = 0
    read_before_edit = [0, 0]
    check_after_edit = [0, 0]
    successful = [ex for ex in load_examples(examples_path) if ex.success]
    guidance.sequences = learn_sequences(successful)
    for example in successful:
        guidance.turns += 1
        sessions.add(example.session_id)
        actions = example.actions
        calls += len(actions)
        read: set[str] = set()
        edited = False
        for action in actions:
            tool, target = action.tool, action.target
            tools[tool] += 1
            command = shell_command(target) if tool == "bash" else None
            if command:
                commands[command] += 1
            if tool == "read":
                read.add(target)
            if tool in ("edit", "multiedit"):
                read_before_edit[1] += 1
                read_before_edit[0] += target in read
                edited = True
        if edited:
            check_after_edit[1] += 1
            last_edit = max(
                i for i, a in enumerate(actions) if a.tool in ("edit", "write", "multiedit")
            )
            check_after_edit[0] += any(a.tool == "bash" for a in actions[last_edit + 1 :])
    guidance.sessions = len(sessions)
    guidance.mean_calls = calls / guidance.turns if guidance.turns else 0.0
    guidance.tools = tools.most_common(8)
    guidance.commands = [
        (c, n) for c, n in commands.most_common(5) if n >= 2 and injection_phrase(c) is None
    ]
    guidance.read_before_edit = (read_before_edit[0], read_before_edit[1])
    guidance.check_after_edit = (check_after_edit[0], check_after_edit[1])
    return guidance


def render_guidance(guidance: Guidance) -> str:
    if not guidance.turns:
        return ""
    lines = [
        f"How the recorded sessions used tools ({guidance.turns} successful turns from "
        f"{guidance.sessions} sessions):",
        "",
    ]
    lines.append(f"- Keep it short: {guidance.mean_calls:.1f} tool calls per request on average.")
    if guidance.tools:
        usage = ", ".join(f"{_code(t)} {n}" for t, n in guidance.tools)
        lines.append(f"- Tools used, most common first: {usage}.")
    done, total = guidance.read_before_edit
    if total:
        lines.append(f"- Read a file before editing it ({done} of {total} edits did).")
    done, total = guidance.check_after_edit
    if total:
        lines.append(
            f"- After changing code, run a check with `bash` ({done} of {total} turns "
            "that edited did)."
        )
    if guidance.commands:
        cmds = ", ".join(_code(c) for c, _ in guidance.commands)
        lines.append(f"- Commands this project uses: {cmds}.")
    if guidance.sequences:
        lines.append("- The usual steps by kind of task:")
        lines += [f"  - {kind} ({n} sessions): {steps}" for kind, n, steps in guidance.sequences]
    lines.append("- Finish with a short answer that says what changed and where.")
    return "\n".join(lines)


# The step-wise program ends a task by predicting the pseudo-tool `finish` with the answer in
# its `target` field; inside OpenCode the agent simply replies. Instructions are translated.
_PROGRAM_PHRASES = [
    (
        re.compile(
            r"When the task is done, choose `finish` and put the final message to the user "
            r"in `target`\.?"
        ),
        "When the task is done, stop calling tools and reply to the user with a short final "
        "message.",
    ),
    (
        re.compile(r"(?:choose|call|use|pick) `?finish`?(?: as the (?:next )?tool)?", re.I),
        "stop calling tools and reply",
    ),
    (re.compile(r"\bin `target`"), "in your reply"),
]


def for_opencode(instructions: str) -> str:
    """Program-only wording (`finish`, output field names) rewritten for an agent prompt."""
    for pattern, replacement in _PROGRAM_PHRASES:
        instructions = pattern.sub(replacement, instructions)
    return instructions


def render_body(
    parts: ProgramParts,
    guidance: Guidance,
    *,
    demos_shown: int = DEMOS_SHOWN,
    examples: Sequence[Example] = (),
    static_steps: Sequence[Step] | None = None,
) -> str:
    """The agent's system prompt. Demos that read as instructions are left out (`export_agent`
    counts them in a warning).

    With `static_steps` (`ship.plan_static`'s choice from the training split), those steps are
    the demos; otherwise the program's first `demos_shown` demos.

    A demo traced to its recorded step in `examples` (the training split) is written exactly as
    the ocdspy plugin writes demos and as the conversation reaches a local model
    (`select.render_demo`: `user:`, `call: TOOL {json}`, `result:` lines): a small model copies
    what it sees in the form it meets at run time. Others fall back to a readable summary.
    """
    sections = ["\n\n".join(clean_text(for_opencode(text)) for text in parts.instructions)]
    demos = split_demos(parts.demos)[0][:demos_shown] if static_steps is None else []
    if static_steps:
        rendered = [select_render_demo(*step) for step in static_steps]
        sections.append("## Worked examples\n\n" + DEFAULT_INTRO + "\n\n" + "\n\n".join(rendered))
    if demos:
        steps = demo_steps(demos, examples)
        rendered = [
            select_render_demo(*step) if step else render_demo(demo, i)
            for i, (demo, step) in enumerate(zip(demos, steps, strict=True), 1)
        ]
        intro = DEFAULT_INTRO + "\n\n" if any(steps) else ""
        sections.append("## Worked examples\n\n" + intro + "\n\n".join(rendered))
    text = render_guidance(guidance)
    if text:
        sections.append("## Tool use\n\n" + text)
    return "\n\n".join(sections).strip() + "\n"


def program_steps(parts: ProgramParts, examples: Sequence[Example]) -> list[Step]:
    """The program's shown demos traced to their recorded training steps."""
    return [s for s in demo_steps(split_demos(parts.demos)[0], examples) if s is not None]


def demo_steps(
    demos: Sequence[dict[str, Any]], examples: Sequence[Example]
) -> list[tuple[Example, int] | None]:
    """Each program demo's recorded (example, step), found by its `example_id` (`ID#K`, K the
    1-based step that `program.agent.next_action_examples` gives it), or None."""
    by_id = {ex.id: ex for ex in examples}
    out: list[tuple[Example, int] | None] = []
    for demo in demos:
        example_id, _, number = str(demo.get("example_id") or "").rpartition("#")
        example = by_id.get(example_id)
        step = int(number) - 1 if number.isdigit() else -1
        found = example is not None and 0 <= step <= len(example.actions)
        out.append((example, step) if found and example is not None else None)
    return out


def render_agent_file(front: AgentFrontMatter, body: str) -> str:
    fields = front.model_dump(exclude_none=True)
    head = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1000).strip()
    return f"---\n{head}\n---\n\n{body}"


def parse_agent_file(text: str) -> tuple[dict[str, Any], str]:
    """Split an agent file into (front matter, body), as OpenCode reads it."""
    match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n?(.*)$", text, re.S)
    if not match:
        raise ValueError("no YAML front matter")
    data = yaml.safe_load(match.group(1)) or {}
    if not isinstance(data, dict):
        raise ValueError("front matter is not a mapping")
    return data, match.group(2)


def check_agent_text(text: str) -> AgentFrontMatter:
    """Validate an agent file as OpenCode would, plus our own rules (no secrets, no markers)."""
    try:
        data, body = parse_agent_file(text)
        front = AgentFrontMatter.model_validate(data)
    except (ValueError, ValidationError, yaml.YAMLError) as e:
        raise OcdspyError(f"the agent file would be invalid for OpenCode: {e}") from None
    if not body.strip():
        raise OcdspyError("the agent file would have an empty prompt")
    marker = _DSPY_MARKERS.search(body)
    if marker:
        raise OcdspyError(f"the agent prompt contains a DSPy field marker: {marker.group(0)!r}")
    secrets = find_secrets(text)
    if secrets:
        kinds = ", ".join(sorted({k for k, _ in secrets}))
        raise OcdspyError(
            f"the agent prompt contains what looks like a secret ({kinds}); nothing was written",
            hint="re-run `ocdspy convert` with redaction on (the default) and optimize again",
        )
    return front


# ---------------------------------------------------------------------------------------------
# Installing


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _backup(path: Path) -> Path:
    backup = path.with_name(f"{path.name}.{_stamp()}.bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.{_stamp()}-{n}.bak")
        n += 1
    try:
        shutil.copy2(path, backup)
    except OSError as e:
        raise OcdspyError(
            f"{show_path(path)}: cannot keep a backup next to it ({e.strerror or e}); "
            "nothing was changed"
        ) from None
    return backup


def install_agent(
    agent_file: Path, install_dir: Path, name: str, *, force: bool = False
) -> tuple[Path, Path | None]:
    """Copy the agent file into an OpenCode agent folder; never overwrite silently."""
    directory = install_dir.expanduser()
    if directory.name not in ("agent", "agents"):
        raise OcdspyError(
            f"{show_path(install_dir)}: OpenCode reads agents from a folder named `agent` or "
            "`agents`",
            hint="e.g. --install-to ~/.config/opencode/agents, or .opencode/agents in a project",
        )
    if not _NAME_OK.match(name):
        raise OcdspyError(
            f"agent name '{printable(name)}' is not allowed: use lowercase letters, digits and "
            "dashes"
        )
    _make_folder(directory, "agent")
    target = installed_agent(directory, name).resolve()
    if target.parent != directory.resolve():
        raise OcdspyError(f"agent name {name!r} would be written outside {show_path(directory)}")
    backup = None
    if target.exists():
        if not force:
            raise OcdspyError(
                f"{show_path(target)} already exists",
                hint="use --force to replace it (a timestamped backup is kept)",
            )
        backup = _backup(target)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copyfile(agent_file, tmp)
        tmp.replace(target)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OcdspyError(
            f"{show_path(directory)}: cannot install the agent there ({e.strerror or e})",
            hint="check the folder's permissions, or pick another with --install-to",
        ) from None
    return target, backup


def uninstall_agent(installed: Path, backup: Path | None) -> None:
    """Undo `install_agent`: the previous version back in place, or no file at all."""
    with contextlib.suppress(OSError):
        if backup is not None:
            shutil.copy2(backup, installed)
        else:
            installed.unlink(missing_ok=True)


# JSONC: JSON with // and /* */ comments and trailing commas. We edit it as text, so every
# comment and every other key stays exactly as the user wrote it.


def _scan_top_level(text: str) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """(offset of the opening brace, of the closing brace, top-level key -> value span).

    A value's span runs from just after its colon to the end of its last token, so comments
    after it stay outside.
    """
    i, n = 0, len(text)
    depth = 0
    start = end = -1
    keys: dict[str, tuple[int, int]] = {}
    key: str | None = None
    value_start = last_end = -1

    def string_end(j: int) -> int:
        j += 1
        while j < n:
            if text[j] == "\\":
                j += 2
            elif text[j] == '"':
                return j + 1
            else:
                j += 1
        raise ValueError("unterminated string")

    def close_value() -> None:
        nonlocal key, value_start
        if key is not None:
            keys[key] = (value_start, max(last_end, value_start))
        key, value_start = None, -1

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            nl = text.find("\n", i)
            i = n if nl == -1 else nl
            continue
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close == -1:
                raise ValueError("unterminated comment")
            i = close + 2
            continue
        if c.isspace():
            i += 1
            continue
        if c == '"':
            j = string_end(i)
            if depth == 1 and key is None:
                k = j
                while k < n and text[k].isspace():
                    k += 1
                if k < n and text[k] == ":":
                    key = json.loads(text[i:j])
                    value_start = last_end = k + 1
                    i = k + 1
                    continue
            last_end = i = j
            continue
        if c in "{[":
            if depth == 0:
                if c != "{":
                    raise ValueError("the top level is not an object")
                start = i
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                close_value()
                end = i
                break
        elif c == "," and depth == 1:
            close_value()
            i += 1
            continue
        last_end = i + 1
        i += 1
    if start == -1 or end == -1:
        raise ValueError("not a JSON object")
    return start, end, keys


class ConfigEdit(BaseModel):
    """A planned edit of opencode.json(c): checked before anything is installed, applied after."""

    path: Path
    text: str | None = Field(None, description="The new content; None when nothing changes.")
    exists: bool = True


def plan_default_agent(config_dir: Path, name: str) -> ConfigEdit:
    """Read opencode.json(c) in `config_dir` and work out the text with `"default_agent"` set,
    keeping comments, keys, line endings and a BOM. Raises `OcdspyError` (naming the file)
    when it cannot be read or edited; writes nothing."""
    candidates = [config_dir / "opencode.jsonc", config_dir / "opencode.json"]
    path = next((p for p in candidates if p.is_file()), None)
    value = json.dumps(name)
    if path is None:
        fresh = {"$schema": "https://opencode.ai/config.json", "default_agent": name}
        return ConfigEdit(
            path=config_dir / "opencode.json", text=json.dumps(fresh, indent=2) + "\n", exists=False
        )
    try:
        # Bytes, not read_text(): universal newlines would turn the user's CRLF into LF.
        text = path.read_bytes().decode("utf-8")
        start, end, keys = _scan_top_level(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise OcdspyError(
            f'{show_path(path)}: cannot edit ({why}); nothing was installed; set "default_agent": '
            f"{value} by hand, or export without --set-default"
        ) from None
    if "default_agent" in keys:
        start_at, end_at = keys["default_agent"]
        old = text[start_at:end_at]
        if old.strip() == value:
            return ConfigEdit(path=path)
        lead = old[: len(old) - len(old.lstrip())] or " "
        return ConfigEdit(path=path, text=text[:start_at] + lead + value + text[end_at:])
    body = text[start + 1 : end]
    newline = "\r\n" if "\r\n" in text else "\n"
    indent_match = re.search(r"\n([ \t]+)\"", body)
    indent = indent_match.group(1) if indent_match else "  "
    entry = f'{newline}{indent}"default_agent": {value}' + ("," if keys else newline)
    return ConfigEdit(path=path, text=text[: start + 1] + entry + text[start + 1 :])


def apply_config_edit(edit: ConfigEdit) -> Path | None:
    """Write a planned edit: a backup first, then the new text through any symlink (a dotfiles
    setup keeps its link), with the file's mode. Returns the backup."""
    if edit.text is None:
        return None
    data = edit.text.encode("utf-8")
    if not edit.exists:
        mode = 0o666 & ~_umask()
        target, backup = edit.path, None
    else:
        target = edit.path.resolve()
        mode = stat.S_IMODE(target.stat().st_mode)
        backup = _backup(edit.path)
    try:
        with atomic_writer(target, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
    except OSError as e:
        raise OcdspyError(
            f"{show_path(edit.path)}: cannot write ({e.strerror or e}); it was not changed"
        ) from None
    return backup


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_default_agent(config_dir: Path, name: str) -> tuple[Path, Path | None]:
    """Set `"default_agent"` in opencode.json(c) in `config_dir`, keeping comments and keys."""
    edit = plan_default_agent(config_dir, name)
    return edit.path, apply_config_edit(edit)


# ---------------------------------------------------------------------------------------------
# The stage


def export_agent(
    program_path: Path,
    out_dir: Path,
    *,
    target_provider: str,
    target_model: str,
    temperature: float | None = None,
    name: str | None = None,
    mode: AgentMode = "primary",
    examples_path: Path | None = None,
    report_path: Path | None = None,
    run_record_path: Path | None = None,
    sessions: int | None = None,
    install_to: Path | None = None,
    set_default: bool = False,
    force: bool = False,
    plugin: bool = True,
    pool_k: int = 3,
    shipped: AgentsReport | None = None,
    ship: ShipPlan | None = None,
) -> ExportResult:
    """Write the agent file (+ `NAME.meta.json`) for the program into `out_dir`, and with
    `plugin` the demo plugin and its pool into `out_dir/plugins`; `install_to` copies them where
    OpenCode loads them. The description carries the installed form's score (plugin when one
    is written) as `shipped` measured this very body and pool, or says it was not scored.
    Demos and pool: training turns (`examples_path`) as `ship` says (`ocdspy.program.ship`)."""
    warnings: list[str] = []
    _check_one_line(provider=target_provider, model=target_model)
    agent_name = _agent_name(name, target_model, warnings)
    _check_install_options(mode, install_to, set_default)
    parts = read_program(program_path)
    report = _read_report(report_path)
    model = _opencode_model_or_warn(target_provider, target_model, warnings)
    dropped = split_demos(parts.demos)[1]
    if dropped:
        warnings.append(dropped_warning(dropped))
    plan = ship or ShipPlan(k=max(1, pool_k))
    body, shown, pool = _render_shipped(agent_name, parts, examples_path, plan, plugin=plugin)
    installed_form = "plugin" if pool is not None else "static"
    forms = _scores_or_warn(shipped, body, pool, installed_form, warnings)
    front = _front_matter(
        description=_description(target_model, sessions, forms.get(installed_form)),
        mode=mode,
        model=model,
        temperature=temperature,
    )
    text = render_agent_file(front, body)
    check_agent_text(text)
    files = AgentFiles(out_dir, agent_name)
    _write_agent_file(files.agent_path, text)
    result = ExportResult(
        name=agent_name,
        agent_path=files.agent_path,
        meta_path=files.meta_path,
        front_matter=front,
        warnings=warnings,
        demos_dropped=dropped,
        plugin_files=_write_plugin(out_dir, agent_name, pool),
        installed_form=installed_form,
        shipped=forms,
    )
    if install_to is not None:
        _install(result, install_to, set_default=set_default, force=force)
    meta = ExportMeta(
        name=agent_name,
        agent_file=files.agent_path.name,
        agent_sha256=bytes_sha256(text.encode("utf-8")),
        program=str(program_path),
        program_sha256=bytes_sha256(program_path.read_bytes()),
        run_record=str(run_record_path) if run_record_path else None,
        sessions=sessions,
        target_model=f"{target_provider}/{target_model}",
        opencode_model=model,
        demos=shown,
        demos_dropped=dropped,
        installed_form=installed_form,
        ship=plan,
        shipped=forms,
    )
    _complete_meta(meta, result, report_path, report, pool)
    write_model_atomic(result.meta_path, meta)
    return result


def _complete_meta(
    meta: ExportMeta,
    result: ExportResult,
    report_path: Path | None,
    report: Report | None,
    pool: DemoPool | None,
) -> None:
    """What the sidecar records besides the agent itself: the program's report, the plugin,
    and where things were installed."""
    if report is not None:
        meta.report = str(report_path)
        meta.baseline_score, meta.optimized_score = report.baseline.score, report.optimized.score
    if result.plugin_files:
        meta.plugin, meta.pool = (str(p) for p in result.plugin_files[:2])
        meta.pool_demos = len(pool.demos) if pool is not None else 0
    meta.installed_to = str(result.installed_path) if result.installed_path else None
    meta.plugin_installed_to = [str(p) for p in result.installed_plugin]
    meta.backup = str(result.backup_path) if result.backup_path else None
    meta.default_agent_set_in = str(result.config_path) if result.config_path else None


def _opencode_model_or_warn(provider: str, model: str, warnings: list[str]) -> str | None:
    name = opencode_model(provider, model)
    if name is None:
        warnings.append(
            f"the target model ({provider}/{model}) has no OpenCode name; the agent file leaves "
            "`model` out, so OpenCode uses the model selected there"
        )
    return name


def _scores_or_warn(
    shipped: AgentsReport | None,
    body: str,
    pool: DemoPool | None,
    installed_form: str,
    warnings: list[str],
) -> dict[str, ShippedForm]:
    forms = shipped_forms(shipped, body, pool)
    if installed_form not in forms:
        warnings.append(
            f"the {installed_form} form of this agent has not been scored as it reaches the "
            "model; `ocdspy pipeline` does, or `ocdspy evaluate --agent`"
        )
    return forms


def _train_examples(examples_path: Path | None) -> list[Example]:
    if examples_path is None or not examples_path.is_file():
        return []
    return load_examples(examples_path)


def _render_shipped(
    agent: str, parts: ProgramParts, examples_path: Path | None, plan: ShipPlan, *, plugin: bool
) -> tuple[str, int, DemoPool | None]:
    """(the agent body, how many demos it shows, the plugin's pool or None)."""
    examples = _train_examples(examples_path)
    static, pool = _shipped_demos(agent, parts, examples, plan, plugin=plugin)
    body = render_body(parts, learn_guidance(examples_path), examples=examples, static_steps=static)
    program_demos = min(len(split_demos(parts.demos)[0]), DEMOS_SHOWN)
    return body, len(static) if static is not None else program_demos, pool


def _shipped_demos(
    agent: str, parts: ProgramParts, examples: Sequence[Example], plan: ShipPlan, *, plugin: bool
) -> tuple[list[Step] | None, DemoPool | None]:
    """(the body's demos, the plugin's pool) chosen from the training turns as `plan` says;
    (None, None) without training turns (the body then shows the program's demos)."""
    if not examples:
        return None, None
    program = program_steps(parts, examples)
    static = plan_static(examples, program_steps=program, budget_tokens=plan.static_tokens)
    pool = None
    if plugin:
        pool = plan_pool(agent, examples, program_steps=program, k=plan.k, size=plan.pool_size)
    return static, pool if pool is not None and pool.demos else None


def _write_plugin(out_dir: Path, agent: str, pool: DemoPool | None) -> list[Path]:
    if pool is None:
        return []
    from ocdspy.plugin import write_plugin

    return write_plugin(out_dir / PLUGINS_DIR, agent, pool)


def body_sha256(body: str) -> str:
    """The identity of an agent body as OpenCode uses it (it trims the body)."""
    return bytes_sha256(body.strip().encode("utf-8"))


def shipped_forms(
    report: AgentsReport | None, body: str, pool: DemoPool | None
) -> dict[str, ShippedForm]:
    """The scores `report` holds for exactly this body (static) and this body with this pool
    (plugin), by form. A score of another body or pool says nothing about this file."""
    if report is None:
        return {}
    body_sha = body_sha256(body)
    pool_sha = pool_sha256(pool) if pool is not None else None
    forms: dict[str, ShippedForm] = {}
    for entry in report.agents:
        same_pool = entry.form == "static" or entry.pool_sha256 == pool_sha
        if entry.body_sha256 != body_sha or not same_pool or entry.difference is None:
            continue
        forms[entry.form] = ShippedForm(
            score=entry.score,
            baseline=report.baseline.score,
            difference=round(entry.difference.mean, 2),
            ci_low=round(entry.difference.ci_low, 2),
            ci_high=round(entry.difference.ci_high, 2),
            steps=entry.steps,
            report=report.json_name,
        )
    return forms


def _agent_name(name: str | None, target_model: str, warnings: list[str]) -> str:
    """The name given, sanitized (with a warning when that changed it), or the default."""
    agent_name = sanitize_name(name) if name else default_agent_name(target_model)
    if name and agent_name != name:
        warnings.append(f"agent name {name!r} was sanitized to {agent_name!r}")
    if not agent_name or not _NAME_OK.match(agent_name):
        raise OcdspyError(f"agent name {name!r} is empty once sanitized")
    return agent_name


def _check_install_options(mode: AgentMode, install_to: Path | None, set_default: bool) -> None:
    if set_default and mode == "subagent":
        raise OcdspyError(
            "--set-default needs a primary agent; this one is a subagent",
            hint="use --mode primary (or all)",
        )
    if set_default and install_to is None:
        raise OcdspyError("--set-default needs --install-to (the folder OpenCode reads)")


def _read_report(report_path: Path | None) -> Report | None:
    """The program's evaluation report, when there is one (its scores go into the sidecar as
    the program's; the agent file's own score is `shipped`'s)."""
    from ocdspy.evaluate import Report

    if report_path is None or not report_path.is_file():
        return None
    return Report.load(report_path)


def _description(target_model: str, sessions: int | None, form: ShippedForm | None) -> str:
    what = f"tuned for {target_model}" + (f" from {sessions} sessions" if sessions else "")
    if form is not None:
        what += f", score {form.baseline:.0f} → {form.score:.0f} as installed"
    else:
        what += ", not scored as installed"
    return f"Coding agent {what} (ocdspy)"


def _write_agent_file(agent_path: Path, text: str) -> None:
    try:
        write_text_atomic(agent_path, text)
    except OSError as e:
        raise OcdspyError(
            f"{show_path(agent_path.parent)}: cannot write the agent file ({e.strerror or e})"
        ) from None


def _check_one_line(**settings: str) -> None:
    """The target model's names go into the agent file: a newline there is an error, not a
    pydantic traceback."""
    for setting, value in settings.items():
        if printable(value) != value:
            raise OcdspyError(
                f"models.target.{setting}: '{printable(value)}' holds a newline or another "
                "control character; it cannot name a model in the agent file",
                hint=f"fix models.target.{setting} in config.yaml or the environment",
            )


def _front_matter(**fields: Any) -> AgentFrontMatter:
    try:
        return AgentFrontMatter(**fields)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"]) or "front matter"
        got = printable(str(first.get("input")))
        raise OcdspyError(
            f"the agent file's {where} would be invalid: {first['msg']} (got '{got}')"
        ) from None


def _install(result: ExportResult, install_to: Path, *, set_default: bool, force: bool) -> None:
    """Install the agent and, with `set_default`, make it the default: both or neither. The
    config is checked before the agent is copied; if writing it fails, the copy is undone."""
    edit = plan_default_agent(install_to.expanduser().parent, result.name) if set_default else None
    installed, backup = install_agent(result.agent_path, install_to, result.name, force=force)
    if result.plugin_files:
        result.installed_plugin = _install_plugin(result.plugin_files, install_to, force=force)
    if edit is not None:
        try:
            result.config_backup = apply_config_edit(edit)
        except OcdspyError as e:
            uninstall_agent(installed, backup)
            raise OcdspyError(f"{e.message}; the agent was not installed either") from None
        result.config_path = edit.path
    result.installed_path, result.backup_path = installed, backup


def _make_folder(directory: Path, what: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OcdspyError(
            f"{show_path(directory)}: cannot create the {what} folder ({e.strerror or e})"
        ) from None


def _install_plugin(files: Sequence[Path], install_to: Path, *, force: bool) -> list[Path]:
    """Copy the plugin and its pool into `plugins/` beside the agent folder, where OpenCode
    loads plugins. Another file of the same name is kept as a backup, as for the agent."""
    target = install_to.expanduser().parent / PLUGINS_DIR
    _make_folder(target, "plugin")
    copied = []
    for source in files:
        dest = target / source.name
        if dest.exists() and dest.read_bytes() != source.read_bytes():
            if not force:
                raise OcdspyError(
                    f"{show_path(dest)}: a different plugin file is already installed",
                    hint="pass --force to replace it (a timestamped backup is kept)",
                )
            _backup(dest)
        try:
            shutil.copy2(source, dest)
        except OSError as e:
            raise OcdspyError(f"{show_path(dest)}: cannot install ({e.strerror or e})") from None
        copied.append(dest)
    return copied


def export_program(
    settings: Settings,
    program_path: Path,
    *,
    name: str | None = None,
    mode: AgentMode = "primary",
    install_to: Path | None = None,
    set_default: bool = False,
    force: bool = False,
    plugin: bool = True,
    shipped: AgentsReport | None = None,
    ship: ShipPlan | None = None,
) -> ExportResult:
    """`export_agent` with everything else found where the other stages put it: the target
    model, the training split (for tool-use habits, demos and the session count), the program's
    evaluation report and run record. Without `ship`, the pipeline's last search when it was
    made for this program with these settings, else the settings' budget, demos per step and
    pool size as they are."""
    from ocdspy.evaluate import describe_program, record_for, report_for
    from ocdspy.lock import outputs_lock_dir, project_lock
    from ocdspy.split import load_split

    project = Project(settings)
    with project_lock(outputs_lock_dir(settings), "export"):
        remove_stale_temps(settings.outputs.prompts_dir)
        # Every input is checked against the hash its producer recorded before it is used.
        record = record_for(program_path)
        report_path = report_for(settings, program_path)
        splits = project.splits
        sessions = load_split(splits.dir).manifest.train.sessions if splits.exists() else None
        target = settings.models.target
        result = export_agent(
            program_path,
            settings.outputs.prompts_dir,
            target_provider=target.provider,
            target_model=target.model,
            temperature=target.temperature,
            name=name,
            mode=mode,
            examples_path=splits.train,
            report_path=report_path,
            run_record_path=run_record_beside(program_path) if record else None,
            sessions=sessions,
            install_to=install_to,
            set_default=set_default,
            force=force,
            plugin=plugin,
            pool_k=settings.optimization.demos_shown,
            shipped=shipped if shipped is not None else _saved_scores(settings, name),
            ship=ship or _plan_for(settings, program_path),
        )
    result.program_used = describe_program(program_path, record)
    return result


def _plan_for(settings: Settings, program_path: Path) -> ShipPlan:
    """The pipeline's searched plan for this program when it is current, else the settings'."""
    from ocdspy.pipeline import searched_plan

    return searched_plan(settings, program_path) or default_plan(settings)


def default_plan(settings: Settings) -> ShipPlan:
    """The shipped forms as the settings say, without a search."""
    o = settings.optimization
    return ShipPlan(
        k=max(1, o.demos_shown), static_tokens=o.static_demo_tokens, pool_size=o.pool_size
    )


def _saved_scores(settings: Settings, name: str | None) -> AgentsReport | None:
    """The last `evaluate --agent` scores of this agent, if any (`shipped_forms` then uses
    them only if they were measured on exactly the body and pool being written)."""
    from ocdspy.agents import AgentsReport

    agent = sanitize_name(name) if name else default_agent_name(settings.models.target.model)
    path = Project(settings).agents_report(agent).json_path
    if not path.is_file():
        return None
    try:
        return AgentsReport.load(path)
    except DataError:
        return None
