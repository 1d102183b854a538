from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ocdspy import convert as convert_mod
from ocdspy.convert import Example, convert, load_examples, main_argument
from ocdspy.errors import DataError


def log(
    sid: str, *, ok: bool = True, result: object = "fine", task: str = "fix it", turns: int = 1
) -> dict:
    return {
        "session": sid,
        "examples": [
            {
                "input": {
                    "task": f"{task} {i}" if turns > 1 else task,
                    "context": {"workingDirectory": "/w/p", "relevantFiles": ["/w/p/a.py"]},
                    "conversationHistory": [{"role": "user", "content": "earlier"}] if i else [],
                },
                "actions": [
                    {
                        "step": 1,
                        "tool": "read",
                        "args": {"filePath": "/w/p/a.py"},
                        "result": result,
                        "success": True,
                    },
                    {
                        "step": 2,
                        "tool": "bash",
                        "args": {"command": "pytest -q"},
                        "result": "1 passed",
                        "success": ok,
                    },
                ],
                "output": {"response": "done"},
                "outcome": {"success": ok},
            }
            for i in range(turns)
        ],
    }


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    (d / "a.json").write_text(json.dumps(log("ses_a", turns=2)))
    (d / "b.json").write_text(json.dumps(log("ses_b", ok=False)))
    (d / "c.json").write_text(
        json.dumps(
            log("ses_c", result="cat .env\nOPENAI_API_KEY=sk-proj-Qw3rTy7uI9oP1aS5dF6gH8jK0lZx\n")
        )
    )
    (d / "broken.json").write_text("{")
    return d


def test_example_shape(raw: Path, tmp_path: Path) -> None:
    res = convert([raw], tmp_path / "out")
    examples = load_examples(res.examples_path)
    assert [e.id for e in examples] == ["ses_a/0", "ses_a/1", "ses_c/0"]
    e = examples[1]
    assert e.session_id == "ses_a" and e.turn_index == 1 and e.source == "a.json"
    assert e.history == "user: earlier"
    assert "files: a.py" in e.context  # paths inside the project are made relative
    assert [(a.tool, a.target) for a in e.actions] == [("read", "a.py"), ("bash", "pytest -q")]
    assert e.actions[0].args == {"filePath": "/w/p/a.py"}  # full args kept
    assert e.response == "done" and e.success is True


def test_manifest_counts_drops_redactions_and_problems(raw: Path, tmp_path: Path) -> None:
    res = convert([raw], tmp_path / "out")
    m = res.manifest
    assert (m.sessions_read, m.turns_in, m.examples_kept) == (3, 4, 3)
    assert m.dropped == {"unsuccessful (require_success)": 1}
    assert m.redactions == {"openai-key": 1}
    assert any("broken.json" in p for p in m.problems)
    assert {s.path for s in m.sources} == {"a.json", "b.json", "c.json", "broken.json"}
    assert all(len(s.sha256) == 64 for s in m.sources)
    text = res.examples_path.read_text()
    assert "Qw3rTy7u" not in text and "[REDACTED:openai-key]" in text
    on_disk = json.loads(res.manifest_path.read_text())
    assert on_disk["output_sha256"] == convert_mod.file_sha256(res.examples_path)


def test_no_redact_keeps_secrets(raw: Path, tmp_path: Path) -> None:
    res = convert([raw], tmp_path / "out", redact=False)
    assert "Qw3rTy7u" in res.examples_path.read_text()
    assert res.manifest.redactions == {}


def test_require_success_off_keeps_failed_turns(raw: Path, tmp_path: Path) -> None:
    res = convert([raw], tmp_path / "out", require_success=False)
    ids = [e.id for e in load_examples(res.examples_path)]
    assert "ses_b/0" in ids
    failed = next(e for e in load_examples(res.examples_path) if e.id == "ses_b/0")
    assert failed.success is False


def test_output_is_deterministic(raw: Path, tmp_path: Path) -> None:
    a = convert([raw], tmp_path / "o1")
    copy = tmp_path / "raw2"
    shutil.copytree(raw, copy)
    b = convert([copy], tmp_path / "o2")
    assert a.examples_path.read_bytes() == b.examples_path.read_bytes()
    assert a.manifest_path.read_bytes() == b.manifest_path.read_bytes()


def test_rerun_is_a_no_op_until_something_changes(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = convert([raw], out)
    mtime = first.examples_path.stat().st_mtime_ns
    again = convert([raw], out)
    assert again.cached and again.examples_path.stat().st_mtime_ns == mtime
    assert not convert([raw], out, result_max_chars=10).cached  # settings changed
    (raw / "d.json").write_text(json.dumps(log("ses_d")))
    assert not convert([raw], out, result_max_chars=10).cached  # inputs changed
    assert convert([raw], out, result_max_chars=10).cached
    first.examples_path.write_text("tampered\n")
    assert not convert([raw], out, result_max_chars=10).cached  # output no longer matches


def test_truncation_marks_long_results(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.json").write_text(json.dumps(log("ses_a", result={"lines": ["x" * 50] * 10})))
    res = convert([raw], tmp_path / "out", result_max_chars=40)
    (e,) = load_examples(res.examples_path)
    assert e.actions[0].result_truncated
    assert e.actions[0].result.startswith('{"lines": ["xxx')
    assert "[truncated" in e.actions[0].result


def test_secret_straddling_the_cut_is_still_redacted(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    secret = "sk-proj-Qw3rTy7uI9oP1aS5dF6gH8jK0lZx"
    (raw / "a.json").write_text(
        json.dumps(log("ses_a", result="x" * 30 + " " + secret + "y" * 100))
    )
    res = convert([raw], tmp_path / "out", result_max_chars=40)
    (e,) = load_examples(res.examples_path)
    assert "Qw3r" not in e.actions[0].result and "sk-pr" not in e.actions[0].result
    assert "[REDACTED:openai-key]" in e.actions[0].result


def test_interrupted_write_leaves_previous_output(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    first = convert([raw], out)
    before = first.examples_path.read_bytes()

    calls = {"n": 0}
    real = convert_mod.turn_to_example

    def boom(*args: object, **kwargs: object) -> Example:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(convert_mod, "turn_to_example", boom)
    with pytest.raises(KeyboardInterrupt):
        convert([raw], out, force=True)
    assert first.examples_path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["examples.jsonl", "manifest.json"]


def test_no_inputs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="No session logs found"):
        convert([tmp_path], tmp_path / "out")


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("read", {"filePath": "/w/p/src/x.py"}, "src/x.py"),
        ("bash", {"command": "  ls -la  ", "description": "list"}, "ls -la"),
        ("grep", {"pattern": "TODO", "include": "*.py"}, "TODO"),
        (
            "apply_patch",
            {"patchText": "*** Begin Patch\n*** Update File: src/y.py\n@@"},
            "src/y.py",
        ),
        ("todowrite", {"todos": [{}, {}]}, "2 todos"),
        ("mcp_custom", {"n": 1, "q": "hello"}, "hello"),
        ("webfetch", {"url": "https://x.dev", "format": "markdown"}, "https://x.dev"),
    ],
)
def test_main_argument(tool: str, args: dict, expected: str) -> None:
    assert main_argument(tool, args, "/w/p") == expected
