"""convert: sessions -> `examples.jsonl`, one DSPy-ready example per turn, plus a manifest.

An example is one turn: the user's task, what the agent knew (context, prior conversation),
what it did (actions, in order) and what it answered. Every string is redacted before it is
written. The output is deterministic: the same inputs and settings give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import (
    Artifact,
    Staged,
    file_sha256,
    kept_after_interrupt,
    on_interrupt,
    read_verified,
    remove_stale_temps,
)
from ocdspy.errors import DataError
from ocdspy.layout import EXAMPLES_FILE, MANIFEST_FILE
from ocdspy.lock import data_lock_dir, project_lock
from ocdspy.redact import redact_text, redact_value
from ocdspy.sessions.model import Action, Context, SessionLog, Turn
from ocdspy.sessions.read import Problem, SessionRead, Source, discover, iter_sessions

HISTORY_MESSAGE_CHARS = 600
_PLACEHOLDER = re.compile(r"\[REDACTED:[a-z-]+\]")

# The argument that says what a tool call was about (FORMATS.md section 4).
_MAIN_ARG: dict[str, tuple[str, ...]] = {
    "read": ("filePath", "path"),
    "write": ("filePath", "path"),
    "edit": ("filePath", "path"),
    "multiedit": ("filePath", "path"),
    "bash": ("command",),
    "glob": ("pattern",),
    "grep": ("pattern",),
    "list": ("path",),
    "webfetch": ("url",),
    "websearch": ("query",),
    "codesearch": ("query",),
    "task": ("subagent_type", "description"),
    "skill": ("name",),
    "lsp": ("operation", "filePath"),
}


class ExampleAction(BaseModel):
    step: int
    tool: str
    target: str = Field(description="The main argument: file, command, pattern, URL…")
    args: dict[str, Any] = Field(default_factory=dict)
    success: bool | None = None
    result: str = ""
    result_truncated: bool = False


class Example(BaseModel):
    """One turn of a recorded session, ready to become a `dspy.Example`."""

    id: str
    session_id: str
    turn_index: int
    source: str
    source_format: str
    task: str
    context: str = Field(description="Compact rendering of the working context.")
    history: str = Field(description="Prior conversation, oldest first, one line per message.")
    actions: list[ExampleAction] = Field(default_factory=list)
    response: str = ""
    success: bool
    task_completed: bool | None = None
    agent: str | None = None
    model: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    parent_session_id: str | None = None


class SourceEntry(BaseModel):
    path: str
    format: str
    sha256: str
    sessions: int = 0
    examples: int = 0


class ConvertSettings(BaseModel):
    require_success: bool
    result_max_chars: int
    redact: bool


class ConvertManifest(Artifact):
    producer: str = f"ocdspy {__version__}"
    stage: str = "convert"
    settings: ConvertSettings
    sources: list[SourceEntry]
    sessions_read: int
    turns_in: int
    examples_kept: int
    dropped: dict[str, int]
    redactions: dict[str, int]
    problems: list[str]
    output: str
    output_sha256: str


class ConvertResult(BaseModel):
    examples_path: Path
    manifest_path: Path
    manifest: ConvertManifest
    cached: bool = False
    problems: list[Problem] = Field(default_factory=list)

    model_config = {"arbitrary_types_allowed": True}


# ---------------------------------------------------------------------------------------------
# Rendering


def main_argument(tool: str, args: dict[str, Any], cwd: str | None = None) -> str:
    """The argument that identifies a call: `read` -> its file, `bash` -> its command."""
    value: Any = None
    for key in _MAIN_ARG.get(tool, ()):
        if args.get(key):
            value = args[key]
            break
    if value is None and tool == "apply_patch" and isinstance(args.get("patchText"), str):
        for line in args["patchText"].splitlines():
            for marker in ("*** Update File: ", "*** Add File: ", "*** Delete File: "):
                if line.startswith(marker):
                    value = line[len(marker) :].strip()
                    break
            if value:
                break
    if value is None and tool == "todowrite" and isinstance(args.get("todos"), list):
        value = f"{len(args['todos'])} todos"
    if value is None:
        # Unknown or custom tools: the first short string argument, else nothing.
        value = next((v for v in args.values() if isinstance(v, str) and v), "")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return relative_to_cwd(text.strip(), cwd)


def relative_to_cwd(path: str, cwd: str | None) -> str:
    """Absolute paths inside the project become relative, so sessions from different checkouts
    of a project compare equal."""
    if cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1 :]
    return path


def render_result(
    value: Any, max_chars: int, redact: bool, counts: Counter[str]
) -> tuple[str, bool]:
    if value is None:
        return "", False
    text = (
        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    )
    truncated = len(text) > max_chars
    if truncated:
        # Redact a little past the cut, so a secret straddling it is still recognised whole.
        window = text[: max_chars + 256]
        if redact:
            window = redact_text(window, counts)
        cut = max_chars
        for m in _PLACEHOLDER.finditer(window):
            if m.start() < cut < m.end():
                cut = m.end()
        return window[:cut] + f"\n… [truncated {len(text) - max_chars} chars]", True
    return (redact_text(text, counts) if redact else text), False


def _diag_line(d: Any) -> str:
    if isinstance(d, dict):
        loc = d.get("file") or ""
        if d.get("line") is not None:
            loc = f"{loc}:{d['line']}"
        msg = str(d.get("message", "")).strip()
        return f"{loc} {msg}".strip()
    return str(d)


def render_context(ctx: Context, *, max_files: int = 20, max_diagnostics: int = 5) -> str:
    lines: list[str] = []
    if ctx.workingDirectory or ctx.projectType or ctx.fileCount is not None:
        bits = [
            b
            for b in (
                ctx.projectType,
                f"{ctx.fileCount} files" if ctx.fileCount is not None else None,
            )
            if b
        ]
        extra = f" ({', '.join(bits)})" if bits else ""
        lines.append(f"project: {ctx.workingDirectory or '?'}{extra}")
    if ctx.gitStatus is not None:
        g = ctx.gitStatus
        status = "; ".join(s.strip() for s in (g.status or "").splitlines() if s.strip())
        parts = [g.branch or "?"]
        if g.uncommittedChanges is not None:
            parts.append(f"{g.uncommittedChanges} uncommitted")
        lines.append(f"git: {', '.join(parts)}" + (f": {status}" if status else ""))
    if ctx.relevantFiles:
        files = [relative_to_cwd(f, ctx.workingDirectory) for f in ctx.relevantFiles[:max_files]]
        more = len(ctx.relevantFiles) - len(files)
        lines.append("files: " + ", ".join(files) + (f" (+{more} more)" if more > 0 else ""))
    if ctx.lspDiagnostics is not None:
        d = ctx.lspDiagnostics
        if d.errors or d.warnings:
            shown = [_diag_line(x) for x in d.errors[:max_diagnostics]]
            lines.append(
                f"diagnostics: {len(d.errors)} errors, {len(d.warnings)} warnings"
                + ("".join(f"\n  - {s}" for s in shown) if shown else "")
            )
        else:
            lines.append("diagnostics: none")
    return "\n".join(lines)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [c.get("text", "") if isinstance(c, dict) else str(c) for c in content]
        return " ".join(t for t in texts if t)
    return json.dumps(content, ensure_ascii=False) if content is not None else ""


def render_history(turn: Turn, *, max_chars: int = HISTORY_MESSAGE_CHARS) -> str:
    out = []
    for msg in turn.input.conversationHistory:
        text = " ".join(_content_text(msg.content).split())
        if len(text) > max_chars:
            text = text[:max_chars] + " …"
        out.append(f"{msg.role}: {text}")
    return "\n".join(out)


def _metrics(session: SessionLog, turn: Turn) -> dict[str, Any]:
    out: dict[str, Any] = {"tool_calls": len(turn.actions)}
    m = turn.outcome.metrics if turn.outcome and turn.outcome.metrics else None
    if m is not None:
        for key, name in (
            ("filesModified", "files_modified"),
            ("timeToCompletion", "time_to_completion"),
            ("lspErrorsCleared", "lsp_errors_cleared"),
            ("cacheHitRate", "cache_hit_rate"),
        ):
            v = getattr(m, key)
            if v is not None and v == v:  # drop NaN
                out[name] = v
        if m.tokenCost is not None:
            out["tokens_input"] = m.tokenCost.input
            out["tokens_output"] = m.tokenCost.output
    ev = turn.outcome.evaluation if turn.outcome and turn.outcome.evaluation else None
    if ev is not None:
        for key in ("correctness", "efficiency", "minimalEdits"):
            v = getattr(ev, key)
            if v is not None and v == v:
                out[f"evaluation_{key}"] = v
    if (
        turn.metadata
        and turn.metadata.duration is not None
        and turn.metadata.duration == turn.metadata.duration
    ):
        out["duration"] = turn.metadata.duration
    cost = (turn.model_extra or {}).get("cost")
    if isinstance(cost, (int, float)):
        out["cost"] = cost
    return out


def _action(
    a: Action, index: int, cwd: str | None, settings: ConvertSettings, counts: Counter[str]
) -> ExampleAction:
    args = redact_value(a.args, counts) if settings.redact else a.args
    result, truncated = render_result(a.result, settings.result_max_chars, settings.redact, counts)
    return ExampleAction(
        step=a.step if a.step is not None else index + 1,
        tool=a.tool,
        target=main_argument(a.tool, args, cwd),
        args=args,
        success=a.success,
        result=result,
        result_truncated=truncated,
    )


def turn_to_example(
    read: SessionRead, index: int, settings: ConvertSettings, counts: Counter[str], source: str
) -> Example:
    session = read.session
    turn = session.examples[index]
    cwd = turn.input.context.workingDirectory
    red = (lambda s: redact_text(s, counts)) if settings.redact else (lambda s: s)
    sid = session.session_id or _anonymous_id(read)
    outcome = turn.outcome
    extra = session.model_extra or {}
    return Example(
        id=f"{sid}/{index}",
        session_id=sid,
        turn_index=index,
        source=source,
        source_format=read.format,
        task=red(turn.input.task),
        context=red(render_context(turn.input.context)),
        history=red(render_history(turn)),
        actions=[_action(a, i, cwd, settings, counts) for i, a in enumerate(turn.actions)],
        response=red(turn.output.response),
        success=session.turn_success(index),
        task_completed=outcome.taskCompleted if outcome else None,
        agent=turn.agent.name if turn.agent else None,
        model=turn.agent.model if turn.agent else None,
        metrics=_metrics(session, turn),
        parent_session_id=extra.get("parentSession")
        if isinstance(extra.get("parentSession"), str)
        else None,
    )


def _anonymous_id(read: SessionRead) -> str:
    return "file_" + hashlib.sha256(str(read.file).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The stage


def _display_path(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def _hash_or_error(path: Path) -> str:
    """A file's hash; what made it unreadable in its place (the reader reports the file)."""
    try:
        return file_sha256(path)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"


