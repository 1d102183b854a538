"""Writing artifacts safely: atomic replace, several files committed as one, content hashes.

Every file is first written under a unique hidden temp name (`.NAME.XXXXXXXX.tmp`) in its own
directory, with mode 0600 (artifacts hold session text), flushed to disk, then renamed into
place. A killed run can leave such a temp file behind; `remove_stale_temps` deletes them, and
the stages call it only while they hold the project lock, so a live writer's file is never hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from ocdspy.errors import DataError, Interrupted

M = TypeVar("M", bound=BaseModel)

_CHUNK = 1 << 20
PRIVATE = 0o600
# Our temp names: mkstemp's 8 random characters, plus the fixed names older versions used.
_TEMP_NAME = re.compile(r"^\..+\.(?:[a-z0-9_]{8}\.tmp(?:\.json)?|json\.tmp(?:\.json)?)$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_path(path: Path, suffix: str = ".tmp") -> Path:
    """A new, empty, mode-0600 file with a unique name next to `path` (two writers never share
    one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def is_temp_name(name: str) -> bool:
    return bool(_TEMP_NAME.match(name))


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files a killed run left in `directory`. Call only while holding the project
    lock (`ocdspy.lock`): then no live writer owns them."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if is_temp_name(entry.name) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for the few renames of a commit, so a commit is not cut in
    half by them (a pending signal is delivered right after). SIGKILL cannot be held back:
    readers check hashes for that case."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _open_temp(tmp: Path, mode: str) -> Iterator[IO[Any]]:
    encoding = None if "b" in mode else "utf-8"
    newline = None if "b" in mode else "\n"
    with tmp.open(mode, encoding=encoding, newline=newline) as f:
        yield f


class Staged:
    """Files written under temp names now and renamed into place together by `commit()`, in the
    order they were written: write the manifest last, so it is the last to change.

    Used as a context manager: leaving the block normally commits, an exception (or Ctrl-C)
    removes the temp files and leaves every previous file untouched.
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []
        self.committed = False

    @contextlib.contextmanager
    def writer(self, path: Path, mode: str = "w") -> Iterator[IO[Any]]:
        tmp = temp_path(path)
        self._files.append((tmp, path))
        with _open_temp(tmp, mode) as f:
            yield f

    def path(self, path: Path, suffix: str = ".tmp") -> Path:
        """A temp file for a writer we do not control (DSPy's `program.save`), renamed to
        `path` by `commit()` like the others. It exists, empty and mode 0600, so the writer
        keeps that mode."""
        tmp = temp_path(path, suffix)
        self._files.append((tmp, path))
        return tmp

    def text(self, path: Path, text: str) -> None:
        with self.writer(path) as f:
            f.write(text)

    def model(self, path: Path, model: BaseModel) -> None:
        self.text(path, model.model_dump_json(indent=2) + "\n")

    def jsonl(self, path: Path, records: Iterable[BaseModel]) -> tuple[int, str]:
        """Write records as JSON Lines; return (count, sha256 of the bytes written)."""
        digest = hashlib.sha256()
        count = 0
        with self.writer(path, "wb") as f:
            for record in records:
                line = record.model_dump_json().encode("utf-8") + b"\n"
                digest.update(line)
                f.write(line)
                count += 1
        return count, digest.hexdigest()

    def commit(self) -> None:
        for tmp, _ in self._files:
            _fsync_file(tmp)
        with signals_deferred():
            for tmp, path in self._files:
                os.replace(tmp, path)
            self.committed = True
        for directory in {path.parent for _, path in self._files}:
            _fsync_dir(directory)

    def discard(self) -> None:
        for tmp, _ in self._files:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()  # the temps not renamed yet
            raise


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file next to `path`; on success it replaces `path` in one rename.

    An exception (or Ctrl-C) leaves the old file untouched and removes the temp file.
    """
    with Staged() as staged, staged.writer(path, mode) as f:
        yield f


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def write_model_atomic(path: Path, model: BaseModel) -> None:
    write_text_atomic(path, model.model_dump_json(indent=2) + "\n")


def write_jsonl_atomic(path: Path, records: Iterable[BaseModel]) -> tuple[int, str]:
    """Write records as JSON Lines atomically; return (count, sha256 of the bytes written)."""
    with Staged() as staged:
        return staged.jsonl(path, records)


class Artifact(BaseModel):
    """A model stored as one JSON file (a report, a manifest, a state file): `load` is its
    typed reader, so no stage parses an artifact as a raw dict."""

    @classmethod
    def load(cls: type[M], path: Path, *, hint: str | None = None) -> M:
        """The artifact at `path`; a missing, unreadable or invalid file raises `DataError`
        naming the file and the first field at fault (with `hint`: what to re-run)."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as e:
            raise DataError(f"{path}: cannot read it ({e.strerror or e})", hint=hint) from None
        except ValidationError as e:
            raise DataError(
                f"{path}: not a valid {cls.__name__} ({_first_error(e)})", hint=hint
            ) from None


def _first_error(e: ValidationError) -> str:
    first = e.errors(include_url=False)[0]
    where = ".".join(str(x) for x in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def read_jsonl(path: Path, model: type[M]) -> Iterator[M]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield model.model_validate_json(line)


def read_verified(path: Path, expected: str, *, manifest: Path, rerun: str) -> bytes:
    """The bytes of `path`, refused unless they are the ones its manifest recorded (a run was
    killed between two renames, or the file was edited). The bytes checked are the bytes
    returned, so a writer replacing the file meanwhile cannot slip past the check."""
    if not path.is_file():
        raise DataError(f"{path}: missing, but {manifest} lists it", hint=f"re-run `{rerun}`")
    data = path.read_bytes()
    if bytes_sha256(data) != expected:
        raise DataError(
            f"{path}: does not match {manifest} (its SHA-256 differs: an interrupted run "
            "or an edit)",
            hint=f"re-run `{rerun}`",
        )
    return data


def kept_after_interrupt(staged: Staged, files: str) -> str:
    """The one line a stage's Ctrl-C prints: whether its commit happened."""
    if staged.committed:
        return f"the new {files} had been written in full; they are complete"
    return f"nothing written; the previous {files} are unchanged"


@contextlib.contextmanager
def on_interrupt(kept: Callable[[], str]) -> Iterator[None]:
    """Turn Ctrl-C inside the block into `Interrupted(kept())`, the one line the CLI prints."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as e:
        raise Interrupted(kept()) from e
