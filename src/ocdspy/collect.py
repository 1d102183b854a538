"""collect: copy sessions out of the user's OpenCode store into `data/raw`, one file per session.

The store is found the way OpenCode finds it (`$OPENCODE_DB`, then `opencode.db` in OpenCode's
data folder, then the legacy `storage/` tree) unless `--db` / `--storage` names one. It is only
ever read: the database is opened read-only, so collecting works while OpenCode runs.

Each session is written as `<session id>.json` in the plugin format (the `SessionLog` model),
with its provenance in extra fields (docs/opencode-sources.md). A small state file,
`.ocdspy-collect.json` in the output folder, remembers each session's `time_updated`; a re-run
reads and writes only sessions that are new or changed since.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import atomic_writer, on_interrupt, remove_stale_temps, temp_path
from ocdspy.errors import DataError, Interrupted
from ocdspy.layout import COLLECT_STATE_FILE
from ocdspy.lock import data_lock_dir, project_lock
from ocdspy.sessions.model import SessionLog
from ocdspy.sessions.opencode import (
    FORMAT_DB,
    FORMAT_STORAGE,
    MAPPING_VERSION,
    OpenCodeDB,
    OpenCodeStorage,
    OpenCodeStore,
    SessionHeader,
    StoreError,
    describe_db_error,
)
from ocdspy.sessions.read import SQLITE_MAGIC, Problem, SessionRead

STATE_FILE = COLLECT_STATE_FILE
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")


class StoreLocation(BaseModel):
    path: Path
    format: str
    found_by: str


class CollectResult(BaseModel):
    store: StoreLocation
    out_dir: Path
    state_path: Path
    sessions_in_store: int
    selected: int = Field(0, description="Sessions matching the filters, sub-agent ones included.")
    written: list[str] = Field(default_factory=list)
    unchanged: int = 0
    empty: int = Field(0, description="Sessions without a single user message: nothing to write.")
    problems: list[Problem] = Field(default_factory=list)

    model_config = {"arbitrary_types_allowed": True}


# ---------------------------------------------------------------------------------------------
# Finding the store


def opencode_data_dir(environ: dict[str, str] | None = None) -> Path:
    """OpenCode's data folder: `$XDG_DATA_HOME/opencode`, else `~/.local/share/opencode` (on
    every platform: OpenCode uses the XDG layout on macOS too)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(
        Path(env.get("HOME") or Path.home()) / ".local" / "share"
    )
    return Path(base) / "opencode"


def _is_storage_tree(d: Path) -> bool:
    return all((d / sub).is_dir() for sub in ("session", "message", "part"))


def find_store(
    *,
    db: Path | None = None,
    storage: Path | None = None,
    environ: dict[str, str] | None = None,
) -> StoreLocation:
    """Where to collect from: an explicit `db` / `storage`, else where OpenCode keeps its own."""
    if db is not None and storage is not None:
        raise DataError("give either --db or --storage, not both")
    if db is not None:
        return StoreLocation(path=_check_db(db, "--db"), format=FORMAT_DB, found_by="--db")
    if storage is not None:
        tree = storage / "storage" if _is_storage_tree(storage / "storage") else storage
        if not _is_storage_tree(tree):
            raise DataError(
                f"{storage}: not an OpenCode storage/ folder (it needs session/, "
                "message/ and part/)"
            )
        return StoreLocation(path=tree, format=FORMAT_STORAGE, found_by="--storage")
    env = dict(os.environ if environ is None else environ)
    data = opencode_data_dir(env)
    named = env.get("OPENCODE_DB")
    if named:
        if named == ":memory:":
            raise DataError("OPENCODE_DB is ':memory:': that OpenCode keeps no sessions on disk")
        # As OpenCode does: an absolute path is taken as is, a relative one is in its data folder.
        p = Path(named) if Path(named).is_absolute() else data / named
        return StoreLocation(
            path=_check_db(p, "$OPENCODE_DB"), format=FORMAT_DB, found_by="$OPENCODE_DB"
        )
    looked = [data / "opencode.db"]
    if looked[0].is_file():
        return StoreLocation(path=looked[0], format=FORMAT_DB, found_by=str(data))
    # Builds from other release channels name their database opencode-<channel>.db.
    channels = sorted(data.glob("opencode-*.db"), key=lambda p: p.stat().st_mtime, reverse=True)
    if channels:
        return StoreLocation(path=channels[0], format=FORMAT_DB, found_by=str(data))
    looked.append(data / "storage")
    if _is_storage_tree(data / "storage"):
        return StoreLocation(path=data / "storage", format=FORMAT_STORAGE, found_by=str(data))
    raise DataError(
        "No OpenCode session store found (looked for " + ", ".join(map(str, looked)) + ")",
        hint="pass --db PATH/opencode.db or --storage PATH/storage; `opencode db path` prints "
        "where OpenCode keeps its database",
    )