def source_hash(source: Source) -> str:
    if source.path.is_dir():
        h = hashlib.sha256()
        try:
            files = sorted(p for p in source.path.rglob("*") if p.is_file())
        except OSError as e:
            return f"unreadable: {e.strerror or e}"
        for f in files:
            h.update(f.relative_to(source.path).as_posix().encode() + b"\0")
            h.update(_hash_or_error(f).encode())
        return h.hexdigest()
    return _hash_or_error(source.path)


def convert(
    inputs: list[Path],
    out_dir: Path,
    *,
    require_success: bool = True,
    result_max_chars: int = 2000,
    redact: bool = True,
    base_dir: Path | None = None,
    force: bool = False,
) -> ConvertResult:
    """Convert every readable session under `inputs` into `out_dir/examples.jsonl`.

    Unreadable files are reported and skipped; the run goes on. Re-running with unchanged inputs
    and settings rewrites nothing (`cached=True`) unless `force`. The examples and the manifest
    (which holds the examples' hash) are renamed into place together at the end, under the
    project lock; Ctrl-C before that leaves both as they were and raises `Interrupted`.
    """
    settings = ConvertSettings(
        require_success=require_success, result_max_chars=result_max_chars, redact=redact
    )
    staged = Staged()
    files = f"{out_dir / EXAMPLES_FILE} and {MANIFEST_FILE}"
    with (
        on_interrupt(lambda: kept_after_interrupt(staged, files)),
        project_lock(data_lock_dir(out_dir), "convert"),
    ):
        remove_stale_temps(out_dir)
        return _convert(inputs, out_dir, settings, staged, base_dir=base_dir, force=force)


