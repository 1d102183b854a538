"""The project locks: one writer at a time in each half of a project.

A project has two places that stages write: its data folder (`data/`: collect writes `raw/`,
convert `processed/`, split `splits/`) and its outputs folder (`outputs/`: optimize, evaluate
and export). Each has one lock, `.ocdspy.lock` in that folder, held for the whole run of every
stage that writes there; `pipeline` holds both (data first, then outputs, so two runs never wait
on each other in a circle). Readers take no lock: they check what they read against its
manifest's hashes. So `collect` or `convert` can run while a long `optimize` does, but two
`convert`s, or an `evaluate` during an `optimize`, cannot.

The lock is an `flock` on that file: it works across processes and the kernel drops it when the
holder dies, even by SIGKILL, so a lock is never left stale. A second writer waits up to
`WAIT_SECONDS`, then stops with a message naming the holder (pid, command, since when), which
the holder writes into the lock file. Within one process the lock is re-entrant.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ocdspy.errors import ProjectBusy
from ocdspy.layout import LOCK_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

WAIT_SECONDS = 5.0
_POLL = 0.1

_guard = threading.Lock()
_held: dict[str, int] = {}  # lock path -> depth of re-entry


def data_lock_dir(written: Path) -> Path:
    """The data lock's folder for a stage writing into `written`: its parent (`data/` by
    default), shared by collect (`data/raw`), convert (`data/processed`) and split
    (`data/splits`)."""
    return written.expanduser().absolute().parent


def outputs_lock_dir(settings: Any) -> Path:
    """The outputs lock's folder (`outputs.dir`): optimize, evaluate and export write below it."""
    return Path(settings.outputs.dir).expanduser().absolute()


def _command(stage: str) -> str:
    argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    shown = " ".join(argv) if argv and "ocdspy" in " ".join(argv[:2]) else f"ocdspy {stage}"
    return shown if len(shown) <= 200 else shown[:197] + "..."


def describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its name yet)"


def _acquire(path: Path, wait: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                raise ProjectBusy(
                    f"{path}: another ocdspy run is writing in this project: "
                    f"{describe_holder(path)}",
                    hint="wait for it to finish (or stop it), then run this command again",
                )
            time.sleep(_POLL)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def project_lock(directory: Path, stage: str, *, wait: float | None = None) -> Iterator[Path]:
    """Hold the project lock in `directory` for the block; see the module docstring."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory.resolve() / LOCK_FILE
    key = str(path)
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered or fcntl is None:
        try:
            yield path
        finally:
            if reentered:
                with _guard:
                    _held[key] -= 1
        return
    fd = _acquire(path, WAIT_SECONDS if wait is None else wait)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": _command(stage),
        "since": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
    with _guard:
        _held[key] = 1
    try:
        yield path
    finally:
        with _guard:
            del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock
