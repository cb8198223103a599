"""Overhead of the llamacpp backend over a plain llama-cpp-python greedy loop.

Same prompts, same model, same thread count: (a) Llama.generate with temperature 0 (the raw
loop), (b) our backend's generate() and (c) its stream(). Prints generated tokens per second of
each, the ratios (goal: ours >= 90% of raw) and whether all three produced the same ids.
Rounds alternate between the three so a busy machine hurts them alike; the best round counts.

On a shared machine the wall-clock rate swings with other people's load, so the script also
splits each run's time into time inside llama_decode (the model's compute, the same work for all
three) and time outside it (sampling, batching, queues, Python): the latter is the overhead this
backend adds or saves. llama_decode is wrapped with a timer for that (both paths call it).

    python benchmarks/llamacpp_overhead.py [--prompts 8] [--max-new-tokens 64] [--rounds 3] [--threads 1]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import llama_cpp  # noqa: E402
import llama_cpp.llama_cpp as llama_low  # noqa: E402

from backends import GenerationParams, make_backend  # noqa: E402
from benchmarks.prompts import QUESTIONS  # noqa: E402
from common.errors import exit_on_error  # noqa: E402
from inputs.models import resolve_model_path  # noqa: E402

_in_decode = [0.0]


def _timed_decode(decode):
    def wrapper(ctx, batch):
        t0 = time.perf_counter()
        try:
            return decode(ctx, batch)
        finally:
            _in_decode[0] += time.perf_counter() - t0
    return wrapper


def raw_generate(llm: llama_cpp.Llama, prompt: list[int], max_new: int, eos: frozenset[int]) -> list[int]:
    out = []
    for tok in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
        out.append(tok)
        if tok in eos or len(out) >= max_new:
            break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--model-path", default=None, help="GGUF file (default: the embedded Gemma 3 270M)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    # One thread by default: on a shared machine llama.cpp's spinning thread pool loses many times
    # over when one of its threads is descheduled, which would swamp the overhead being measured.
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    path = resolve_model_path(args.model_path)
    # Llama calls it through the low-level module, the backend through the package namespace.
    llama_low.llama_decode = llama_cpp.llama_decode = _timed_decode(llama_low.llama_decode)
    llm = llama_cpp.Llama(path, n_ctx=2048, n_batch=512, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    ours = make_backend("llamacpp", model_path=path, params=GenerationParams(args.max_new_tokens),
                        options={"n_threads": str(args.threads), "n_ctx": "2048", "n_batch": "512"})
    ours.load()
    questions = (QUESTIONS * (args.prompts // len(QUESTIONS) + 1))[: args.prompts]
    prompts = [llm.tokenize(f"<start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n".encode(),
                            add_bos=True, special=True) for q in questions]
    eos = ours.eos_token_ids
    n = args.max_new_tokens

    runs = {
        "raw Llama.generate": lambda: [raw_generate(llm, p, n, eos) for p in prompts],
        "ours generate()": lambda: ours.generate(prompts),
        "ours stream()": lambda: [[t for c in ours.stream(p) for t in c] for p in prompts],
    }
    print(f"model {os.path.basename(path)}, {len(prompts)} prompts ({sum(map(len, prompts))} prompt tokens), "
          f"max_new_tokens {n}, threads {args.threads}, llama-cpp-python {llama_cpp.__version__}")
    print(f"load average before: {os.getloadavg()}")
    raw_generate(llm, prompts[0], 4, eos)   # warm-up: first-call allocations, page cache
    ours.generate(prompts[:1])

    # Wall-clock rate is what users see; process CPU time per token is the steadier overhead
    # measure when other work shares the cores.
    best: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}
    outside_ms: dict[str, float] = {}
    ids: dict[str, list[list[int]]] = {}
    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[: r % 3]:   # rotate the order against drifting load
            _in_decode[0] = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            ids[name] = runs[name]()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            tokens = sum(map(len, ids[name]))
            outside = 1000 * (dt - _in_decode[0]) / tokens
            best[name] = max(best.get(name, 0.0), tokens / dt)
            cpu_ms[name] = min(cpu_ms.get(name, float("inf")), 1000 * dc / tokens)
            outside_ms[name] = min(outside_ms.get(name, float("inf")), outside)
            print(f"round {r + 1}  {name:20s} {tokens:5d} tokens in {dt:6.2f} s = {tokens / dt:7.1f} tok/s, "
                  f"{1000 * dc / tokens:6.2f} CPU ms/token, per token {1000 * _in_decode[0] / tokens:6.2f} ms "
                  f"in llama_decode + {outside:5.2f} ms outside")
    print(f"load average after: {os.getloadavg()}")

    raw = "raw Llama.generate"
    for name in ("ours generate()", "ours stream()"):
        print(f"best {name:17s} {best[name]:7.1f} tok/s = {best[name] / best[raw]:6.1%} of raw "
              f"({best[raw]:.1f} tok/s); CPU per token {cpu_ms[name]:.2f} ms vs raw {cpu_ms[raw]:.2f} ms "
              f"= {cpu_ms[raw] / cpu_ms[name]:6.1%} of raw's efficiency; outside llama_decode "
              f"{outside_ms[name]:.2f} ms/token vs raw {outside_ms[raw]:.2f}")
    same = ids["raw Llama.generate"] == ids["ours generate()"] == ids["ours stream()"]
    print(f"identical ids in all three: {same}")
    ours.close()
    llm.close()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