def _convert(
    inputs: list[Path],
    out_dir: Path,
    settings: ConvertSettings,
    staged: Staged,
    *,
    base_dir: Path | None,
    force: bool,
) -> ConvertResult:
    found = discover(inputs)
    if not found.sources:
        where = ", ".join(str(p) for p in inputs)
        raise DataError(
            f"No session logs found in {where}",
            hint="put plugin session logs, `opencode export` files or an opencode.db there, "
            "or run `ocdspy collect`",
        )
    base = (
        base_dir
        if base_dir is not None
        else (inputs[0] if len(inputs) == 1 and inputs[0].is_dir() else None)
    )
    entries = {
        id(s): SourceEntry(path=_display_path(s.path, base), format=s.format, sha256=source_hash(s))
        for s in found.sources
    }
    examples_path = out_dir / EXAMPLES_FILE
    manifest_path = out_dir / MANIFEST_FILE

    if not force and examples_path.is_file() and manifest_path.is_file():
        try:
            old = ConvertManifest.model_validate_json(manifest_path.read_bytes())
        except ValueError:
            old = None
        if (
            old is not None
            and old.settings == settings
            and [(e.path, e.sha256) for e in old.sources]
            == [(e.path, e.sha256) for e in entries.values()]
            and old.producer == ConvertManifest.model_fields["producer"].default
            and file_sha256(examples_path) == old.output_sha256
        ):
            return ConvertResult(
                examples_path=examples_path,
                manifest_path=manifest_path,
                manifest=old,
                cached=True,
                problems=list(found.problems),
            )

    run = _Run(problems=list(found.problems))
    by_path = {str(s.path): entries[id(s)] for s in found.sources}
    with staged:
        with staged.writer(examples_path, "wb") as f:
            output_sha256 = _write_examples(f, found.sources, by_path, settings, run)
        manifest = ConvertManifest(
            settings=settings,
            sources=list(entries.values()),
            sessions_read=run.sessions_read,
            turns_in=run.turns_in,
            examples_kept=run.kept,
            dropped=dict(sorted(run.dropped.items())),
            redactions=dict(sorted(run.counts.items())),
            problems=[
                str(Problem(_display_path(Path(p.file), base), p.where, p.message, p.severity))
                for p in run.problems
            ],
            output=EXAMPLES_FILE,
            output_sha256=output_sha256,
        )
        staged.model(manifest_path, manifest)  # last: it names the examples' hash
    return ConvertResult(
        examples_path=examples_path,
        manifest_path=manifest_path,
        manifest=manifest,
        problems=run.problems,
    )


