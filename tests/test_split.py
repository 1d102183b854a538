from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocdspy.artifacts import write_jsonl_atomic, write_model_atomic
from ocdspy.convert import ConvertManifest, ConvertSettings, Example
from ocdspy.errors import DataError
from ocdspy.split import assign, load_split, split


def ex(sid: str, turn: int = 0, ok: bool = True, parent: str | None = None) -> Example:
    return Example(
        id=f"{sid}/{turn}",
        session_id=sid,
        turn_index=turn,
        source="s",
        source_format="plugin",
        task="t",
        context="",
        history="",
        success=ok,
        parent_session_id=parent,
    )


def corpus(n_ok: int = 16, n_fail: int = 4, turns: int = 2) -> list[Example]:
    out = []
    for i in range(n_ok + n_fail):
        ok = i < n_ok
        out += [ex(f"s{i:02d}", t, ok) for t in range(turns)]
    return out


def write_examples(path: Path, examples: list[Example]) -> Path:
    """examples.jsonl plus the convert manifest split checks it against."""
    _, sha = write_jsonl_atomic(path, examples)
    write_model_atomic(
        path.parent / "manifest.json",
        ConvertManifest(
            settings=ConvertSettings(require_success=True, result_max_chars=2000, redact=True),
            sources=[],
            sessions_read=0,
            turns_in=len(examples),
            examples_kept=len(examples),
            dropped={},
            redactions={},
            problems=[],
            output=path.name,
            output_sha256=sha,
        ),
    )
    return path


def test_sessions_never_straddle_and_sub_agents_follow_their_parent() -> None:
    data = [*corpus(), ex("child", 0, True, parent="s03")]
    train, val = assign(data, train_fraction=0.2, seed=1)
    train_sessions = {e.session_id for e in train}
    assert not train_sessions & {e.session_id for e in val}
    assert ("child" in train_sessions) == ("s03" in train_sessions)


def test_fraction_seed_and_balance() -> None:
    data = corpus()
    train, val = assign(data, train_fraction=0.2, seed=7)
    assert len(train) + len(val) == len(data)
    assert len(train) == 8  # 20% of 40 examples, in whole sessions
    assert any(not e.success for e in train) and any(not e.success for e in val)
    again, _ = assign(data, train_fraction=0.2, seed=7)
    assert [e.id for e in again] == [e.id for e in train]
    other, _ = assign(data, train_fraction=0.2, seed=8)
    assert [e.id for e in other] != [e.id for e in train]


def test_too_few_sessions_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="Too few sessions"):
        assign([ex("only", 0), ex("only", 1)], train_fraction=0.5, seed=0)
    with pytest.raises(DataError, match="one side empty"):
        assign(corpus(), train_fraction=0.0, seed=0)


def test_tiny_fraction_still_gives_both_sides_one_session() -> None:
    train, val = assign([ex("a"), ex("b"), ex("c")], train_fraction=0.01, seed=0)
    assert len(train) == 1 and len(val) == 2


def test_split_writes_files_and_manifest(tmp_path: Path) -> None:
    src = write_examples(tmp_path / "processed" / "examples.jsonl", corpus())
    res = split(src, tmp_path / "splits", train_fraction=0.2, seed=0)
    m = res.manifest
    assert m.train.examples + m.val.examples == 40
    assert m.train.sessions + m.val.sessions == 20
    assert not set(m.train.session_ids) & set(m.val.session_ids)
    assert res.train_path.read_text().count("\n") == m.train.examples
    first = res.train_path.read_bytes()
    assert (
        split(src, tmp_path / "splits", train_fraction=0.2, seed=0).train_path.read_bytes() == first
    )
    loaded = load_split(tmp_path / "splits")
    assert len(loaded.train) == m.train.examples and loaded.manifest == m


def test_split_refuses_examples_without_a_matching_convert_manifest(tmp_path: Path) -> None:
    src = write_examples(tmp_path / "processed" / "examples.jsonl", corpus())
    write_jsonl_atomic(src, corpus(n_ok=3))  # new examples, old manifest
    with pytest.raises(DataError, match=r"examples\.jsonl: does not match") as info:
        split(src, tmp_path / "splits")
    assert "ocdspy convert" in str(info.value)
    (tmp_path / "processed" / "manifest.json").unlink()
    with pytest.raises(DataError, match="no convert manifest"):
        split(src, tmp_path / "splits")
    assert not (tmp_path / "splits" / "train.jsonl").exists()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=30),
    fails=st.lists(st.booleans(), min_size=30, max_size=30),
    frac=st.floats(0.05, 0.95),
    seed=st.integers(0, 1000),
)
def test_split_properties(sizes: list[int], fails: list[bool], frac: float, seed: int) -> None:
    data = [ex(f"s{i}", t, not fails[i]) for i, n in enumerate(sizes) for t in range(n)]
    train, val = assign(data, train_fraction=frac, seed=seed)
    assert train and val
    assert sorted(e.id for e in train + val) == sorted(e.id for e in data)
    assert not {e.session_id for e in train} & {e.session_id for e in val}
