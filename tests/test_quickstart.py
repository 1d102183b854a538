"""The README's quick start, run as written (in a copy of examples/, so the repo stays clean)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def quickstart_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\$ (ocdspy .+)$", section, re.M)]


def test_readme_quickstart_data_stages(tmp_path: Path) -> None:
    all_commands = quickstart_commands()
    assert [c.split()[1] for c in all_commands] == ["validate", "convert", "split", "pipeline"]
    # The pipeline needs the local model; tests/test_pipeline.py and the integration tests
    # cover it. Here: the data stages, exactly as printed.
    commands = all_commands[:3]
    shutil.copytree(
        REPO / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns("processed", "splits", "outputs", ".dspy_cache"),
    )
    exe = Path(sys.executable).parent / "ocdspy"
    outputs = []
    for cmd in commands:
        args = shlex.split(cmd)[1:]
        r = subprocess.run(
            [str(exe), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "80", "NO_COLOR": "1"},
        )
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        outputs.append(r.stdout)
    assert "13 successful examples" in outputs[0]
    assert "wrote 13 examples" in outputs[1]
    assert (tmp_path / "examples/data/splits/val.jsonl").is_file()
    # The printed figures in the README are the ones the commands print.
    readme = (REPO / "README.md").read_text()
    redacted = re.search(r"redacted \d+ secrets \([^)]*\)", outputs[1])
    assert redacted and redacted.group(0) in readme
