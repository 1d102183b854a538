"""Finding session inputs, telling their format from their content, and reading them.

Readers are streaming: `read_path` yields one session (or one problem) at a time, so memory
stays flat whatever the size of the corpus. A reader never raises for bad input: it yields a
`Problem` naming the file and the JSON path, and moves on to what it can still read.
"""

from __future__ import annotations

import filecmp
import glob
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from ocdspy.display import show_path
from ocdspy.sessions.model import SessionLog

Severity = Literal["error", "warning"]

SQLITE_MAGIC = b"SQLite format 3\x00"
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Problem:
    file: str
    where: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        file = show_path(self.file)
        return f"{file}: {self.where}: {self.message}" if self.where else f"{file}: {self.message}"


@dataclass
class SessionRead:
    """One session as read, with where it came from."""

    session: SessionLog
    file: Path
    format: str
    # The raw bytes' hash when a whole file is one session; used to tell true duplicates apart.
    content_key: str | None = None


ReadItem = SessionRead | Problem


@dataclass
class Source:
    """One input to read: a file or a directory tree of a known format."""

    path: Path
    format: str


@dataclass
class DiscoverResult:
    sources: list[Source] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# format name -> reader. Other modules register theirs (OpenCode export, database, storage tree).
Reader = Callable[[Path], Iterator[ReadItem]]
READERS: dict[str, Reader] = {}
# JSON formats other than the plugin's, read from an already-parsed value: (path, value, hash).
ValueReader = Callable[[Path, Any, str], Iterator[ReadItem]]
VALUE_READERS: dict[str, ValueReader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    def deco(reader: Reader) -> Reader:
        READERS[name] = reader
        return reader

    return deco


# ---------------------------------------------------------------------------------------------
# Discovery


def is_storage_tree(folder: Path) -> bool:
    """Shaped like OpenCode's legacy `storage/` tree."""
    return all((folder / name).is_dir() for name in ("session", "message", "part"))


def _sniff_file(path: Path) -> str | None:
    """Tell a file's format from its first bytes; None for files that are no session input.
    Raises OSError when the file cannot be read."""
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(SQLITE_MAGIC):
        return "opencode-db"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if path.suffix.lower() == ".json" or stripped[:1] in (b"{", b"["):
        return sniff_json_head(stripped) if stripped else "json"
    return None


_NOT_REGULAR = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _file_kind(path: Path) -> tuple[str, str]:
    """("dir" | "file" | "missing" | "bad", why it is bad). Only regular files are read: a FIFO
    or a device would block or never end."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing", "no such file or directory"
    except OSError as e:
        return "bad", f"cannot read: {e.strerror or e}"
    if stat.S_ISDIR(mode):
        return "dir", ""
    if stat.S_ISREG(mode):
        return "file", ""
    what = _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")
    return "bad", f"{what}, not a regular file; skipped"


_EXPORT_HEAD = re.compile(rb'^\{\s*"info"\s*:\s*\{')
_PLUGIN_KEYS = re.compile(rb'"(?:examples|session|generated|totalExamples)"\s*:')


def sniff_json_head(head: bytes) -> str:
    """Guess a JSON file's format from its first bytes; "json" when unsure (decided on parse)."""
    if _EXPORT_HEAD.match(head) and b'"messages"' not in head[:16]:
        return "opencode-export"
    if _PLUGIN_KEYS.search(head):
        return "plugin"
    return "json"


def discover(paths: Iterable[Path | str]) -> DiscoverResult:
    """Expand files, directories (recursively) and glob patterns into readable sources.

    Inside directories, `*.json` files and SQLite databases are taken, hidden entries skipped;
    a directory shaped like OpenCode's legacy `storage/` tree is one source. A file named
    explicitly is always taken, whatever its name. Only regular files are read: a FIFO, a
    device or an unreadable file or directory is a problem naming it, and the rest goes on.
    """
    result = DiscoverResult()
    seen: set[Path] = set()

    def problem(path: Path | str, message: str) -> None:
        found = Problem(str(path), "", message)
        if found not in result.problems:  # named twice, or named and matched by a pattern
            result.problems.append(found)

    def add(path: Path, fmt: str | None) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.sources.append(Source(path, fmt or "unknown"))

    def take(path: Path, kind: str, why: str) -> None:
        if kind == "dir":
            _walk(path, add, problem, set())
        elif kind == "file":
            try:
                add(path, _sniff_file(path))
            except OSError as e:
                problem(path, f"cannot read: {e.strerror or e}")
        else:
            problem(path, why)

    for raw in paths:
        path = Path(raw).expanduser()
        kind, why = _file_kind(path)
        if kind == "missing" and _GLOB_CHARS.search(str(raw)):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                problem(raw, "no file matches this pattern")
            for match in matches:
                take(Path(match), *_file_kind(Path(match)))
            continue
        take(path, kind, why)
    return result


def _walk(
    root: Path,
    add: Callable[[Path, str | None], None],
    problem: Callable[[Path, str], None],
    visited: set[tuple[int, int]],
) -> None:
    try:
        info = root.stat()
        if (info.st_dev, info.st_ino) in visited:
            return  # a symlink back to a folder already walked
        visited.add((info.st_dev, info.st_ino))
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as e:
        problem(root, f"cannot read the directory: {e.strerror or e}")
        return
    if is_storage_tree(root):
        add(root, "opencode-storage")
        return
    storage = root / "storage"
    if storage.is_dir() and is_storage_tree(storage):
        add(storage, "opencode-storage")
    for entry in entries:
        child = Path(entry.path)
        if entry.name.startswith(".") or child == storage:
            continue
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:
            continue
        if is_dir:
            _walk(child, add, problem, visited)
        elif is_file:
            suffix = child.suffix.lower()
            if suffix not in (".json", ".db", ".sqlite", ""):
                continue
            try:
                fmt = _sniff_file(child)
            except OSError as e:
                problem(child, f"cannot read: {e.strerror or e}")
                continue
            if fmt is None and suffix != ".json":
                continue
            add(child, fmt or "json")


# ---------------------------------------------------------------------------------------------
# Reading


def read_source(source: Source) -> Iterator[ReadItem]:
    reader = READERS.get(source.format)
    if source.format in ("json", "plugin", "opencode-export"):
        reader = READERS["json"]
    if reader is None:
        yield Problem(
            str(source.path),
            "",
            f"unrecognized input (format '{source.format}'): expected a plugin session log, "
            "an `opencode export` JSON file, an opencode.db database or a storage/ directory",
        )
        return
    try:
        yield from reader(source.path)
    except OSError as e:
        yield Problem(str(source.path), "", f"cannot read: {e.strerror or e}")


def json_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_NONFINITE = re.compile(rb"[:\[,]\s*(-?Infinity|NaN)\s*[,\]}]")


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line} column {column}"


