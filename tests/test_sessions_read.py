from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ocdspy.sessions import Problem, SessionRead, discover, read_paths
from ocdspy.sessions.read import Source, read_source
from ocdspy.validate import validate


def minimal(sid: str = "ses_a", task: str = "do it", **extra: object) -> dict:
    doc = {
        "session": sid,
        "examples": [
            {
                "input": {"task": task},
                "actions": [{"tool": "read", "args": {"filePath": "a"}, "success": True}],
                "output": {"response": "done"},
                "outcome": {"success": True},
            }
        ],
    }
    doc.update(extra)
    return doc


def read_all(paths: list[Path]) -> tuple[list[SessionRead], list[Problem]]:
    _, items = read_paths(paths)
    got = list(items)
    return (
        [i for i in got if isinstance(i, SessionRead)],
        [i for i in got if isinstance(i, Problem)],
    )


def test_sample_reads_and_keeps_unknown_fields(data_dir: Path, tmp_path: Path) -> None:
    sessions, problems = read_all([data_dir / "plugin" / "sample-enhanced.json"])
    assert problems == []
    (s,) = sessions
    assert s.format == "plugin"
    assert s.session.session_id == "ses_550e8400e29b41d4a716446655440000"
    assert len(s.session.examples) == 2
    doc = minimal(futureField={"x": 1})
    doc["examples"][0]["actions"][0]["newThing"] = [1, 2]
    p = tmp_path / "f.json"
    p.write_text(json.dumps(doc))
    (s2,), _ = read_all([p])
    dumped = s2.session.model_dump(mode="json", exclude_none=True)
    assert dumped["futureField"] == {"x": 1}
    assert dumped["examples"][0]["actions"][0]["newThing"] == [1, 2]


def test_plugin_variant_with_top_level_totals(tmp_path: Path) -> None:
    doc = minimal()
    doc["examples"][0].pop("outcome")
    doc.update(totalTurns=1, successfulTurns=0, overallSuccess=False, totalToolCalls=1)
    p = tmp_path / "v.json"
    p.write_text(json.dumps(doc))
    (s,), problems = read_all([p])
    assert problems == []
    assert s.session.turn_success(0) is False  # from overallSuccess


BAD_INPUTS: dict[str, tuple[bytes, str]] = {
    "empty.json": (b"", "file is empty"),
    "blank.json": (b"  \n\t ", "file is empty"),
    "truncated.json": (json.dumps(minimal()).encode()[:40], "truncated"),
    "array.json": (b"[1, 2]", "top level must be a JSON object"),
    "string.json": (b'"hello"', "top level must be a JSON object"),
    "no-examples.json": (b'{"session": "x", "foo": 1}', "no 'examples' array"),
    "wrong-type.json": (json.dumps(minimal(task=5)).encode(), "examples[0].input.task"),
    "syntax.json": (b'{"session": "x", "examples": [}', "invalid JSON"),
}


def test_each_bad_file_gets_its_own_message_and_others_still_read(tmp_path: Path) -> None:
    for name, (content, _) in BAD_INPUTS.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "good.json").write_text(json.dumps(minimal("ses_good")))
    sessions, problems = read_all([tmp_path])
    assert [s.session.session_id for s in sessions] == ["ses_good"]
    for name, (_, expected) in BAD_INPUTS.items():
        mine = [str(p) for p in problems if p.file.endswith(name)]
        assert mine, f"no problem reported for {name}"
        assert any(expected in m for m in mine), (name, mine)
        assert all(m.startswith(str(tmp_path / name)) for m in mine)


def test_wrong_type_names_the_json_path(tmp_path: Path) -> None:
    doc = minimal()
    doc["examples"][0]["actions"][0]["tool"] = None
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    _, problems = read_all([p])
    assert [(pr.where, pr.severity) for pr in problems] == [
        ("examples[0].actions[0].tool", "error")
    ]


def test_non_utf8_is_read_with_a_warning(tmp_path: Path) -> None:
    raw = json.dumps(minimal(task="fix cafXX")).encode().replace(b"XX", b"\xe9\xff")
    p = tmp_path / "latin.json"
    p.write_bytes(raw)
    sessions, problems = read_all([p])
    assert len(sessions) == 1
    assert "\ufffd" in sessions[0].session.examples[0].input.task
    assert [pr.severity for pr in problems] == ["warning"]
    assert "UTF-8" in problems[0].message


