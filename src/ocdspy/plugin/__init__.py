"""The OpenCode plugin that shows each step the pool's demos most like it (plain JS, no build).

`write_plugin` writes `ocdspy-AGENT.js` (the plugin, with its agent and pool file baked in) and
`ocdspy-AGENT.pool.json` (the demos) into a folder OpenCode loads plugins from, such as
`~/.config/opencode/plugins/` or a project's `.opencode/plugins/`. The selection rule is
docs/demo-selection.md; `ocdspy.program.select` is its Python twin.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

from ocdspy.artifacts import write_text_atomic
from ocdspy.errors import DataError
from ocdspy.program.select import POOL_VERSION, DemoPool

TEMPLATE = "ocdspy-demos.js"
# The one line of the template that `write_plugin` rewrites.
_CONFIG_LINE = re.compile(r"^const CONFIG = \{.*\};$", re.MULTILINE)
# Agent names become file names and a JS string: keep them plain.
_AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def template_text() -> str:
    """The plugin source as shipped (its CONFIG line serves an agent named `tuned`)."""
    return resources.files(__name__).joinpath(TEMPLATE).read_text(encoding="utf-8")


def plugin_file_names(agent: str) -> tuple[str, str]:
    """(plugin file, pool file) for `agent`."""
    if not _AGENT_NAME.match(agent):
        raise ValueError(
            f"agent name {agent!r} cannot name a plugin file: use letters, digits, '_', '-', '.'"
        )
    return f"ocdspy-{agent}.js", f"ocdspy-{agent}.pool.json"


def plugin_source(agent: str, pool_file: str) -> str:
    """The plugin for `agent` reading `pool_file` beside itself."""
    config = json.dumps({"agent": agent, "pool": pool_file, "version": POOL_VERSION})
    text, count = _CONFIG_LINE.subn(lambda _: f"const CONFIG = {config};", template_text())
    if count != 1:
        raise RuntimeError(f"{TEMPLATE}: expected one CONFIG line, found {count}")
    return text


def write_plugin(out_dir: Path, agent: str, pool: DemoPool) -> list[Path]:
    """Write the plugin and its pool for `agent` into `out_dir`; returns [plugin, pool].

    The pool's text is built redacted (`select.build_pool`); the same scanner that checks an
    exported agent checks it again here, and a secret is an error. Files are written
    atomically; the plugin is world-readable like any source file, the pool readable by its
    owner only (OpenCode runs as the same user).
    """
    from ocdspy.redact import find_secrets

    found = find_secrets(pool.model_dump_json())
    if found:
        kinds = ", ".join(sorted({kind for kind, _ in found}))
        raise DataError(f"demo pool for agent {agent!r}: holds secrets ({kinds}); not written")
    js_name, pool_name = plugin_file_names(agent)
    js_path, pool_path = Path(out_dir) / js_name, Path(out_dir) / pool_name
    pool = pool.model_copy(update={"agent": agent})
    write_text_atomic(pool_path, pool.model_dump_json(indent=1) + "\n")
    write_text_atomic(js_path, plugin_source(agent, pool_name))
    os.chmod(js_path, 0o644)
    return [js_path, pool_path]
