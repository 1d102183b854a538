"""Writing artifacts safely: atomic replace, content hashes, JSON Lines."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file next to `path`; on success it replaces `path` in one rename.

    An exception (or Ctrl-C) leaves the old file untouched and removes the temp file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        newline = None if "b" in mode else "\n"
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def write_model_atomic(path: Path, model: BaseModel) -> None:
    write_text_atomic(path, model.model_dump_json(indent=2) + "\n")


def write_jsonl_atomic(path: Path, records: Iterable[BaseModel]) -> tuple[int, str]:
    """Write records as JSON Lines atomically; return (count, sha256 of the bytes written)."""
    h = hashlib.sha256()
    n = 0
    with atomic_writer(path, "wb") as f:
        for rec in records:
            line = rec.model_dump_json().encode("utf-8") + b"\n"
            h.update(line)
            f.write(line)
            n += 1
    return n, h.hexdigest()


def read_jsonl(path: Path, model: type[M]) -> Iterator[M]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield model.model_validate_json(line)