def validation_problems(file: str, e: ValidationError, *, limit: int = 20) -> list[Problem]:
    problems: list[Problem] = []
    errors = e.errors(include_url=False)
    for err in errors[:limit]:
        where = json_path(err["loc"])
        message = err["msg"]
        if err["type"] == "model_type" and not err["loc"]:
            got = type(err.get("input")).__name__
            message = f"top level must be a JSON object (a session log), got {_json_type(got)}"
        elif err["type"] == "missing" and tuple(err["loc"]) == ("examples",):
            message = "not a session log: no 'examples' array at the top level"
            where = ""
        elif err["type"] == "missing":
            message = "required field is missing"
        problems.append(Problem(file, where, message))
    if len(errors) > limit:
        problems.append(Problem(file, "", f"... and {len(errors) - limit} more problems"))
    return problems


def _json_type(pyname: str) -> str:
    return {
        "list": "an array",
        "str": "a string",
        "int": "a number",
        "float": "a number",
        "bool": "a boolean",
        "NoneType": "null",
    }.get(pyname, pyname)


_UNREADABLE = object()


def parse_json_bytes(path: Path, data: bytes) -> tuple[Any, list[Problem]]:
    """Decode JSON bytes leniently: bad UTF-8 is replaced (with a warning); syntax errors are
    returned as problems with line and column. Returns (value, problems); the value is
    `_UNREADABLE` when nothing could be parsed."""
    import json

    problems: list[Problem] = []
    file = str(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(
            Problem(
                file,
                "",
                f"not valid UTF-8 at byte {e.start}; invalid bytes were replaced with U+FFFD",
                "warning",
            )
        )
        text = data.decode("utf-8", errors="replace")
    if not text.strip():
        return _UNREADABLE, [*problems, Problem(file, "", "file is empty")]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        truncated = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        what = "file is truncated (JSON ends early)" if truncated else "invalid JSON"
        return _UNREADABLE, [
            *problems,
            Problem(file, "", f"{what}: {e.msg} at line {e.lineno} column {e.colno}"),
        ]
    except RecursionError:
        return _UNREADABLE, [*problems, Problem(file, "", "JSON is nested too deeply to read")]
    return value, problems


def nonfinite_warning(file: str, data: bytes) -> Problem | None:
    """JSON has no NaN or Infinity; Python's json module writes them anyway. Read them as null."""
    if b"NaN" not in data and b"Infinity" not in data:
        return None
    found = _NONFINITE.search(data)
    if found is None:
        return None
    return Problem(
        file,
        "",
        f"{found.group(1).decode()} at {_position(data, found.start(1))} is not valid JSON; "
        "read as null",
        "warning",
    )


@register_reader("json")
def read_json_file(path: Path) -> Iterator[ReadItem]:
    """Read one JSON file: a plugin session log or an `opencode export` file."""
    data = path.read_bytes()
    file = str(path)
    # Duplicate ids are rare; their contents are compared only then (see iter_sessions).
    content_key = f"file:{path}"
    warn = nonfinite_warning(file, data)
    if warn:
        yield warn
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    fmt = sniff_json_head(head)
    if fmt == "plugin":
        # Fast path: pydantic parses and validates in one pass, in Rust.
        try:
            yield SessionRead(SessionLog.model_validate_json(data), path, "plugin", content_key)
            return
        except ValidationError as e:
            if not all(err["type"] == "json_invalid" for err in e.errors()):
                yield from validation_problems(file, e)
                return
        # Invalid JSON or bad UTF-8: fall through to the lenient path for a precise message.
    value, problems = parse_json_bytes(path, data)
    yield from problems
    if value is _UNREADABLE:
        return
    if isinstance(value, dict) and "info" in value and "messages" in value:
        export_reader = VALUE_READERS.get("opencode-export")
        if export_reader is None:
            yield Problem(
                file, "", "this is an `opencode export` file, which this version cannot read"
            )
            return
        yield from export_reader(path, value, content_key)
        return
    if isinstance(value, dict) and "examples" not in value:
        keys = ", ".join(sorted(value)[:6]) or "none"
        yield Problem(
            file,
            "",
            f"not a session log: no 'examples' array at the top level (keys found: {keys})",
        )
        return
    try:
        yield SessionRead(SessionLog.model_validate(value), path, "plugin", content_key)
    except ValidationError as e:
        yield from validation_problems(file, e)


def read_paths(paths: Iterable[Path | str]) -> tuple[list[Source], Iterator[ReadItem]]:
    found = discover(paths)

    def items() -> Iterator[ReadItem]:
        yield from found.problems
        yield from iter_sessions(found.sources)

    return found.sources, items()


def _same_content(first: str | None, second: str | None) -> bool:
    """Keys are `file:PATH` (compare the files' bytes, only now that ids collide) or hashes."""
    if first is None or second is None:
        return False
    if first.startswith("file:") and second.startswith("file:"):
        try:
            return filecmp.cmp(first[5:], second[5:], shallow=False)
        except OSError:
            return False
    return first == second


def _origin(item: SessionRead) -> str:
    """Where a session's content came from: a plugin's own log, or an OpenCode store (directly
    or through a file `ocdspy collect` wrote, which records it as `sourceFormat`)."""
    extra = item.session.model_extra or {}
    return str(extra.get("sourceFormat") or item.format)


# How deep a tool's arguments, a result or a message may nest. Real tool calls stay within a
# few levels; past this, writing the data out would exceed pydantic's serializer and Python's
# recursion limits (a traceback at ~255 and ~1000 levels).
MAX_NESTING = 32
CLIPPED = "[clipped: nested too deeply]"


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _clipped(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict):
        if depth >= MAX_NESTING:
            return CLIPPED
        return {key: _clipped(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        if depth >= MAX_NESTING:
            return CLIPPED
        return [_clipped(item, depth + 1) for item in value]
    return value


def clip_nesting(item: SessionRead) -> Iterator[Problem]:
    """Replace what nests deeper than MAX_NESTING in the free-form fields (tool arguments and
    results, message contents, diagnostics) by a marker, with a warning naming each field."""

    def check(obj: Any, attr: str, where: str) -> Iterator[Problem]:
        value = getattr(obj, attr)
        if _depth_exceeds(value, MAX_NESTING):
            setattr(obj, attr, _clipped(value))
            yield Problem(
                str(item.file),
                where,
                f"nested more than {MAX_NESTING} levels deep; the deeper part was replaced by "
                f"{CLIPPED!r}",
                "warning",
            )

    for turn_index, turn in enumerate(item.session.examples):
        at = f"examples[{turn_index}]"
        diagnostics = turn.input.context.lspDiagnostics
        if diagnostics is not None:
            for attr in ("errors", "warnings"):
                where = f"{at}.input.context.lspDiagnostics.{attr}"
                yield from check(diagnostics, attr, where)
        for position, message in enumerate(turn.input.conversationHistory):
            yield from check(
                message, "content", f"{at}.input.conversationHistory[{position}].content"
            )
        for position, action in enumerate(turn.actions):
            for attr in ("args", "result"):
                yield from check(action, attr, f"{at}.actions[{position}].{attr}")


def iter_sessions(sources: Iterable[Source]) -> Iterator[ReadItem]:
    """Read sources in order, dropping repeated session ids.

    The same session often arrives twice (a plugin log and an `opencode export` of it, a file
    `collect` wrote next to the database it came from, a file copied into two folders). The first
    copy wins and the repeat is a warning. Only two copies of the same origin whose contents
    differ are an error: one of them is not what it claims to be.
    """
    seen: dict[str, tuple[str, str | None, str]] = {}
    for source in sources:
        for item in read_source(source):
            if isinstance(item, Problem):
                yield item
                continue
            yield from clip_nesting(item)
            session_id = item.session.session_id
            if session_id is None:
                yield item
                continue
            first = seen.get(session_id)
            if first is None:
                seen[session_id] = (str(item.file), item.content_key, _origin(item))
                yield item
                continue
            first_file, first_key, first_origin = first
            comparable = first_key is not None and item.content_key is not None
            if (
                comparable
                and first_origin == _origin(item)
                and not _same_content(first_key, item.content_key)
            ):
                yield Problem(
                    str(item.file),
                    "session",
                    f"duplicate session id '{session_id}' (also in "
                    f"{show_path(first_file)}) with different content; this copy is skipped",
                )
            else:
                yield Problem(
                    str(item.file),
                    "session",
                    f"session '{session_id}' was already read from {show_path(first_file)}; "
                    "this copy is skipped",
                    "warning",
                )
