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
from dataclasses import dataclass, field
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
)
from ocdspy.sessions.read import SQLITE_MAGIC, Problem, SessionRead, is_storage_tree

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
        tree = storage / "storage" if is_storage_tree(storage / "storage") else storage
        if not is_storage_tree(tree):
            raise DataError(
                f"{storage}: not an OpenCode storage/ folder (it needs session/, "
                "message/ and part/)"
            )
        return StoreLocation(path=tree, format=FORMAT_STORAGE, found_by="--storage")
    return _opencode_own_store(dict(os.environ if environ is None else environ))


def _opencode_own_store(env: dict[str, str]) -> StoreLocation:
    """The store OpenCode itself would use, found the way OpenCode finds it."""
    data = opencode_data_dir(env)
    named = env.get("OPENCODE_DB")
    if named:
        if named == ":memory:":
            raise DataError("OPENCODE_DB is ':memory:': that OpenCode keeps no sessions on disk")
        # As OpenCode does: an absolute path is taken as is, a relative one is in its data folder.
        path = Path(named) if Path(named).is_absolute() else data / named
        return StoreLocation(
            path=_check_db(path, "$OPENCODE_DB"), format=FORMAT_DB, found_by="$OPENCODE_DB"
        )
    looked = [data / "opencode.db"]
    if looked[0].is_file():
        return StoreLocation(path=looked[0], format=FORMAT_DB, found_by=str(data))
    # Builds from other release channels name their database opencode-<channel>.db.
    channels = sorted(
        data.glob("opencode-*.db"), key=lambda channel: channel.stat().st_mtime, reverse=True
    )
    if channels:
        return StoreLocation(path=channels[0], format=FORMAT_DB, found_by=str(data))
    looked.append(data / "storage")
    if is_storage_tree(data / "storage"):
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


