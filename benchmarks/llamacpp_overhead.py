"""Overhead of the llamacpp backend over a plain llama-cpp-python greedy loop.

Same prompts, same model, same thread count: (a) Llama.generate with temperature 0 (the raw
loop), (b) our backend's generate() and (c) its stream(). Prints generated tokens per second of
each, the ratios (goal: ours >= 90% of raw) and whether all three produced the same ids.
Rounds alternate between the three so a busy machine hurts them alike; the best round counts.

    python benchmarks/llamacpp_overhead.py [--prompts 8] [--max-new-tokens 64] [--rounds 3]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import llama_cpp  # noqa: E402

from backends import GenerationParams, make_backend  # noqa: E402
from harness.errors import exit_on_error  # noqa: E402
from harness.models import resolve_model_path  # noqa: E402

QUESTIONS = [
    "Write a short story about a robot learning to paint.",
    "Explain how a refrigerator works.",
    "What are the main causes of the French Revolution?",
    "Give me a recipe for a simple tomato soup.",
    "Describe the water cycle in a few sentences.",
    "Why is the sky blue?",
    "Write a poem about autumn leaves.",
    "Summarise the plot of Romeo and Juliet.",
]


def raw_generate(llm: llama_cpp.Llama, prompt: list[int], max_new: int, eos: frozenset[int]) -> list[int]:
    out = []
    for tok in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
        out.append(tok)
        if tok in eos or len(out) >= max_new:
            break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", default=None, help="GGUF file (default: the embedded Gemma 3 270M)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()

    path = resolve_model_path(args.model_path)
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

    best: dict[str, float] = {}
    ids: dict[str, list[list[int]]] = {}
    for r in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            ids[name] = run()
            dt = time.perf_counter() - t0
            tokens = sum(map(len, ids[name]))
            best[name] = max(best.get(name, 0.0), tokens / dt)
            print(f"round {r + 1}  {name:20s} {tokens:5d} tokens in {dt:6.2f} s = {tokens / dt:7.1f} tok/s")
    print(f"load average after: {os.getloadavg()}")

    raw_rate = best["raw Llama.generate"]
    for name in ("ours generate()", "ours stream()"):
        print(f"best {name:17s} {best[name]:7.1f} tok/s = {best[name] / raw_rate:6.1%} of raw ({raw_rate:.1f} tok/s)")
    same = ids["raw Llama.generate"] == ids["ours generate()"] == ids["ours stream()"]
    print(f"identical ids in all three: {same}")
    ours.close()
    llm.close()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
