"""Every planted secret, in tool arguments and in tool results, through convert -> split ->
program -> export: no artifact written holds any raw value (issue 11 §1)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ocdspy.convert import convert
from ocdspy.export import export_agent
from ocdspy.redact import find_secrets, find_spans, redact_text
from ocdspy.split import split

try:
    from tests.secrets_corpus import Planted, corpus, program_from, session_file
except ImportError:  # pragma: no cover - tests/ on sys.path instead of the repo root
    from secrets_corpus import (  # type: ignore[no-redef]
        Planted,
        corpus,
        program_from,
        session_file,
    )

CORPUS = corpus()


def test_the_corpus_has_at_least_forty_kinds() -> None:
    assert len({p.kind for p in CORPUS}) >= 40


@pytest.mark.parametrize("planted", CORPUS, ids=[p.kind for p in CORPUS])
def test_each_kind_is_redacted_and_found(planted: Planted) -> None:
    counts: Counter[str] = Counter()
    out = redact_text(planted.text, counts)
    assert planted.secret not in out
    assert sum(counts.values()) >= 1
    assert find_secrets(planted.text), "export's check must see what redaction sees"
    # Placeholders never trigger the scanner, and redacting twice changes nothing.
    assert find_spans(out) == [] and redact_text(out) == out


def test_no_planted_secret_survives_in_any_artifact(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    for i, planted in enumerate(CORPUS):
        session_file(raw / f"s{i:03d}.json", i, planted)

    processed, splits = tmp_path / "data" / "processed", tmp_path / "data" / "splits"
    res = convert([raw], processed)
    assert res.manifest.redactions, "redaction ran"
    split(processed / "examples.jsonl", splits, train_fraction=0.5, seed=0)
    program = program_from(splits / "train.jsonl", tmp_path / "program.json")
    exported = export_agent(
        program,
        tmp_path / "prompts",
        target_provider="ollama",
        target_model="qwen2.5-coder:7b",
        examples_path=splits / "train.jsonl",
    )
    assert "## Worked examples" in exported.agent_path.read_text()

    written = [p for p in tmp_path.rglob("*") if p.is_file() and raw not in p.parents]
    assert len(written) >= 5
    leaks = [
        (p.kind, f.relative_to(tmp_path))
        for f in written
        for p in CORPUS
        if p.secret in f.read_text(encoding="utf-8")
        or json.dumps(p.secret)[1:-1] in f.read_text(encoding="utf-8")
    ]
    assert leaks == []


def _leaks(files: list[Path]) -> list[tuple[str, str]]:
    return [
        (p.kind, f.name)
        for f in files
        for p in CORPUS
        if p.secret in f.read_text(encoding="utf-8")
        or json.dumps(p.secret)[1:-1] in f.read_text(encoding="utf-8")
    ]


def test_the_plugin_pool_redacts_even_unredacted_examples(tmp_path: Path) -> None:
    """The pool does not rely on convert: built from examples converted with --no-redact, it
    still holds no planted value, and write_plugin's own scan passes it."""
    from ocdspy.convert import load_examples
    from ocdspy.plugin import write_plugin
    from ocdspy.program.select import build_pool

    raw = tmp_path / "raw"
    raw.mkdir()
    for i, planted in enumerate(CORPUS):
        session_file(raw / f"s{i:03d}.json", i, planted)
    convert([raw], tmp_path / "processed", redact=False)
    examples = load_examples(tmp_path / "processed" / "examples.jsonl")
    assert _leaks([tmp_path / "processed" / "examples.jsonl"]), "the input really holds secrets"
    steps = [(ex, step) for ex in examples for step in range(len(ex.actions) + 1)]
    pool = build_pool("tuned", steps)
    assert len(pool.demos) == len(steps)
    written = write_plugin(tmp_path / "plugins", "tuned", pool)
    assert _leaks(written) == []
