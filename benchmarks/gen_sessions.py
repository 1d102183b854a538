"""Write synthetic plugin-format sessions of realistic size (tool results of 1–20 KB).

    python benchmarks/gen_sessions.py OUT_DIR --mb 200 [--seed 0]

The content is varied enough (code, test output, diffs, paths) that parsers and the redaction
pass do real work; a few results carry secrets, as real `.env` reads do.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOOLS = ["read", "edit", "bash", "grep", "glob", "write", "list"]
WORDS = [
    "invoice",
    "total",
    "tax",
    "region",
    "line",
    "amount",
    "decimal",
    "round",
    "quantize",
    "store",
    "load",
    "save",
    "parse",
    "config",
    "client",
    "server",
    "request",
    "response",
    "handler",
    "error",
    "retry",
    "timeout",
    "cache",
    "token",
    "user",
    "session",
    "module",
    "package",
    "test",
    "assert",
    "fixture",
]
CODE = [
    "def {w}_{v}(self, {a}: int) -> Decimal:",
    '    return self.{w} * Decimal("{n}.{n}")',
    "class {W}{V}({W}Base):",
    "    {w}s = [{a} for {a} in range({n}) if {a} % 2]",
    "import {w}.{v} as {a}",
    "tests/test_{w}.py::test_{v}_{a} PASSED                      [ {n}%]",
    "E       AssertionError: assert {n} == {n}",
    "+    {w}_{v} = load_{a}(path)",
    "-    {w}_{v} = parse({a})",
    "src/{w}/{v}.py:{n}: error: Incompatible types in assignment  [assignment]",
    "{W}Error: {w} {v} failed after {n} retries",
]
SECRET_LINES = [
    "OPENAI_API_KEY=sk-proj-{k}",
    "export GITHUB_TOKEN=ghp_{k}",
    "DB_PASSWORD={k}",
]


def _line(rng: random.Random) -> str:
    w, v, a = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    return rng.choice(CODE).format(w=w, v=v, a=a, W=w.title(), V=v.title(), n=rng.randint(0, 999))


def _text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        line = _line(rng)
        out.append(line)
        n += len(line) + 1
    if rng.random() < 0.02:
        key = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEF0123456789") for _ in range(36))
        out.insert(rng.randrange(len(out)), rng.choice(SECRET_LINES).format(k=key))
    return "\n".join(out)


def _action(rng: random.Random, step: int) -> dict:
    tool = rng.choice(TOOLS)
    path = f"/home/dev/proj/src/{rng.choice(WORDS)}/{rng.choice(WORDS)}.py"
    args: dict = {"filePath": path}
    if tool == "bash":
        args = {"command": f"pytest -q tests/test_{rng.choice(WORDS)}.py", "description": "run"}
    elif tool in ("grep", "glob"):
        args = {"pattern": rng.choice(WORDS), "include": "*.py"}
    elif tool == "edit":
        args = {"filePath": path, "oldString": _line(rng), "newString": _line(rng)}
    return {
        "step": step,
        "tool": tool,
        "callID": f"call_{step}_{rng.randrange(1 << 30):x}",
        "args": args,
        "result": _text(rng, rng.randint(1_000, 20_000)),
        "success": rng.random() > 0.1,
        "timestamp": "2026-10-01T12:00:00.000Z",
    }


def session(rng: random.Random, index: int) -> dict:
    sid = f"ses_bench{index:08d}"
    turns = []
    for t in range(rng.randint(1, 3)):
        actions = [_action(rng, s + 1) for s in range(rng.randint(3, 12))]
        ok = rng.random() > 0.2
        turns.append(
            {
                "input": {
                    "task": " ".join(rng.choice(WORDS) for _ in range(12)),
                    "context": {
                        "workingDirectory": "/home/dev/proj",
                        "projectType": "python",
                        "relevantFiles": [a["args"].get("filePath", "x") for a in actions][:5],
                        "lspDiagnostics": {"errors": [], "warnings": []},
                        "gitStatus": {
                            "branch": "main",
                            "uncommittedChanges": 2,
                            "status": " M src/a.py\n",
                        },
                        "fileCount": 120,
                    },
                    "conversationHistory": [{"role": "user", "content": "earlier request"}] * t,
                },
                "actions": actions,
                "output": {"response": _text(rng, 400), "finalMessage": "msg_x"},
                "outcome": {
                    "success": ok,
                    "taskCompleted": ok,
                    "metrics": {
                        "filesModified": 1,
                        "toolCallCount": len(actions),
                        "tokenCost": {"input": 1000, "output": 200},
                    },
                },
                "agent": {"name": "build", "model": "anthropic/claude-sonnet-4-5"},
                "metadata": {"sessionId": sid, "duration": 12.5},
            }
        )
    return {
        "session": sid,
        "generated": "2026-10-01T12:00:00.000Z",
        "totalExamples": len(turns),
        "examples": turns,
    }


def generate(out_dir: Path, megabytes: float, seed: int = 0, start: int = 0) -> tuple[int, int]:
    """Write sessions until `megabytes` are on disk; return (files, bytes)."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    i = start
    while total < megabytes * 1_000_000:
        data = json.dumps(session(rng, i), indent=1).encode()
        (out_dir / f"session-{i:06d}.json").write_bytes(data)
        total += len(data)
        i += 1
    return i - start, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    files, size = generate(a.out, a.mb, a.seed)
    print(f"wrote {files} sessions, {size / 1e6:.1f} MB, to {a.out}")


if __name__ == "__main__":
    main()