class _Run:
    """What one conversion counted."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.sessions_read = self.turns_in = self.kept = 0


def _write_examples(
    f: Any,
    sources: list[Source],
    by_path: dict[str, SourceEntry],
    settings: ConvertSettings,
    run: _Run,
) -> str:
    """Write one JSON line per kept turn to `f`; return the SHA-256 of what was written."""
    h = hashlib.sha256()
    for item in iter_sessions(sources):
        if isinstance(item, Problem):
            run.problems.append(item)
            if item.severity == "error" and item.where == "session":
                run.dropped["duplicate session"] += 1
            continue
        run.sessions_read += 1
        entry = by_path.get(str(item.file))
        if entry is not None:
            entry.sessions += 1
        for i, turn in enumerate(item.session.examples):
            run.turns_in += 1
            if not turn.input.task.strip():
                run.dropped["empty task"] += 1
                continue
            if not turn.actions and not turn.output.response.strip():
                run.dropped["no actions and no response"] += 1
                continue
            if settings.require_success and not item.session.turn_success(i):
                run.dropped["unsuccessful (require_success)"] += 1
                continue
            source = entry.path if entry is not None else item.file.as_posix()
            ex = turn_to_example(item, i, settings, run.counts, source)
            line = ex.model_dump_json().encode("utf-8") + b"\n"
            h.update(line)
            f.write(line)
            run.kept += 1
            if entry is not None:
                entry.examples += 1
    return h.hexdigest()


def load_examples(path: Path) -> list[Example]:
    """Examples from a JSON Lines file, unchecked: stages use `load_verified_examples` or
    `ocdspy.split.load_split`, which check the file against its manifest first."""
    if not path.is_file():
        raise DataError(f"{path}: no examples file", hint="run `ocdspy convert` first")
    return parse_examples(path.read_bytes(), path)


def parse_examples(data: bytes, path: Path) -> list[Example]:
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Example.model_validate_json(line))
        except ValueError as e:
            raise DataError(
                f"{path}: line {n}: not an example ({str(e).splitlines()[0]})",
                hint="re-run `ocdspy convert`",
            ) from None
    return out


def _convert_manifest(examples_path: Path) -> tuple[ConvertManifest, Path]:
    manifest_path = examples_path.parent / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(
            f"{examples_path}: no convert manifest beside it ({manifest_path}), so its content "
            "cannot be checked",
            hint=f"re-run `{_RERUN}`",
        )
    m = ConvertManifest.load(manifest_path, hint=f"re-run `{_RERUN}`")
    if m.output != examples_path.name:
        raise DataError(
            f"{examples_path}: {manifest_path} describes {m.output}, not this file",
            hint=f"re-run `{_RERUN}`",
        )
    return m, manifest_path


_RERUN = "ocdspy convert"


def load_verified_examples(examples_path: Path) -> tuple[list[Example], ConvertManifest, str]:
    """(examples, their manifest, their SHA-256), refused unless the file is the one convert's
    manifest beside it describes (a run killed between its two renames, an edit, another
    conversion). Every stage that reads convert's output goes through here."""
    if not examples_path.is_file():
        raise DataError(f"{examples_path}: no examples file", hint="run `ocdspy convert` first")
    m, manifest_path = _convert_manifest(examples_path)
    data = read_verified(examples_path, m.output_sha256, manifest=manifest_path, rerun=_RERUN)
    return parse_examples(data, examples_path), m, m.output_sha256
