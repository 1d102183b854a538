"""`ocdspy collect`: finding OpenCode's store, copying sessions out of it read-only, filters,
incremental re-runs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ocdspy.cli import app
from ocdspy.collect import STATE_FILE, collect, find_store, parse_since
from ocdspy.convert import ConvertSettings, turn_to_example
from ocdspy.errors import DataError
from ocdspy.sessions import opencode as oc
from ocdspy.sessions.opencode import database as opencode_database
from ocdspy.sessions.read import Problem, SessionRead, read_paths

DATA = Path(__file__).parent / "data"
REC = DATA / "opencode"
SETTINGS = ConvertSettings(require_success=False, result_max_chars=2000, redact=True)


def manifest() -> list[dict[str, Any]]:
    return json.loads((REC / "manifest.json").read_text())["sessions"]


def scenario(name: str, *, child: bool = False) -> str:
    return next(
        s["id"] for s in manifest() if s["scenario"] == name and bool(s["parent_id"]) == child
    )


TOP_LEVEL = [s["id"] for s in manifest() if not s["parent_id"]]
ALL = [s["id"] for s in manifest()]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store" / "opencode.db"
    path.parent.mkdir()
    shutil.copy(REC / "opencode.db", path)
    return path


def examples_of(*paths: Path) -> dict[str, dict[str, Any]]:
    out = {}
    _, items = read_paths(list(paths))
    for item in items:
        if isinstance(item, SessionRead):
            for i in range(len(item.session.examples)):
                ex = turn_to_example(item, i, SETTINGS, Counter(), "-")
                out[ex.id] = ex.model_dump(exclude={"source", "source_format"})
    return out


def written_files(out: Path) -> set[str]:
    return {p.stem for p in out.glob("*.json") if not p.name.startswith(".")}


# ---------------------------------------------------------------------------------------------
# Finding the store


def _sqlite(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REC / "opencode.db", path)
    return path


def test_store_from_xdg_data_home(tmp_path: Path) -> None:
    db = _sqlite(tmp_path / "xdg" / "opencode" / "opencode.db")
    loc = find_store(environ={"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": "/nowhere"})
    assert (loc.path, loc.format) == (db, "opencode-db")


def test_store_under_home_when_xdg_is_unset(tmp_path: Path) -> None:
    db = _sqlite(tmp_path / ".local" / "share" / "opencode" / "opencode.db")
    loc = find_store(environ={"HOME": str(tmp_path), "XDG_DATA_HOME": ""})
    assert loc.path == db


def test_opencode_db_variable(tmp_path: Path) -> None:
    absolute = _sqlite(tmp_path / "elsewhere" / "mine.db")
    env = {"HOME": str(tmp_path), "OPENCODE_DB": str(absolute)}
    assert find_store(environ=env).path == absolute
    assert find_store(environ=env).found_by == "$OPENCODE_DB"
    # Relative: inside OpenCode's data folder, as OpenCode resolves it.
    relative = _sqlite(tmp_path / ".local" / "share" / "opencode" / "work.db")
    assert find_store(environ={"HOME": str(tmp_path), "OPENCODE_DB": "work.db"}).path == relative
    with pytest.raises(DataError, match="no such database file"):
        find_store(environ={"HOME": str(tmp_path), "OPENCODE_DB": "gone.db"})
    with pytest.raises(DataError, match=":memory:"):
        find_store(environ={"HOME": str(tmp_path), "OPENCODE_DB": ":memory:"})


def test_channel_database_and_legacy_tree(tmp_path: Path) -> None:
    data = tmp_path / ".local" / "share" / "opencode"
    shutil.copytree(REC / "legacy-storage", data / "storage")
    env = {"HOME": str(tmp_path)}
    loc = find_store(environ=env)
    assert (loc.path, loc.format) == (data / "storage", "opencode-storage")
    channel = _sqlite(data / "opencode-dev.db")
    assert find_store(environ=env).path == channel
    main = _sqlite(data / "opencode.db")
    assert find_store(environ=env).path == main


def test_no_store_found_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        find_store(environ={"HOME": str(tmp_path)})
    assert str(tmp_path / ".local/share/opencode/opencode.db") in e.value.message
    assert e.value.hint and "--db" in e.value.hint


def test_explicit_db_and_storage(tmp_path: Path, db: Path) -> None:
    assert find_store(db=db).found_by == "--db"
    tree = tmp_path / "old"
    shutil.copytree(REC / "legacy-storage", tree / "storage")
    assert find_store(storage=tree).path == tree / "storage"
    assert find_store(storage=tree / "storage").format == "opencode-storage"
    with pytest.raises(DataError, match="not an OpenCode storage"):
        find_store(storage=tmp_path)
    with pytest.raises(DataError, match="not an SQLite database"):
        find_store(db=REC / "manifest.json")
    with pytest.raises(DataError, match="not both"):
        find_store(db=db, storage=tree)


def test_parse_since() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    assert parse_since("7d", now=now) == int((now - timedelta(days=7)).timestamp() * 1000)
    assert parse_since("12h", now=now) == int((now - timedelta(hours=12)).timestamp() * 1000)
    assert parse_since("2w", now=now) == int((now - timedelta(weeks=2)).timestamp() * 1000)
    assert parse_since("2026-01-31T14:00Z") == int(
        datetime(2026, 1, 31, 14, tzinfo=timezone.utc).timestamp() * 1000
    )
    local_midnight = datetime(2026, 1, 31).astimezone()
    assert parse_since("2026-01-31") == int(local_midnight.timestamp() * 1000)
    with pytest.raises(DataError, match="not a date"):
        parse_since("last tuesday")


# ---------------------------------------------------------------------------------------------
# Collecting


def test_collect_writes_one_plugin_file_per_session(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "raw"
    res = collect(out, db=db)
    assert res.problems == []
    assert sorted(res.written) == sorted(ALL)
    assert written_files(out) == set(ALL)
    assert (res.selected, res.unchanged, res.empty) == (len(ALL), 0, 0)
    doc = json.loads((out / f"{scenario('fix-total')}.json").read_text())
    assert doc["sourceFormat"] == "opencode-db" and doc["session"] == scenario("fix-total")
    assert "examples" in doc and "null" not in json.dumps(doc)
    # Read back as plugin logs, they give exactly the database's examples.
    _, items = read_paths([out])
    formats = {i.format for i in items if isinstance(i, SessionRead)}
    assert formats == {"plugin"}
    assert examples_of(out) == examples_of(db)
    state = json.loads((out / STATE_FILE).read_text())
    assert set(state["sessions"]) == set(ALL)
    child = scenario("subagent-review", child=True)
    assert state["sessions"][child]["parent"] == scenario("subagent-review")


def test_collect_never_modifies_the_store(tmp_path: Path, db: Path) -> None:
    before = db.read_bytes()
    listing = sorted(p.name for p in db.parent.iterdir())
    collect(tmp_path / "raw", db=db)
    collect(tmp_path / "raw", db=db, force=True)
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == listing


def test_collect_while_opencode_writes_in_wal_mode(tmp_path: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE session SET time_updated = time_updated + 1")
    before = db.read_bytes()
    try:
        res = collect(tmp_path / "raw", db=db)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert res.problems == [] and len(res.written) == len(ALL)
    assert db.read_bytes() == before


def test_collect_from_a_locked_database_fails_clearly(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opencode_database, "DEFAULT_BUSY_TIMEOUT", 0.1)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DataError, match="locked by another process"):
            collect(tmp_path / "raw", db=db)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_collect_from_legacy_storage(tmp_path: Path) -> None:
    res = collect(tmp_path / "raw", storage=REC / "legacy-storage")
    assert res.store.format == "opencode-storage" and res.problems == []
    legacy = [s["id"] for s in manifest() if s["version"] == "1.1.65"]
    assert sorted(res.written) == sorted(legacy)
    doc = json.loads((tmp_path / "raw" / f"{legacy[0]}.json").read_text())
    assert doc["sourceFormat"] == "opencode-storage"


def test_collect_finds_the_store_like_opencode(tmp_path: Path) -> None:
    _sqlite(Path(os.environ["XDG_DATA_HOME"]) / "opencode" / "opencode.db")
    res = collect(tmp_path / "raw")
    assert res.store.found_by == str(Path(os.environ["XDG_DATA_HOME"]) / "opencode")
    assert len(res.written) == len(ALL)


# ---------------------------------------------------------------------------------------------
# Incremental


def _touch_session(db: Path, sid: str) -> None:
    """What OpenCode does when a session goes on: new message and part, later time_updated."""
    conn = sqlite3.connect(db)
    (updated,) = conn.execute("SELECT time_updated FROM session WHERE id = ?", (sid,)).fetchone()
    stamp = updated + 60_000
    conn.execute(
        "INSERT INTO message (id, session_id, time_created, time_updated, data) "
        "VALUES ('msg_zzzzzzzzzzzz', ?, ?, ?, ?)",
        (
            sid,
            stamp,
            stamp,
            json.dumps({"role": "user", "time": {"created": stamp}, "agent": "build"}),
        ),
    )
    conn.execute(
        "INSERT INTO part (id, message_id, session_id, time_created, time_updated, "
        "data) VALUES ('prt_zzzzzzzzzzzz', 'msg_zzzzzzzzzzzz', ?, ?, ?, ?)",
        (sid, stamp, stamp, json.dumps({"type": "text", "text": "one more thing"})),
    )
    conn.execute("UPDATE session SET time_updated = ? WHERE id = ?", (stamp, sid))
    conn.commit()
    conn.close()


def test_rerun_collects_only_what_is_new(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "raw"
    collect(out, db=db)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}

    again = collect(out, db=db)
    assert (again.written, again.unchanged, again.selected) == ([], len(ALL), len(ALL))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == mtimes

    sid = scenario("find-totals")
    _touch_session(db, sid)
    third = collect(out, db=db)
    assert third.written == [sid] and third.unchanged == len(ALL) - 1
    doc = json.loads((out / f"{sid}.json").read_text())
    assert [t["input"]["task"] for t in doc["examples"]][-1] == "one more thing"

    (out / f"{scenario('api-error')}.json").unlink()
    assert collect(out, db=db).written == [scenario("api-error")]
    assert sorted(collect(out, db=db, force=True).written) == sorted(ALL)


def test_a_session_added_later_is_collected_alone(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "raw"
    sid = scenario("find-totals")
    # First collect without it, as if it did not exist yet.
    first = collect(out, db=db, sessions=[s for s in TOP_LEVEL if s != sid])
    assert sid not in first.written
    second = collect(out, db=db)
    assert second.written == [sid]


def test_new_mapping_rules_recollect_everything(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "raw"
    collect(out, db=db)
    import ocdspy.collect as collect_module

    monkeypatch.setattr(collect_module, "MAPPING_VERSION", oc.MAPPING_VERSION + 1)
    assert len(collect(out, db=db).written) == len(ALL)


def test_unreadable_state_is_a_warning(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / STATE_FILE).write_text("{nope")
    res = collect(out, db=db)
    assert len(res.written) == len(ALL)
    assert [p.severity for p in res.problems] == ["warning"]
    assert json.loads((out / STATE_FILE).read_text())["sessions"]


# ---------------------------------------------------------------------------------------------
# Filters


def _ids(res: Any) -> set[str]:
    return set(res.written)


def test_filter_project(tmp_path: Path, db: Path) -> None:
    project = Path(json.loads((REC / "manifest.json").read_text())["project"])
    assert _ids(collect(tmp_path / "a", db=db, project=[project])) == set(ALL)
    assert _ids(collect(tmp_path / "b", db=db, project=[project.parent])) == set(ALL)
    assert _ids(collect(tmp_path / "c", db=db, project=[project / "invoice_tool"])) == set()
    assert _ids(collect(tmp_path / "d", db=db, project=[Path(str(project) + "-other")])) == set()


def test_filter_since(tmp_path: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, parent_id, time_updated FROM session").fetchall()
    conn.close()
    cut = sorted(t for _, p, t in rows if p is None)[4]
    want = {i for i, p, t in rows if p is None and t >= cut}
    # A chosen parent brings its sub-agent sessions along.
    want |= {i for i, p, _ in rows if p in want}
    assert _ids(collect(tmp_path / "a", db=db, since=cut)) == want
    iso = datetime.fromtimestamp(cut / 1000, tz=timezone.utc).isoformat()
    assert _ids(collect(tmp_path / "b", db=db, since=iso)) == want
    assert _ids(collect(tmp_path / "c", db=db, since="2100-01-01")) == set()
    assert _ids(collect(tmp_path / "d", db=db, since="100000d")) == set(ALL)


def test_filter_agent_and_model(tmp_path: Path, db: Path) -> None:
    assert _ids(collect(tmp_path / "a", db=db, agents=["build"])) == set(ALL)
    assert _ids(collect(tmp_path / "b", db=db, agents=["plan"])) == set()
    assert _ids(collect(tmp_path / "c", db=db, models=["scripted/coder"])) == set(ALL)
    assert _ids(collect(tmp_path / "d", db=db, models=["coder"])) == set(ALL)
    assert _ids(collect(tmp_path / "e", db=db, models=["other/coder"])) == set()
    # Filters apply to top-level sessions: the general sub-agent only runs inside one.
    assert _ids(collect(tmp_path / "f", db=db, agents=["general"])) == set()


def test_filter_session_brings_its_sub_agents(tmp_path: Path, db: Path) -> None:
    parent, child = scenario("subagent-review"), scenario("subagent-review", child=True)
    assert _ids(collect(tmp_path / "a", db=db, sessions=[parent])) == {parent, child}
    assert _ids(collect(tmp_path / "b", db=db, sessions=[child])) == {child}
    res = collect(tmp_path / "c", db=db, sessions=["ses_missing", parent])
    assert _ids(res) == {parent, child}
    assert [p.message for p in res.problems] == ["no such session in this store"]


def test_filter_limit_keeps_the_most_recent(tmp_path: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT id FROM session WHERE parent_id IS NULL ORDER BY time_updated DESC LIMIT 2"
    ).fetchall()
    conn.close()
    res = collect(tmp_path / "a", db=db, limit=2)
    assert {r[0] for r in rows} <= _ids(res)
    parents = {r[0] for r in rows}
    children = {s["id"] for s in manifest() if s["parent_id"] in parents}
    assert _ids(res) == parents | children
    with pytest.raises(DataError):
        collect(tmp_path / "b", db=db, limit=0)


def test_sessions_without_user_messages_are_not_written(tmp_path: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT * FROM session LIMIT 1").fetchone()
    cols = [d[0] for d in conn.execute("SELECT * FROM session LIMIT 0").description]
    values = dict(zip(cols, row, strict=True))
    values.update(id="ses_empty", parent_id=None, time_updated=values["time_updated"] + 1)
    conn.execute(
        f"INSERT INTO session VALUES ({', '.join('?' * len(cols))})", [values[c] for c in cols]
    )
    conn.commit()
    conn.close()
    res = collect(tmp_path / "raw", db=db)
    assert res.empty == 1 and "ses_empty" not in res.written
    assert not (tmp_path / "raw" / "ses_empty.json").exists()
    assert collect(tmp_path / "raw", db=db).unchanged == len(ALL) + 1


# ---------------------------------------------------------------------------------------------
# The command


def test_cli_collect(tmp_path: Path, db: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "raw"
    r = runner.invoke(app, ["collect", "--db", str(db), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"collected {len(ALL)} sessions: {len(ALL)} written, 0 unchanged" in r.output
    assert "opencode-db, found via --db" in r.output
    r = runner.invoke(
        app,
        [
            "collect",
            "--db",
            str(db),
            "--out",
            str(out),
            "--json",
            "--session",
            scenario("api-error"),
            "--session",
            "ses_nope",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert (data["written"], data["unchanged"]) == ([], 1)
    assert data["problems"][0]["message"] == "no such session in this store"
    r = runner.invoke(app, ["collect", "--out", str(out)])
    assert r.exit_code == 1
    assert "No OpenCode session store found" in r.output


def test_collected_problems_do_not_stop_the_run(tmp_path: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE part SET data = '{' WHERE id = (SELECT id FROM part WHERE session_id = ? LIMIT 1)",
        (scenario("find-totals"),),
    )
    conn.commit()
    conn.close()
    res = collect(tmp_path / "raw", db=db)
    assert len(res.written) == len(ALL)
    assert [type(p) for p in res.problems] == [Problem]
    assert res.problems[0].where.startswith(f"session {scenario('find-totals')}: part ")


# ---------------------------------------------------------------------------------------------
# With the real OpenCode running on the same database


@pytest.mark.integration
@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to install OpenCode",
)
def test_collect_while_real_opencode_runs(tmp_path: Path) -> None:
    import socket
    import subprocess
    import time
    import urllib.request

    try:
        from tests.opencode_support.opencode_env import (
            data_dir,
            ensure_opencode,
            have_node,
            isolated_env,
        )
    except ImportError:  # tests/ itself on sys.path
        from opencode_support.opencode_env import (  # type: ignore[no-redef]
            data_dir,
            ensure_opencode,
            have_node,
            isolated_env,
        )
    assert have_node()
    binary = ensure_opencode()
    assert binary is not None
    env = isolated_env(tmp_path, "http://127.0.0.1:9/v1")
    store = data_dir(env)
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy(REC / "opencode.db", store / "opencode.db")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(binary), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/session", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("opencode serve did not start")
                time.sleep(0.5)
        req = urllib.request.Request(
            f"{url}/session",
            data=b'{"title": "live"}',
            headers={"Content-Type": "application/json"},
        )
        live = json.loads(urllib.request.urlopen(req, timeout=10).read())["id"]
        # OpenCode holds its database open in WAL mode; the new session is only in the WAL.
        assert (store / "opencode.db-wal").stat().st_size > 0
        before = (store / "opencode.db").read_bytes()
        res = collect(tmp_path / "raw", environ=env)
        assert res.store.path == store / "opencode.db"
        assert res.sessions_in_store == len(ALL) + 1  # it sees what OpenCode just wrote
        assert sorted(res.written) == sorted(ALL) and res.empty == 1
        assert live not in res.written
        assert (store / "opencode.db").read_bytes() == before
        assert server.poll() is None  # and OpenCode is still running
    finally:
        server.terminate()
        server.wait(timeout=20)