def _check_db(path: Path, how: str) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such database file (from {how})")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if head != SQLITE_MAGIC:
        raise DataError(f"{path}: not an SQLite database (from {how})")
    return path


def open_store(loc: StoreLocation, *, busy_timeout: float | None = None) -> OpenCodeStore:
    try:
        if loc.format == FORMAT_DB:
            return OpenCodeDB(loc.path, busy_timeout=busy_timeout)
        return OpenCodeStorage(loc.path)
    except StoreError as e:
        raise DataError(f"{loc.path}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Filters


_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")


def parse_since(text: str, *, now: datetime | None = None) -> int:
    """`--since` -> epoch milliseconds. Accepts a date (`2026-01-31`, local midnight), a date and
    time (`2026-01-31T14:00`, `…Z`, `…+02:00`) or an age: `30m`, `12h`, `7d`, `2w`."""
    m = _RELATIVE.match(text)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        start = (now or datetime.now(timezone.utc)) - timedelta(**{unit: int(m.group(1))})
        return int(start.timestamp() * 1000)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(
            f"--since {text!r}: not a date",
            hint="use 2026-01-31, 2026-01-31T14:00 or an age such as 7d, 12h, 2w",
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # the user's local time
    return int(dt.timestamp() * 1000)


def _under(directory: str | None, roots: list[str]) -> bool:
    if not directory:
        return False
    d = directory.rstrip("/") or "/"
    return any(d == r or d.startswith(r.rstrip("/") + "/") for r in roots)


def _agents_models(log: SessionLog) -> tuple[list[str], list[str]]:
    extra = log.model_extra or {}
    agents = {extra.get("agent")} | {t.agent.name for t in log.examples if t.agent}
    models = {extra.get("model")} | {t.agent.model for t in log.examples if t.agent}
    return (
        sorted(a for a in agents if isinstance(a, str)),
        sorted(m for m in models if isinstance(m, str)),
    )


def _model_matches(wanted: Iterable[str], models: list[str]) -> bool:
    for w in wanted:
        for m in models:
            if m == w or ("/" not in w and m.split("/", 1)[-1] == w):
                return True
    return False


# ---------------------------------------------------------------------------------------------
# State


def _load_state(path: Path, problems: list[Problem]) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("mapping") != MAPPING_VERSION:
            return {}  # sessions were mapped by other rules: collect them again
        sessions = state["sessions"]
        if not isinstance(sessions, dict):
            raise TypeError
        return sessions
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        problems.append(
            Problem(
                str(path),
                "",
                "unreadable collect state; every session is collected again",
                "warning",
            )
        )
        return {}


def _save_state(path: Path, sessions: dict[str, dict[str, Any]]) -> None:
    state = {
        "producer": f"ocdspy {__version__}",
        "mapping": MAPPING_VERSION,
        "sessions": dict(sorted(sessions.items())),
    }
    with atomic_writer(path) as f:
        json.dump(state, f, indent=1)  # streamed: no second copy of a large state in memory
        f.write("\n")


def _write_session(path: Path, text: str) -> None:
    """Replace `path` in one rename, so a reader never sees half a file. The temp name is
    unique and the file mode 0600 (it holds session text)."""
    tmp = temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def session_file_name(session_id: str) -> str:
    return _SAFE_ID.sub("_", session_id) + ".json"


# ---------------------------------------------------------------------------------------------
# The stage


def collect(
    out_dir: Path,
    *,
    db: Path | None = None,
    storage: Path | None = None,
    project: Iterable[Path] = (),
    since: str | int | None = None,
    agents: Iterable[str] = (),
    models: Iterable[str] = (),
    sessions: Iterable[str] = (),
    limit: int | None = None,
    force: bool = False,
    environ: dict[str, str] | None = None,
    busy_timeout: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CollectResult:
    """Copy the sessions of an OpenCode store into `out_dir`, one `<id>.json` each.

    Filters choose top-level sessions; each chosen session brings its sub-agent sessions along.
    `limit` keeps the most recently updated ones. Sessions already collected and unchanged since
    are skipped unless `force`.
    """
    with (
        on_interrupt(lambda: f"no session written to {out_dir}"),
        project_lock(data_lock_dir(out_dir), "collect"),
    ):
        remove_stale_temps(out_dir)
        loc = find_store(db=db, storage=storage, environ=environ)
        since_ms = parse_since(since) if isinstance(since, str) else since
        want_agents, want_models = list(agents), list(models)
        want_ids = list(dict.fromkeys(sessions))
        roots_wanted = [str(p.expanduser().resolve()) for p in project] + [
            os.path.abspath(p.expanduser()) for p in project
        ]
        if limit is not None and limit < 1:
            raise DataError(f"--limit {limit}: must be at least 1")

        problems: list[Problem] = []
        state_path = out_dir / STATE_FILE
        state = _load_state(state_path, problems)
        new_state = dict(state)
        store = open_store(loc, busy_timeout=busy_timeout)
        result = CollectResult(
            store=loc, out_dir=out_dir, state_path=state_path, sessions_in_store=0
        )
        try:
            try:
                headers = store.headers()
            except StoreError as e:
                raise DataError(f"{loc.path}: {e}") from None
            problems.extend(store.take_problems())
            result.sessions_in_store = len(headers)
            by_id = {h.id: h for h in headers}
            children: dict[str, list[SessionHeader]] = defaultdict(list)
            for h in headers:
                if h.parent_id and h.parent_id in by_id:
                    children[h.parent_id].append(h)

            if want_ids:
                roots = [by_id[i] for i in want_ids if i in by_id]
                problems.extend(
                    Problem(str(loc.path), f"session {i}", "no such session in this store")
                    for i in want_ids
                    if i not in by_id
                )
            else:
                roots = [h for h in headers if not h.parent_id or h.parent_id not in by_id]
            if roots_wanted:
                roots = [h for h in roots if _under(h.directory, roots_wanted)]
            if since_ms is not None:
                roots = [h for h in roots if h.time_updated >= since_ms]
            roots.sort(key=lambda h: (-h.time_updated, h.id))
            out_dir.mkdir(parents=True, exist_ok=True)

            def take(header: SessionHeader, *, check_filters: bool) -> bool:
                """Collect one session unless unchanged; False when filtered out or unreadable."""
                entry = state.get(header.id)
                file = entry.get("file") if isinstance(entry, dict) else None
                unchanged = (
                    not force
                    and isinstance(entry, dict)
                    and entry.get("updated") == header.time_updated
                    and (file is None or (out_dir / str(file)).is_file())
                )
                log: SessionLog | None = None
                if unchanged:
                    assert isinstance(entry, dict)
                    found_agents, found_models = entry.get("agents", []), entry.get("models", [])
                else:
                    log = _read_one(store, header, problems)
                    if log is None:
                        return False
                    found_agents, found_models = _agents_models(log)
                if check_filters:
                    if want_agents and not set(want_agents) & set(found_agents):
                        return False
                    if want_models and not _model_matches(want_models, found_models):
                        return False
                result.selected += 1
                if log is None:
                    result.unchanged += 1
                    return True
                name = session_file_name(header.id) if log.examples else None
                if name is None:
                    result.empty += 1
                else:
                    _write_session(
                        out_dir / name, log.model_dump_json(indent=2, exclude_none=True) + "\n"
                    )
                    result.written.append(header.id)
                new_state[header.id] = {
                    "updated": header.time_updated,
                    "file": name,
                    "agents": found_agents,
                    "models": found_models,
                    "parent": header.parent_id,
                }
                return True

            chosen = 0
            for n, root in enumerate(roots):
                if limit is not None and chosen >= limit:
                    break
                if on_progress:
                    on_progress(n, len(roots))
                if not take(root, check_filters=True):
                    continue
                chosen += 1
                queue = list(children.get(root.id, ()))
                while queue:
                    child = queue.pop(0)
                    take(child, check_filters=False)
                    queue.extend(children.get(child.id, ()))
            if on_progress:
                on_progress(len(roots), len(roots))
        except KeyboardInterrupt as e:
            raise Interrupted(
                f"{len(result.written)} session(s) written to {out_dir} before the interrupt "
                f"and recorded in {STATE_FILE}; a re-run collects the rest"
            ) from e
        finally:
            store.close()
            if result.written and hasattr(os, "sync"):
                # Session files are renamed into place without an fsync each (that cost more than
                # all the rest of collect); one sync makes them durable before the state says so.
                os.sync()
            if new_state != state or not state_path.exists():
                out_dir.mkdir(parents=True, exist_ok=True)
                _save_state(state_path, new_state)
        result.problems = problems
        return result


def _read_one(
    store: OpenCodeStore, header: SessionHeader, problems: list[Problem]
) -> SessionLog | None:
    log = None
    try:
        for item in store.read(header):
            if isinstance(item, SessionRead):
                log = item.session
            else:
                problems.append(item)
    except sqlite3.Error as e:
        message = describe_db_error(store.path, e, getattr(store, "timeout", 0))
        if "locked" in message:
            raise DataError(
                f"{store.path}: {message}",
                hint="sessions collected so far are kept; run collect again",
            ) from None
        problems.append(
            Problem(str(store.path), f"session {header.id}", f"{message}; session skipped")
        )
        return None
    return log
