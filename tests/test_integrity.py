"""Nothing lost, nothing mixed: interrupted, killed and concurrent runs (issue 11, §3, §4, §6).

Interrupts are simulated by a write that raises KeyboardInterrupt; kills are real SIGKILLs of a
child process, sent by the child to itself right after a chosen rename; concurrency is a real
second process holding the project lock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocdspy import artifacts, lock
from ocdspy import split as split_mod
from ocdspy.artifacts import Staged, is_temp_name, remove_stale_temps, temp_path
from ocdspy.cli import app
from ocdspy.collect import collect
from ocdspy.convert import convert, load_verified_examples
from ocdspy.errors import DataError, Interrupted, ModelError, ProjectBusy
from ocdspy.evaluate import evaluate, record_for, resolve_program
from ocdspy.export import export_program
from ocdspy.optimize import OptimizationInterrupted, optimize
from ocdspy.split import load_split, split, write_split

sys.path.insert(0, str(Path(__file__).parent))
from lm_fakes import SchemaEngine
from test_optimize import _dspy_env, example, fake_lms, make_settings  # noqa: F401

SRC = Path(__file__).resolve().parents[1] / "src"
RAW = Path(__file__).resolve().parents[1] / "examples" / "data" / "raw"
OPENCODE_DB = Path(__file__).parent / "data" / "opencode" / "opencode.db"


def store(tmp_path: Path) -> Path:
    db = tmp_path / "store" / "opencode.db"
    db.parent.mkdir()
    shutil.copy(OPENCODE_DB, db)
    return db


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if is_temp_name(p.name))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A project's data folder with the example sessions converted and split (seed 0)."""
    d = tmp_path / "data"
    shutil.copytree(RAW, d / "raw")
    convert([d / "raw"], d / "processed", require_success=False)
    split(d / "processed" / "examples.jsonl", d / "splits", train_fraction=0.5, seed=0)
    return d


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# Runs a stage in a child that SIGKILLs itself right after its Nth rename into place.
KILL_AFTER_RENAME = """
    import os, signal, sys
    from pathlib import Path
    from ocdspy import artifacts
    real, count = os.replace, [0]
    def replace(src, dst):
        real(src, dst)
        count[0] += 1
        if count[0] == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
    artifacts.os.replace = replace
    d = Path(sys.argv[2])
"""


# ---------------------------------------------------------------------------------------------
# Section 3: a split or a conversion is one unit, and every reader checks it


