"""split: examples -> train.jsonl / val.jsonl, grouped by session, seeded, outcome-balanced.

All turns of one session (and of the sub-agent sessions it started) land on the same side, or
the validation score would reward memorising a session seen in training. Sessions are split per
outcome stratum (all turns successful / none / mixed) so both sides see failures when there are any.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import (
    Artifact,
    Staged,
    kept_after_interrupt,
    on_interrupt,
    read_verified,
    remove_stale_temps,
)
from ocdspy.convert import Example, load_verified_examples, parse_examples
from ocdspy.errors import DataError
from ocdspy.layout import MANIFEST_FILE, TRAIN_FILE, VAL_FILE
from ocdspy.lock import data_lock_dir, project_lock


class SideSummary(BaseModel):
    file: str
    sha256: str
    examples: int
    sessions: int
    successful: int
    failed: int
    session_ids: list[str]


class SplitManifest(Artifact):
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


def _files(out_dir: Path) -> str:
    return f"{TRAIN_FILE}, {VAL_FILE} and {MANIFEST_FILE} in {out_dir}"


def split(
    examples_path: Path, out_dir: Path, *, train_fraction: float = 0.2, seed: int = 0
) -> SplitResult:
    """Split convert's examples into `train.jsonl` / `val.jsonl` plus a manifest with their
    hashes, committed as one unit under the project lock (see `write_split`)."""
    nothing = f"nothing written; the previous {_files(out_dir)} are unchanged"
    with on_interrupt(lambda: nothing), project_lock(data_lock_dir(out_dir), "split"):
        remove_stale_temps(out_dir)
        examples, _, input_sha256 = load_verified_examples(examples_path)
        if len(examples) < 2:
            raise DataError(
                f"{examples_path}: {len(examples)} example(s); need at least 2 to split",
                hint="check `ocdspy convert`'s dropped counts (require_success may drop failed "
                "turns)",
            )
        train, val = assign(examples, train_fraction=train_fraction, seed=seed)
        return write_split(
            out_dir,
            train,
            val,
            input_path=examples_path,
            input_sha256=input_sha256,
            seed=seed,
            train_fraction=train_fraction,
        )


def write_split(
    out_dir: Path,
    train: list[Example],
    val: list[Example],
    *,
    input_path: Path | None = None,
    input_sha256: str = "",
    seed: int = 0,
    train_fraction: float | None = None,
) -> SplitResult:
    """Write both sides, then the manifest naming their hashes, and rename all three into place
    only once all are written: Ctrl-C before that changes nothing (`Interrupted` says so), and a
    kill between the renames leaves files that `load_split` refuses by their hashes.

    Also the way to store a split made by hand (the input fields then stay empty)."""
    if train_fraction is None:
        train_fraction = len(train) / max(1, len(train) + len(val))
    train_path, val_path = out_dir / TRAIN_FILE, out_dir / VAL_FILE
    manifest_path = out_dir / MANIFEST_FILE
    staged = Staged()
    with on_interrupt(lambda: kept_after_interrupt(staged, _files(out_dir))), staged:
        _, train_sha = staged.jsonl(train_path, train)
        _, val_sha = staged.jsonl(val_path, val)
        manifest = SplitManifest(
            input=str(input_path) if input_path is not None else "",
            input_sha256=input_sha256,
            seed=seed,
            train_fraction=train_fraction,
            train=_summary(train_path, train_sha, train),
            val=_summary(val_path, val_sha, val),
        )
        staged.model(manifest_path, manifest)
    return SplitResult(
        train_path=train_path, val_path=val_path, manifest_path=manifest_path, manifest=manifest
    )


# ---------------------------------------------------------------------------------------------
# Reading a split back: the one place that checks it


class LoadedSplit(BaseModel):
    train: list[Example]
    val: list[Example]
    manifest: SplitManifest
    train_path: Path
    val_path: Path


_RERUN = "ocdspy split"


def _split_manifest(splits_dir: Path) -> tuple[SplitManifest, Path]:
    manifest_path = splits_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        missing = [n for n in (TRAIN_FILE, VAL_FILE) if not (splits_dir / n).is_file()]
        what = "split not found" if missing else "no split manifest, so the split cannot be checked"
        raise DataError(f"{manifest_path}: {what}", hint=f"run `{_RERUN}`")
    return SplitManifest.load(manifest_path, hint=f"re-run `{_RERUN}`"), manifest_path


def shared_sessions(train: list[Example], val: list[Example]) -> list[str]:
    """Sessions (or their parent sessions) found on both sides."""
    keys = {e.session_id for e in train} | {_group_key(e) for e in train}
    return sorted({k for e in val for k in (e.session_id, _group_key(e)) if k in keys})


def load_split(splits_dir: Path) -> LoadedSplit:
    """Both sides of the split in `splits_dir`, refused unless they are the files the manifest
    describes (by SHA-256 of the very bytes parsed) and no session is on both sides. Every
    stage that reads a split calls this."""
    m, manifest_path = _split_manifest(splits_dir)
    sides = []
    for side in (m.train, m.val):
        path = splits_dir / side.file
        data = read_verified(path, side.sha256, manifest=manifest_path, rerun=_RERUN)
        sides.append(parse_examples(data, path))
    train, val = sides
    train_path, val_path = splits_dir / m.train.file, splits_dir / m.val.file
    shared = shared_sessions(train, val)
    if shared:
        raise DataError(
            f"{val_path}: the validation split shares {len(shared)} session(s) with "
            f"{train_path.name} (e.g. {shared[0]}), so its score would reward memorising them",
            hint=f"re-run `{_RERUN}`",
        )
    return LoadedSplit(train=train, val=val, manifest=m, train_path=train_path, val_path=val_path)


class DataRef(BaseModel):
    """One side of the split as a run record names it."""

    path: str
    sha256: str
    examples: int = Field(description="Turns (recorded examples) in the file.")
    program_examples: int = Field(0, description="DSPy examples made from them for this mode.")


class Splits(BaseModel):
    """A checked split with both sides non-empty: what optimize and evaluate read."""

    train: list[Example]
    val: list[Example]
    refs: dict[str, DataRef]


def load_splits(splits_dir: Path) -> Splits:
    """The split, checked by `load_split` (hashes, no shared session), refused when a side is
    empty: the optimizer needs examples to learn from, evaluate needs examples to score."""
    loaded = load_split(splits_dir)
    train, val = loaded.train, loaded.val
    if not train:
        raise DataError(
            f"{loaded.train_path}: no training examples",
            hint="raise data.train_split or add sessions, then re-run `ocdspy split`",
        )
    if not val:
        raise DataError(
            f"{loaded.val_path}: no validation examples",
            hint="lower data.train_split or add sessions, then re-run `ocdspy split`",
        )
    manifest = loaded.manifest
    refs = {
        "train": DataRef(
            path=str(loaded.train_path), sha256=manifest.train.sha256, examples=len(train)
        ),
        "val": DataRef(path=str(loaded.val_path), sha256=manifest.val.sha256, examples=len(val)),
    }
    return Splits(train=train, val=val, refs=refs)