def test_nan_is_a_warning_and_reads_as_null(tmp_path: Path) -> None:
    doc = json.dumps(minimal()).replace(
        '"success": true}]', '"success": true, "metrics": {"cacheHitRate": NaN}}]'
    )
    p = tmp_path / "nan.json"
    p.write_text(doc)
    sessions, problems = read_all([p])
    assert len(sessions) == 1
    assert len(problems) == 1 and "NaN at line 1" in problems[0].message
    assert problems[0].severity == "warning"


def test_duplicate_session_ids(tmp_path: Path) -> None:
    a = json.dumps(minimal("ses_dup"))
    (tmp_path / "a.json").write_text(a)
    (tmp_path / "b.json").write_text(a)  # identical copy: warning
    (tmp_path / "c.json").write_text(json.dumps(minimal("ses_dup", task="other")))  # differs
    sessions, problems = read_all([tmp_path])
    assert len(sessions) == 1 and sessions[0].file.name == "a.json"
    by_file = {Path(p.file).name: p for p in problems}
    assert by_file["b.json"].severity == "warning"
    assert by_file["c.json"].severity == "error"
    assert "a.json" in by_file["c.json"].message


def test_globs_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "x1.json").write_text(json.dumps(minimal("s1")))
    (tmp_path / "x2.json").write_text(json.dumps(minimal("s2")))
    (tmp_path / "notes.txt").write_text("not a log")
    found = discover([str(tmp_path / "x*.json"), tmp_path / "nope", str(tmp_path / "z*.json")])
    assert sorted(s.path.name for s in found.sources) == ["x1.json", "x2.json"]
    assert {p.message for p in found.problems} == {
        "no such file or directory",
        "no file matches this pattern",
    }
    assert [s.path.name for s in discover([tmp_path]).sources] == ["x1.json", "x2.json"]


def test_explicit_unknown_file_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    (src,) = discover([p]).sources
    (problem,) = list(read_source(src))
    assert isinstance(problem, Problem) and "unrecognized input" in problem.message


def test_large_file_is_read(tmp_path: Path) -> None:
    doc = minimal()
    big = "x" * 20_000
    doc["examples"] = [
        {"input": {"task": f"t{i}"}, "actions": [{"tool": "bash", "result": big}]}
        for i in range(1500)
    ]
    p = tmp_path / "big.json"
    p.write_text(json.dumps(doc))
    assert p.stat().st_size > 30_000_000
    (s,), problems = read_all([p])
    assert problems == [] and len(s.session.examples) == 1500


def test_validate_reports_requirements(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(minimal("s1")))
    report = validate([tmp_path], min_examples=10, require_success=True)
    assert not report.valid
    failed = [r for r in report.requirements if not r.ok]
    assert [r.name for r in failed] == ["enough examples"]
    assert "found 1" in failed[0].message and failed[0].fix
    empty = tmp_path / "empty"
    empty.mkdir()
    r2 = validate([empty], min_examples=1)
    assert r2.requirements[0].message.startswith("No session logs found")
    doc = minimal("s2")
    doc["examples"][0]["outcome"]["success"] = False
    only_failed = tmp_path / "failed"
    only_failed.mkdir()
    (only_failed / "f.json").write_text(json.dumps(doc))
    r3 = validate([only_failed], min_examples=1)
    assert "No successful sessions found" in [r.message for r in r3.requirements]
    assert validate([only_failed], min_examples=1, require_success=False).valid


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "session",
                    "examples",
                    "input",
                    "task",
                    "actions",
                    "tool",
                    "args",
                    "outcome",
                    "success",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values)
def test_reader_never_raises_on_any_json(tmp_path_factory, value: object) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path_factory.mktemp("h") / "f.json"
    p.write_text(json.dumps(value))
    items = list(read_source(Source(p, "json")))
    assert items
    assert all(isinstance(i, (Problem, SessionRead)) for i in items)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_reader_never_raises_on_any_bytes(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path_factory.mktemp("b") / "f.json"
    p.write_bytes(data)
    items = list(read_source(Source(p, "json")))
    assert items


def test_same_session_from_another_origin_is_only_a_warning(tmp_path: Path) -> None:
    (tmp_path / "a-plugin.json").write_text(json.dumps(minimal("ses_x")))
    collected = minimal("ses_x", task="as OpenCode stored it", sourceFormat="opencode-db")
    (tmp_path / "b-collected.json").write_text(json.dumps(collected))
    sessions, problems = read_all([tmp_path])
    assert [s.file.name for s in sessions] == ["a-plugin.json"]
    assert [(Path(p.file).name, p.severity) for p in problems] == [("b-collected.json", "warning")]