def open_store(location: StoreLocation, *, busy_timeout: float | None = None) -> OpenCodeStore:
    try:
        if location.format == FORMAT_DB:
            return OpenCodeDB(location.path, busy_timeout=busy_timeout)
        return OpenCodeStorage(location.path)
    except StoreError as e:
        raise DataError(f"{location.path}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Filters


_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")


def parse_since(text: str, *, now: datetime | None = None) -> int:
    """`--since` -> epoch milliseconds. Accepts a date (`2026-01-31`, local midnight), a date and
    time (`2026-01-31T14:00`, `…Z`, `…+02:00`) or an age: `30m`, `12h`, `7d`, `2w`."""
    age = _RELATIVE.match(text)
    if age:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[age.group(2)]
        start = (now or datetime.now(timezone.utc)) - timedelta(**{unit: int(age.group(1))})
        return int(start.timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(
            f"--since {text!r}: not a date",
            hint="use 2026-01-31, 2026-01-31T14:00 or an age such as 7d, 12h, 2w",
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the user's local time
    return int(moment.timestamp() * 1000)


@dataclass
class _Filters:
    """Which top-level sessions to collect: by id, project folder, last update, agent, model."""

    session_ids: list[str]
    directories: list[str]
    since_ms: int | None
    agents: list[str]
    models: list[str]

    def choose_roots(
        self, headers: list[SessionHeader], by_id: dict[str, SessionHeader]
    ) -> list[SessionHeader]:
        """The top-level sessions that pass the id, folder and time filters, newest first."""
        if self.session_ids:
            roots = [by_id[session_id] for session_id in self.session_ids if session_id in by_id]
        else:
            roots = [
                header
                for header in headers
                if not header.parent_id or header.parent_id not in by_id
            ]
        if self.directories:
            roots = [header for header in roots if _under(header.directory, self.directories)]
        if self.since_ms is not None:
            roots = [header for header in roots if header.time_updated >= self.since_ms]
        roots.sort(key=lambda header: (-header.time_updated, header.id))
        return roots

    @classmethod
    def of(
        cls,
        *,
        sessions: Iterable[str],
        project: Iterable[Path],
        since_ms: int | None,
        agents: Iterable[str],
        models: Iterable[str],
    ) -> _Filters:
        folders = [folder.expanduser() for folder in project]
        return cls(
            session_ids=list(dict.fromkeys(sessions)),
            # Resolved (symlinks followed) and as given, so either spelling of a folder matches.
            directories=[str(folder.resolve()) for folder in folders]
            + [os.path.abspath(folder) for folder in folders],
            since_ms=since_ms,
            agents=list(agents),
            models=list(models),
        )

    def wants(self, found_agents: list[str], found_models: list[str]) -> bool:
        """The agent and model filters, checked once a session's agents and models are known."""
        if self.agents and not set(self.agents) & set(found_agents):
            return False
        return not self.models or _model_matches(self.models, found_models)


def _under(directory: str | None, roots: list[str]) -> bool:
    if not directory:
        return False
    folder = directory.rstrip("/") or "/"
    return any(folder == root or folder.startswith(root.rstrip("/") + "/") for root in roots)


def _agents_models(log: SessionLog) -> tuple[list[str], list[str]]:
    extra = log.model_extra or {}
    agents = {extra.get("agent")} | {turn.agent.name for turn in log.examples if turn.agent}
    models = {extra.get("model")} | {turn.agent.model for turn in log.examples if turn.agent}
    return (
        sorted(agent for agent in agents if isinstance(agent, str)),
        sorted(model for model in models if isinstance(model, str)),
    )


def _model_matches(wanted: Iterable[str], models: list[str]) -> bool:
    """`provider/model` matches itself; a bare `model` matches it under any provider."""
    for name in wanted:
        for model in models:
            if model == name or ("/" not in name and model.split("/", 1)[-1] == name):
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
        location = find_store(db=db, storage=storage, environ=environ)
        since_ms = parse_since(since) if isinstance(since, str) else since
        filters = _Filters.of(
            sessions=sessions, project=project, since_ms=since_ms, agents=agents, models=models
        )
        if limit is not None and limit < 1:
            raise DataError(f"--limit {limit}: must be at least 1")
        collector = _Collector.start(location, out_dir, force=force, busy_timeout=busy_timeout)
        try:
            collector.collect(filters, limit, on_progress)
        except KeyboardInterrupt as e:
            raise Interrupted(
                f"{len(collector.result.written)} session(s) written to {out_dir} before the "
                f"interrupt and recorded in {STATE_FILE}; a re-run collects the rest"
            ) from e
        finally:
            collector.finish()
        collector.result.problems = collector.problems
        return collector.result


@dataclass
class _Collector:
    """One run of `collect`: reads the chosen sessions and writes those new or changed since the
    last run, recording each in the next state."""

    store: OpenCodeStore
    out_dir: Path
    result: CollectResult
    state: dict[str, dict[str, Any]]
    force: bool
    problems: list[Problem]
    new_state: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.new_state = dict(self.state)

    @classmethod
    def start(
        cls, location: StoreLocation, out_dir: Path, *, force: bool, busy_timeout: float | None
    ) -> _Collector:
        """Read the last run's state, then open the store."""
        problems: list[Problem] = []
        state_path = out_dir / STATE_FILE
        state = _load_state(state_path, problems)
        return cls(
            open_store(location, busy_timeout=busy_timeout),
            out_dir,
            CollectResult(
                store=location, out_dir=out_dir, state_path=state_path, sessions_in_store=0
            ),
            state,
            force,
            problems,
        )

    def collect(
        self,
        filters: _Filters,
        limit: int | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        location = self.result.store
        try:
            headers = self.store.headers()
        except StoreError as e:
            raise DataError(f"{location.path}: {e}") from None
        self.problems.extend(self.store.take_problems())
        self.result.sessions_in_store = len(headers)
        by_id = {header.id: header for header in headers}
        self.problems.extend(
            Problem(str(location.path), f"session {session_id}", "no such session in this store")
            for session_id in filters.session_ids
            if session_id not in by_id
        )
        roots = filters.choose_roots(headers, by_id)
        children: dict[str, list[SessionHeader]] = defaultdict(list)
        for header in headers:
            if header.parent_id and header.parent_id in by_id:
                children[header.parent_id].append(header)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        chosen = 0
        for position, root in enumerate(roots):
            if limit is not None and chosen >= limit:
                break
            if on_progress:
                on_progress(position, len(roots))
            if self._take_tree(root, children, filters):
                chosen += 1
        if on_progress:
            on_progress(len(roots), len(roots))

    def _take_tree(
        self,
        root: SessionHeader,
        children: dict[str, list[SessionHeader]],
        filters: _Filters,
    ) -> bool:
        """A top-level session and, when it is taken, all its sub-agent sessions, unfiltered."""
        if not self._take(root, filters):
            return False
        queue = list(children.get(root.id, ()))
        while queue:
            child = queue.pop(0)
            self._take(child, None)
            queue.extend(children.get(child.id, ()))
        return True

    def _take(self, header: SessionHeader, filters: _Filters | None) -> bool:
        """Collect one session unless unchanged; False when filtered out or unreadable."""
        entry = self._unchanged_entry(header)
        log: SessionLog | None = None
        if entry is not None:
            found_agents, found_models = entry.get("agents", []), entry.get("models", [])
        else:
            log = _read_one(self.store, header, self.problems)
            if log is None:
                return False
            found_agents, found_models = _agents_models(log)
        if filters is not None and not filters.wants(found_agents, found_models):
            return False
        self.result.selected += 1
        if log is None:
            self.result.unchanged += 1
            return True
        name = session_file_name(header.id) if log.examples else None
        if name is None:
            self.result.empty += 1
        else:
            _write_session(
                self.out_dir / name, log.model_dump_json(indent=2, exclude_none=True) + "\n"
            )
            self.result.written.append(header.id)
        self.new_state[header.id] = {
            "updated": header.time_updated,
            "file": name,
            "agents": found_agents,
            "models": found_models,
            "parent": header.parent_id,
        }
        return True

    def _unchanged_entry(self, header: SessionHeader) -> dict[str, Any] | None:
        """The state entry of a session collected before and not updated since (its file still
        there), else None."""
        entry = self.state.get(header.id)
        if self.force or not isinstance(entry, dict):
            return None
        if entry.get("updated") != header.time_updated:
            return None
        file = entry.get("file")
        return entry if file is None or (self.out_dir / str(file)).is_file() else None

    def finish(self) -> None:
        """Close the store and record what was written, also after an error or interrupt."""
        state_path = self.result.state_path
        self.store.close()
        if self.result.written and hasattr(os, "sync"):
            # Session files are renamed into place without an fsync each (that cost more than
            # all the rest of collect); one sync makes them durable before the state says so.
            os.sync()
        if self.new_state != self.state or not state_path.exists():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _save_state(state_path, self.new_state)


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
        message = store.describe_error(e)
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
