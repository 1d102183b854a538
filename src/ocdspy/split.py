"""split: examples -> train.jsonl / val.jsonl, grouped by session, seeded, outcome-balanced.

All turns of one session (and of the sub-agent sessions it started) land on the same side, or
the validation score would reward memorising a session seen in training. Sessions are split per
outcome stratum (all turns successful / none / mixed) so both sides see failures when there are any.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from ocdspy import __version__
from ocdspy.artifacts import file_sha256, write_jsonl_atomic, write_model_atomic
from ocdspy.convert import Example, load_examples
from ocdspy.errors import DataError

TRAIN_FILE = "train.jsonl"
VAL_FILE = "val.jsonl"
MANIFEST_FILE = "manifest.json"


class SideSummary(BaseModel):
    file: str
    sha256: str
    examples: int
    sessions: int
    successful: int
    failed: int
    session_ids: list[str]


class SplitManifest(BaseModel):
    producer: str = f"ocdspy {__version__}"
    stage: str = "split"
    input: str
    input_sha256: str
    seed: int
    train_fraction: float
    train: SideSummary
    val: SideSummary


class SplitResult(BaseModel):
    train_path: Path
    val_path: Path
    manifest_path: Path
    manifest: SplitManifest


def _group_key(ex: Example) -> str:
    return ex.parent_session_id or ex.session_id


def _stratum(group: list[Example]) -> str:
    ok = sum(e.success for e in group)
    return "success" if ok == len(group) else "failure" if ok == 0 else "mixed"


def assign(
    examples: list[Example], *, train_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Pure split logic: (train, val), grouped by session and balanced per outcome stratum."""
    if train_fraction <= 0 or train_fraction >= 1:
        raise DataError(
            f"train fraction {train_fraction} leaves one side empty",
            hint="set data.train_split and data.val_split both above 0",
        )
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[_group_key(ex)].append(ex)
    if len(groups) < 2:
        raise DataError(
            f"Too few sessions to split: {len(groups)} session(s) with {len(examples)} examples; "
            "a session's turns stay on one side, so both sides need at least one session each",
            hint="record or collect more sessions",
        )
    rng = random.Random(seed)
    strata: dict[str, list[str]] = defaultdict(list)
    for key in sorted(groups):
        strata[_stratum(groups[key])].append(key)

    train_keys: set[str] = set()
    for name in sorted(strata):
        keys = strata[name]
        rng.shuffle(keys)
        total = sum(len(groups[k]) for k in keys)
        target = train_fraction * total
        taken = 0
        for k in keys:
            size = len(groups[k])
            if abs(taken + size - target) < abs(taken - target):
                train_keys.add(k)
                taken += size

    # Neither side may be empty: move the smallest session across when one is.
    all_keys = sorted(groups, key=lambda k: (len(groups[k]), k))
    if not train_keys:
        train_keys.add(all_keys[0])
    if len(train_keys) == len(groups):
        train_keys.discard(next(k for k in all_keys if k in train_keys))
    train = [e for e in examples if _group_key(e) in train_keys]
    val = [e for e in examples if _group_key(e) not in train_keys]
    return train, val


def _summary(path: Path, sha: str, side: list[Example]) -> SideSummary:
    return SideSummary(
        file=path.name,
        sha256=sha,
        examples=len(side),
        sessions=len({e.session_id for e in side}),
        successful=sum(e.success for e in side),
        failed=sum(not e.success for e in side),
        session_ids=sorted({e.session_id for e in side}),
    )


def split(
    examples_path: Path, out_dir: Path, *, train_fraction: float = 0.2, seed: int = 0
) -> SplitResult:
    examples = load_examples(examples_path)
    if len(examples) < 2:
        raise DataError(
            f"{examples_path}: {len(examples)} example(s); need at least 2 to split",
            hint="check `ocdspy convert`'s dropped counts (require_success may drop failed turns)",
        )
    train, val = assign(examples, train_fraction=train_fraction, seed=seed)
    train_path, val_path = out_dir / TRAIN_FILE, out_dir / VAL_FILE
    _, train_sha = write_jsonl_atomic(train_path, train)
    _, val_sha = write_jsonl_atomic(val_path, val)
    manifest = SplitManifest(
        input=str(examples_path),
        input_sha256=file_sha256(examples_path),
        seed=seed,
        train_fraction=train_fraction,
        train=_summary(train_path, train_sha, train),
        val=_summary(val_path, val_sha, val),
    )
    manifest_path = out_dir / MANIFEST_FILE
    write_model_atomic(manifest_path, manifest)
    return SplitResult(
        train_path=train_path, val_path=val_path, manifest_path=manifest_path, manifest=manifest
    )
