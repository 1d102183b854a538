"""A turn's starting workspace, rebuilt in a temp folder: from OpenCode's snapshot store, a
copy of a folder, or a git revision. Never the user's checkout, and never a write into the
store: `read-tree` gets its own index file (`GIT_INDEX_FILE`), so the store stays byte-identical.

The store is a bare git repository per project and worktree,
`<data dir>/snapshot/<project id>/<sha1 of the worktree path>/` (checked on OpenCode 1.18.33).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ocdspy.errors import DataError

SNAPSHOT_DIR = "snapshot"
GIT_TIMEOUT = 120
# Files a replay never compares: git's own, and bytecode a verify command leaves behind.
_SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".pytest_cache"})


def _git(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    full_env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    try:
        proc = subprocess.run(
            ["git", *args],
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
        )
    except FileNotFoundError:
        raise DataError("git is not installed: replay needs it to restore workspaces") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise DataError(f"git {args[-1]}: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def snapshot_git_dir(data_dir: Path, project_id: str, directory: str) -> Path:
    """The snapshot repository OpenCode keeps for `directory` of project `project_id`."""
    worktree = hashlib.sha1(directory.encode("utf-8")).hexdigest()
    return data_dir / SNAPSHOT_DIR / project_id / worktree


def find_snapshot(data_dir: Path, project_id: str | None, directory: str | None, tree: str) -> Path:
    """The snapshot repository that holds `tree`, or a DataError saying what is missing."""
    root = data_dir / SNAPSHOT_DIR
    if not root.is_dir():
        raise DataError(f"{root}: no OpenCode snapshot store")
    candidates: list[Path] = []
    if project_id and directory:
        candidates.append(snapshot_git_dir(data_dir, project_id, directory))
    if project_id and (root / project_id).is_dir():
        candidates += sorted(p for p in (root / project_id).iterdir() if p.is_dir())
    if not any(c.is_dir() for c in candidates):
        raise DataError(f"{root}: no snapshots of project {project_id or '?'} (another machine?)")
    for git_dir in dict.fromkeys(candidates):
        if git_dir.is_dir() and _has_tree(git_dir, tree):
            return git_dir
    broken = [c for c in candidates if (c / "HEAD").is_file() and not (c / "refs").is_dir()]
    if broken:
        # Git keeps no empty folder: a store copied through a git repository loses `refs/`,
        # and git then takes the folder for no repository at all.
        raise DataError(
            f"{broken[0]}: not a git repository any more: its refs/ folder is missing",
            hint="was the store copied through git? create the empty folders refs/heads and "
            "refs/tags in each snapshot repository",
        )
    raise DataError(f"{root / (project_id or '?')}: snapshot {tree} is gone from the store")


def _has_tree(git_dir: Path, tree: str) -> bool:
    # OpenCode writes `core.worktree = <the session's folder>` into the repository; git refuses
    # every command once that folder's parent is gone, unless a work tree is given here.
    base = ["--git-dir", str(git_dir), "--work-tree", str(git_dir)]
    try:
        return _git([*base, "cat-file", "-t", tree]).strip() == "tree"
    except DataError:
        return False


def restore_snapshot(git_dir: Path, tree: str, dest: Path) -> None:
    """Write `tree` of the snapshot repository into `dest` (which must exist)."""
    with tempfile.TemporaryDirectory(prefix="ocdspy-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        base = ["--git-dir", str(git_dir), "--work-tree", str(dest)]
        _git([*base, "read-tree", tree], env=env)
        _git([*base, "checkout-index", "--all", "--force"], env=env)


def copy_folder(source: Path, dest: Path) -> None:
    """A copy of the user's folder (never used in place); its `.git` stays behind."""
    if not source.is_dir():
        raise DataError(f"{source}: --workspace is not a folder")
    shutil.copytree(
        source, dest, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git")
    )


def export_revision(repo: Path, revision: str, dest: Path) -> None:
    """The files of `revision` of the git repository at `repo`, through `git archive`."""
    import tarfile

    with tempfile.TemporaryDirectory(prefix="ocdspy-archive-") as tmp:
        archive = Path(tmp) / "tree.tar"
        _git(["archive", "--format=tar", "-o", str(archive), revision], cwd=repo)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")


@contextmanager
def temp_workspace(parent: Path | None = None) -> Iterator[Path]:
    """A fresh folder, removed on the way out whatever happened (timeouts and Ctrl-C too)."""
    path = Path(tempfile.mkdtemp(prefix="ocdspy-replay-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fingerprint(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `root` (what a run changed is the diff)."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files added, removed or changed between two fingerprints, sorted."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def make_repo(root: Path) -> None:
    """Commit the restored files in a new repository at `root`: OpenCode then takes `root` as
    the project's worktree (what `external_directory` guards), and `git diff` works in it."""
    ident = ["-c", "user.name=ocdspy replay", "-c", "user.email=replay@ocdspy.invalid"]
    _git(["init", "-q"], cwd=root)
    _git(["add", "-A"], cwd=root)
    _git([*ident, "commit", "-q", "--no-gpg-sign", "--allow-empty", "-m", "restored"], cwd=root)
