"""validate's data requirements, counted by parsing the inputs or taken from convert's manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

from ocdspy.convert import ConvertManifest, ConvertResult, convert
from ocdspy.validate import RequirementCheck, check_converted, validate


def shown(checks: list[RequirementCheck]) -> list[tuple[str, bool, str, str | None]]:
    return [(c.name, c.ok, c.message, c.fix) for c in checks]


def converted(raw: Path, out: Path, *, require_success: bool = True) -> ConvertResult:
    return convert([raw], out, require_success=require_success)


def test_requirements_from_convert_match_validate(tmp_path: Path, examples_raw: Path) -> None:
    for require_success in (True, False):
        out = tmp_path / f"processed-{require_success}"
        result = converted(examples_raw, out, require_success=require_success)
        for min_examples in (10, 100):
            parsed = validate(
                [examples_raw], min_examples=min_examples, require_success=require_success
            )
            from_manifest = check_converted(result, [examples_raw], min_examples=min_examples)
            # Only the successful-sessions count is unknown to the manifest (its check still is).
            assert shown(from_manifest)[0] == shown(parsed.requirements)[0]
            assert [c.ok for c in from_manifest] == [c.ok for c in parsed.requirements]
            assert shown(from_manifest)[-1] == shown(parsed.requirements)[-1]
    assert (
        "need at least 100" in check_converted(result, [examples_raw], min_examples=100)[-1].message
    )


def test_requirements_come_from_the_manifest_without_reading_the_inputs(
    tmp_path: Path, examples_raw: Path
) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(examples_raw, raw)
    result = converted(raw, tmp_path / "processed")
    shutil.rmtree(raw)  # nothing left to parse
    manifest = ConvertManifest.model_validate_json(result.manifest_path.read_bytes())
    from_disk = result.model_copy(update={"manifest": manifest, "cached": True})
    checks = check_converted(from_disk, [raw], min_examples=20)
    assert shown(checks)[-1] == (
        "enough examples",
        False,
        "Not enough examples: found 13 successful examples, need at least 20",
        "record more sessions, or lower data.min_examples (fewer examples give the optimizer "
        "less to learn from)",
    )


def test_no_kept_example_or_no_session_fails_with_the_first_unmet_requirement(
    tmp_path: Path, examples_raw: Path
) -> None:
    result = converted(examples_raw, tmp_path / "processed")
    none_kept = result.model_copy(
        update={"manifest": result.manifest.model_copy(update={"examples_kept": 0})}
    )
    first_failed = next(
        c for c in check_converted(none_kept, [examples_raw], min_examples=1) if not c.ok
    )
    assert first_failed.message == "No successful sessions found"
    assert "data.require_success: false" in (first_failed.fix or "")
    no_sessions = result.model_copy(
        update={"manifest": result.manifest.model_copy(update={"sessions_read": 0})}
    )
    checks = check_converted(no_sessions, [examples_raw], min_examples=1)
    assert shown(checks) == [
        (
            "sessions",
            False,
            f"No session logs found in {examples_raw}",
            shown(validate([tmp_path / "empty"]).requirements)[0][3],
        )
    ]