def test_interrupted_split_changes_nothing(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = data / "splits"
    before = {p.name: p.read_bytes() for p in splits.iterdir() if p.is_file()}
    real = split_mod._summary
    calls = {"n": 0}

    def ctrl_c_on_val(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:  # both sides written under temp names, manifest not yet
            raise KeyboardInterrupt
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(split_mod, "_summary", ctrl_c_on_val)
    with pytest.raises(Interrupted) as info:
        split(data / "processed" / "examples.jsonl", splits, train_fraction=0.5, seed=3)
    assert info.value.kept.startswith("nothing written; the previous train.jsonl, val.jsonl")
    assert {p.name: p.read_bytes() for p in splits.iterdir() if p.is_file()} == before
    assert load_split(splits).manifest.seed == 0
    assert leftovers(splits) == []


def test_split_killed_between_renames_is_refused_by_every_reader(
    data: Path, tmp_path: Path
) -> None:
    old_manifest = (data / "splits" / "manifest.json").read_bytes()
    child = run_child(
        KILL_AFTER_RENAME
        + """
    from ocdspy.split import split
    split(d / "processed" / "examples.jsonl", d / "splits", train_fraction=0.5, seed=3)
    """,
        "1",
        str(data),
    )
    assert child.returncode == -signal.SIGKILL
    # The new train.jsonl is in place; val.jsonl and the manifest are still seed 0's.
    assert (data / "splits" / "manifest.json").read_bytes() == old_manifest
    with pytest.raises(DataError, match=r"train.jsonl: does not match") as info:
        load_split(data / "splits")
    assert "re-run `ocdspy split`" in str(info.value)

    s = make_settings(tmp_path / "project")
    s.data.splits_dir = data / "splits"
    with pytest.raises(DataError, match=r"train.jsonl: does not match"):
        optimize(s, dry_run=True)
    # Re-running split repairs it (and removes the temp files the kill left).
    split(data / "processed" / "examples.jsonl", data / "splits", train_fraction=0.5, seed=3)
    assert load_split(data / "splits").manifest.seed == 3
    assert leftovers(data / "splits") == []


def test_validation_sharing_a_session_with_training_is_refused(tmp_path: Path) -> None:
    train = [example(1), example(2)]
    val = [example(3), example(2).model_copy(update={"id": "ses_2/1", "turn_index": 1})]
    write_split(tmp_path / "splits", train, val)
    with pytest.raises(DataError) as info:
        load_split(tmp_path / "splits")
    msg = str(info.value)
    assert (
        "val.jsonl: the validation split shares 1 session(s) with train.jsonl (e.g. ses_2)" in msg
    )
    assert "\n" not in msg.split("\n  hint:")[0]
    s = make_settings(tmp_path / "p")
    s.data.splits_dir = tmp_path / "splits"
    with pytest.raises(DataError, match="shares 1 session"):
        optimize(s, dry_run=True)
    # A sub-agent session on the other side from its parent counts too.
    child = example(9).model_copy(update={"parent_session_id": "ses_1"})
    write_split(tmp_path / "s2", train, [example(3), child])
    with pytest.raises(DataError, match="shares 1 session"):
        load_split(tmp_path / "s2")


def test_convert_killed_after_the_examples_rename_is_detected(data: Path) -> None:
    child = run_child(
        KILL_AFTER_RENAME
        + """
    from ocdspy.convert import convert
    convert([d / "raw"], d / "processed", require_success=False, redact=False, force=True)
    """,
        "1",
        str(data),
    )
    assert child.returncode == -signal.SIGKILL
    with pytest.raises(DataError, match=r"examples.jsonl: does not match") as info:
        split(data / "processed" / "examples.jsonl", data / "splits")
    assert "re-run `ocdspy convert`" in str(info.value)
    # convert itself sees the mismatch and rebuilds instead of answering "up to date".
    res = convert([data / "raw"], data / "processed", require_success=False)
    assert not res.cached
    load_verified_examples(res.examples_path)


def test_interrupted_convert_keeps_the_previous_pair(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    processed = data / "processed"
    before = {p: p.read_bytes() for p in processed.iterdir()}
    monkeypatch.setattr(Staged, "model", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(Interrupted) as info:
        convert([data / "raw"], processed, require_success=False, force=True)
    assert info.value.kept.startswith("nothing written; the previous ")
    assert {p: p.read_bytes() for p in processed.iterdir()} == before


def test_ctrl_c_in_commands_says_what_was_kept(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data.parent)

    def ctrl_c(*a: object, **k: object) -> object:
        raise KeyboardInterrupt

    runner = CliRunner()
    monkeypatch.setattr(split_mod, "assign", ctrl_c)
    r = runner.invoke(app, ["split"])
    assert r.exit_code == 130
    assert r.stderr.strip().startswith("interrupted: nothing written; the previous train.jsonl")
    assert len(r.stderr.strip().splitlines()) == 1

    from ocdspy import convert as convert_mod

    monkeypatch.setattr(convert_mod, "turn_to_example", ctrl_c)
    r = runner.invoke(app, ["convert", "--force", "--allow-failures"])
    assert r.exit_code == 130
    assert "interrupted: nothing written; the previous " in r.stderr
    assert "examples.jsonl and manifest.json are unchanged" in r.stderr


def test_ctrl_c_in_collect_counts_the_sessions_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocdspy import collect as collect_mod

    real = collect_mod._write_session
    written = {"n": 0}

    def ctrl_c_on_third(path: Path, text: str) -> None:
        if written["n"] == 2:
            raise KeyboardInterrupt
        real(path, text)
        written["n"] += 1

    monkeypatch.setattr(collect_mod, "_write_session", ctrl_c_on_third)
    out = tmp_path / "data" / "raw"
    r = CliRunner().invoke(app, ["collect", "--db", str(store(tmp_path)), "--out", str(out)])
    assert r.exit_code == 130
    assert f"interrupted: 2 session(s) written to {out}" in r.stderr
    state = json.loads((out / ".ocdspy-collect.json").read_text())
    assert len(state["sessions"]) >= 2  # a re-run does not write them again
    assert leftovers(out) == []


# ---------------------------------------------------------------------------------------------
# Section 4: an interrupted or failed optimize never replaces the last completed result


def test_a_failed_run_never_stores_or_raises_the_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 §2, the "saved" half: a provider error that echoes the key (as some do in a 401)
    reaches neither the run record nor the error message."""
    key = "sk-proj-Zq8Lm3Nx7Pw2Rt6Vy1Bc4Df9Gh"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    s = make_settings(tmp_path)

    class Leaky:
        def compile(self, *a: object, **k: object) -> None:
            raise RuntimeError(f"401 Unauthorized: Incorrect API key provided: {key!r}\n{key}")

    from ocdspy import optimize as optimize_mod

    monkeypatch.setattr(optimize_mod, "build_optimizer", lambda *a, **k: (Leaky(), {}))
    with pytest.raises(ModelError) as info:
        optimize(s, lms=fake_lms(SchemaEngine()), name="run")
    assert key not in str(info.value) and key[:-4] not in str(info.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".run.json") for p in written)
    for p in written:
        text = p.read_text(encoding="utf-8", errors="replace")
        assert key not in text and key[10:] not in text, p


def test_partial_runs_go_beside_the_completed_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShotWithRandomSearch", num_trials=4)
    pdir = s.outputs.programs_dir
    done = optimize(s, lms=fake_lms(SchemaEngine()), name="run")
    assert done.program_path == pdir / "run.json"
    kept = {p: p.read_bytes() for p in (pdir / "run.json", pdir / "run.run.json")}

    from ocdspy.lm import configure_cache

    configure_cache(tmp_path / "fresh_cache")  # so the second run's calls reach the engine
    with pytest.raises(OptimizationInterrupted) as info:
        optimize(s, lms=fake_lms(SchemaEngine(interrupt_after=40)), name="run")
    assert info.value.result.program_path == pdir / "run.partial.json"
    assert {p: p.read_bytes() for p in kept} == kept
    assert json.loads((pdir / "run.partial.run.json").read_text())["status"] == "interrupted"

    # By default evaluate and export use the completed program and say so.
    assert resolve_program(s, None) == pdir / "run.json"
    res = evaluate(s, lms=fake_lms(SchemaEngine()), resamples=100)
    assert res.program_used.startswith(f"{pdir / 'run.json'} (completed ")
    exp = export_program(s, resolve_program(s, None))
    assert exp.program_used.startswith(f"{pdir / 'run.json'} (completed ")
    part = evaluate(s, "run.partial", lms=fake_lms(SchemaEngine()), resamples=100)
    assert part.program_used.startswith(
        f"{pdir / 'run.partial.json'} (best candidate of an interrupted "
        "BootstrapFewShotWithRandomSearch run"
    )
    assert part.json_path.name == "run.partial.json"  # its own report, not run.json's

    # A failed run: its record goes beside too.
    class Broken:
        def compile(self, *a: object, **k: object) -> None:
            raise RuntimeError("endpoint down")

    from ocdspy import optimize as optimize_mod

    with monkeypatch.context() as m:
        m.setattr(optimize_mod, "build_optimizer", lambda *a, **k: (Broken(), {}))
        with pytest.raises(ModelError, match="endpoint down"):
            optimize(s, lms=fake_lms(SchemaEngine()), name="run")
    assert {p: p.read_bytes() for p in kept} == kept
    assert json.loads((pdir / "run.partial.run.json").read_text())["status"] == "failed"
    assert not (pdir / "run.partial.json").exists()  # no candidate: no stale one left paired

    # A completed run replaces the completed pair and drops the partial files.
    optimize(s, lms=fake_lms(SchemaEngine()), name="run")
    assert not (pdir / "run.partial.json").exists()
    assert not (pdir / "run.partial.run.json").exists()


def test_only_partial_programs_are_not_used_silently(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShotWithRandomSearch", num_trials=4)
    with pytest.raises(OptimizationInterrupted):
        optimize(s, lms=fake_lms(SchemaEngine(interrupt_after=40)), name="x")
    with pytest.raises(DataError, match="no completed program") as info:
        resolve_program(s, None)
    assert "`x.partial`" in str(info.value)


def test_program_record_and_report_must_match(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShot", max_labeled_demos=2)
    res = optimize(s, lms=fake_lms(SchemaEngine()), name="m")
    assert res.program_path is not None
    evaluate(s, "m", lms=fake_lms(SchemaEngine()), resamples=100)
    export_program(s, res.program_path)  # all consistent
    saved = json.loads(res.program_path.read_text())
    saved["step"]["demos"] = []
    res.program_path.write_text(json.dumps(saved))  # as if killed between program and record
    with pytest.raises(DataError, match=r"m.json: does not match its run record") as info:
        record_for(res.program_path)
    assert "ocdspy optimize --name m" in str(info.value)
    with pytest.raises(DataError, match="does not match its run record"):
        export_program(s, res.program_path)
    # A program without its record: the stale report is refused.
    (s.outputs.programs_dir / "m.run.json").unlink()
    with pytest.raises(DataError, match=r"reports/m.json: this report did not score") as info:
        export_program(s, res.program_path)
    assert "re-run `ocdspy evaluate m`" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Section 1 (0600): artifacts holding session text


def test_artifacts_with_session_text_are_private(data: Path, tmp_path: Path) -> None:
    for p in [
        data / "processed" / "examples.jsonl",
        data / "processed" / "manifest.json",
        data / "splits" / "train.jsonl",
        data / "splits" / "val.jsonl",
        data / "splits" / "manifest.json",
    ]:
        assert mode(p) == 0o600, p
    s = make_settings(tmp_path, optimizer="BootstrapFewShot", max_labeled_demos=2)
    res = optimize(s, lms=fake_lms(SchemaEngine()), name="p")
    ev = evaluate(s, "p", lms=fake_lms(SchemaEngine()), resamples=100)
    for p in [res.program_path, res.record_path, ev.json_path, ev.markdown_path]:
        assert p is not None and mode(p) == 0o600, p
    out = tmp_path / "collected"
    collect(out, db=store(tmp_path))
    files = list(out.glob("*.json"))
    assert files and all(mode(p) == 0o600 for p in files)


# ---------------------------------------------------------------------------------------------
# Section 6: locking, unique temp names, stale temp files

HOLD_LOCK = """
    import sys, time
    from pathlib import Path
    from ocdspy.lock import project_lock
    with project_lock(Path(sys.argv[1]), "convert"):
        print("held", flush=True)
        time.sleep(60)
"""


def test_a_second_writer_waits_then_names_the_holder(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock, "WAIT_SECONDS", 0.3)
    monkeypatch.chdir(data.parent)
    planted = data / "processed" / ".examples.jsonl.abcd1234.tmp"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_LOCK), str(data)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        planted.write_text("a live writer's half-written file")
        with pytest.raises(ProjectBusy) as info:
            convert([data / "raw"], data / "processed", force=True)
        msg = str(info.value)
        assert f"pid {holder.pid}" in msg and "ocdspy convert" in msg and "since " in msg
        assert planted.exists()  # never removed while another process holds the lock
        r = CliRunner().invoke(
            app, ["split", "--examples", str(data / "processed" / "examples.jsonl")]
        )
        assert r.exit_code == 1 and f"pid {holder.pid}" in r.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops its lock with it
        holder.wait()
    convert([data / "raw"], data / "processed", force=True)
    assert not planted.exists()  # the next run, holding the lock, removed the stale temp


def test_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    with lock.project_lock(tmp_path, "pipeline"), lock.project_lock(tmp_path, "convert"):
        pass
    with lock.project_lock(tmp_path, "again", wait=0):
        pass


def test_temp_names_are_unique_private_and_recognised(tmp_path: Path) -> None:
    a, b = temp_path(tmp_path / "x.json"), temp_path(tmp_path / "x.json")
    assert a != b and mode(a) == 0o600
    assert is_temp_name(a.name) and is_temp_name(".s1.json.tmp")  # collect's old fixed name
    assert is_temp_name(".p.json.abcd_123.tmp.json")
    assert not is_temp_name("notes.tmp") and not is_temp_name(".ocdspy-collect.json")
    keep = tmp_path / "examples.jsonl"
    keep.write_text("x")
    assert sorted(p.name for p in remove_stale_temps(tmp_path)) == sorted([a.name, b.name])
    assert keep.exists()


def test_a_failed_commit_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = os.replace, {"n": 0}

    def replace_fails_second(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace_fails_second)
    d = tmp_path / "w"
    with pytest.raises(OSError), Staged() as staged:
        staged.text(d / "a", "a")
        staged.text(d / "b", "b")
    assert sorted(p.name for p in d.iterdir()) == ["a"]


def test_stale_temps_removed_in_outputs(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShot", max_labeled_demos=2)
    s.outputs.programs_dir.mkdir(parents=True)
    stale = s.outputs.programs_dir / ".p.json.k9x2m1qa.tmp.json"
    stale.write_text("{}")
    optimize(s, lms=fake_lms(SchemaEngine()), name="p")
    assert not stale.exists()
