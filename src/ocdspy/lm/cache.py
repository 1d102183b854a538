"""DSPy's response cache in a project directory."""

from __future__ import annotations

from pathlib import Path

from ocdspy.errors import ModelError


def configure_cache(cache_dir: Path, *, enabled: bool = True) -> Path:
    """Point DSPy's two-level cache (memory LRU + diskcache) at `cache_dir`; returns it resolved.

    DSPy reads `DSPY_CACHEDIR` only when it builds its default cache, so setting the variable
    after `import dspy` is unreliable; `dspy.configure_cache` replaces the process-wide cache
    object instead and works at any time. `enabled=False` turns both levels off (`--no-cache`).
    """
    import dspy

    path = Path(cache_dir).expanduser().resolve()
    if enabled:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ModelError(f"{path}: cannot create the cache directory: {e.strerror or e}") from e
    dspy.configure_cache(
        enable_disk_cache=enabled,
        enable_memory_cache=enabled,
        disk_cache_dir=str(path),
    )
    return path
