"""Where a local call's time goes: the built-in model's prompt and generation speed on this
machine, and the levers measured against it (figures for BENCHMARKS.md).

    PYTHONPATH=src python benchmarks/bench_local_speed.py [--threads 1] [--repeats 3]

Measures, with llama.cpp on `--threads` threads (ocdspy's default: half the cores):

- prompt evaluation: a ~1,000-token prompt evaluated from an empty context (tokens/s);
- generation: 100 greedy tokens, free and under a grammar (ms per token);
- the same for the weights requantized from the shipped Q4_1 to Q8_0 and to Q4_0 (written to
  a temporary folder with llama.cpp's own quantizer; nothing is downloaded);
- two model instances generating side by side against one alone (does the second core help?);
- a reply caught in a loop, generated to its budget and cut by `lm.loops` (`shipped._LoopStop`).

Medians of `--repeats` runs; prints one JSON summary.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOOPING = (
    "<|im_start|>user\nWhich test files are there?<|im_end|>\n<|im_start|>assistant\n"
    "4 files:\n- tests/test_money.py\n- tests/test_money.py\n"
)
STORY = "<|im_start|>user\nWrite a long story about a cat.<|im_end|>\n<|im_start|>assistant\n"
FILLER = "The agent read ledger/money.py, ran python3 -m pytest -q and edited the parser. "


def median_of(repeats: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeats))


def requantize(src: Path, out: Path, ftype: int) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params)):
        raise RuntimeError(f"llama.cpp could not requantize {src} to {out}")
    return out


def speeds(path: Path, threads: int, repeats: int) -> dict[str, float]:
    from llama_cpp import Llama, LlamaGrammar

    llama = Llama(model_path=str(path), n_ctx=4096, n_threads=threads, verbose=False)
    prompt = llama.tokenize((FILLER * 60).encode(), add_bos=True)[:1000]
    story = llama.tokenize(STORY.encode(), add_bos=True, special=True)
    grammar = LlamaGrammar.from_string('root ::= "answer: " [a-zA-Z ,.\\n]*', verbose=False)

    def prompt_rate() -> float:
        llama.reset()
        start = time.perf_counter()
        llama.eval(prompt)
        return len(prompt) / (time.perf_counter() - start)

    def per_token(**options: Any) -> Callable[[], float]:
        def run() -> float:
            llama.reset()
            start = time.perf_counter()
            out = llama.create_completion(prompt=story, max_tokens=100, temperature=0.0, **options)
            return 1000 * (time.perf_counter() - start) / out["usage"]["completion_tokens"]

        return run

    return {
        "prompt_tokens_per_s": round(median_of(repeats, prompt_rate)),
        "generation_ms_per_token": round(median_of(repeats, per_token()), 1),
        "grammar_ms_per_token": round(median_of(repeats, per_token(grammar=grammar)), 1),
    }


def side_by_side(path: Path, threads: int) -> dict[str, dict[str, float]]:
    """8 calls on one instance, then 4 + 4 on two instances in two threads: generation-heavy
    calls (a short prompt, 60 tokens out) and prompt-heavy ones (~600 new prompt tokens, 8 out)."""
    from llama_cpp import Llama

    instances = [
        Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False) for _ in range(2)
    ]
    story = instances[0].tokenize(STORY.encode(), add_bos=True, special=True)
    long_prompt = instances[0].tokenize((FILLER * 40).encode(), add_bos=True)[:600]

    def work(llama: Any, n: int, prompt: list[int], max_tokens: int) -> None:
        for _ in range(n):
            llama.reset()
            llama.create_completion(prompt=prompt, max_tokens=max_tokens, temperature=0.0)

    out: dict[str, dict[str, float]] = {}
    for name, prompt, max_tokens in (("generation", story, 60), ("prompt", long_prompt, 8)):
        start = time.perf_counter()
        work(instances[0], 8, prompt, max_tokens)
        one = time.perf_counter() - start
        workers = [
            threading.Thread(target=work, args=(llama, 4, prompt, max_tokens))
            for llama in instances
        ]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        two = time.perf_counter() - start
        out[name] = {"one_instance_s": round(one, 2), "two_instances_s": round(two, 2)}
    return out


def loop_cut(path: Path, threads: int) -> dict[str, Any]:
    from llama_cpp import Llama, StoppingCriteriaList

    from ocdspy.shipped import _LoopStop

    llama = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False)
    tokens = llama.tokenize(LOOPING.encode(), add_bos=True, special=True)
    out: dict[str, Any] = {}
    for name, stop in (("to_budget", None), ("cut", _LoopStop(len(tokens)))):
        llama.reset()
        start = time.perf_counter()
        result = llama.create_completion(
            prompt=tokens,
            max_tokens=300,
            temperature=0.0,
            stopping_criteria=StoppingCriteriaList([stop]) if stop else None,
        )
        out[name] = {
            "seconds": round(time.perf_counter() - start, 2),
            "tokens": result["usage"]["completion_tokens"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    import llama_cpp

    from ocdspy.lm.local import default_threads, resolve_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    shipped = resolve_gguf(None)
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "load_before": os.getloadavg(),
        "weights": shipped.name,
    }
    with tempfile.TemporaryDirectory(prefix="ocdspy-bench-quant-") as tmp:
        variants = {
            "Q4_1 (shipped)": shipped,
            "Q8_0": requantize(shipped, Path(tmp) / "q8_0.gguf", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0),
            "Q4_0": requantize(shipped, Path(tmp) / "q4_0.gguf", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0),
        }
        summary["speeds"] = {
            name: speeds(path, args.threads, args.repeats) for name, path in variants.items()
        }
    summary["side_by_side"] = side_by_side(shipped, args.threads)
    summary["loop"] = loop_cut(shipped, args.threads)
    summary["load_after"] = os.getloadavg()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
