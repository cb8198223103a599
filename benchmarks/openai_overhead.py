"""Overhead of the openai backend over a plain httpx client loop, against one server.

Both send the same /v1/completions bodies (the backend's own, so prompts, greedy settings and
forced lengths match) with the same concurrency: (a) a bare asyncio + httpx loop and (b) the
backend's generate(); with --stream also (c) a bare streaming loop and (d) the backend's stream()
from `concurrency` threads. Outputs are forced to --max-new-tokens (ignore_eos, emulated with
min_tokens where the server lacks it), so every request generates the same number of tokens.
Prints generated tokens/s of each (counted by the server: usage, or one streamed piece per token)
and the ratio backend / plain (goal: >= 95%). Rounds alternate so a busy machine hurts both alike;
the ratio is printed over all rounds and over each side's best round.

Without --api-server it starts one `python -m llama_cpp.server` with the embedded Gemma 3 270M.

    python benchmarks/openai_overhead.py [--api-server URL] [--prompts 16] [--max-new-tokens 64]
        [--concurrency 4] [--rounds 2] [--stream] [--threads 2]
"""
import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402

from backends import GenerationParams, make_backend  # noqa: E402
from benchmarks.prompts import QUESTIONS  # noqa: E402
from common.errors import exit_on_error  # noqa: E402
from inputs.tokenizer import load_tokenizer  # noqa: E402


async def plain_loop(url: str, bodies: list[dict], concurrency: int, stream: bool) -> int:
    """The bare client: returns generated tokens as the server counts them."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, pool=None),
                                 limits=httpx.Limits(max_connections=None)) as client:
        async def one(body: dict) -> int:
            async with sem:
                if not stream:
                    r = await client.post(url + "/v1/completions", json=body)
                    r.raise_for_status()
                    return r.json()["usage"]["completion_tokens"]
                n = 0
                async with client.stream("POST", url + "/v1/completions", json=body) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if line.startswith("data:") and line[5:].strip() != "[DONE]":
                            obj = json.loads(line[5:])
                            n += sum(1 for c in obj.get("choices") or [] if c.get("text"))
                return n

        return sum(await asyncio.gather(*(one(b) for b in bodies)))


def backend_generate(be, prompts: list[list[int]]) -> int:
    n0 = len(be.request_log())
    outs = be.generate(prompts)
    bad = [o for o in outs if isinstance(o, Exception)]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed, first: {bad[0]}")
    return sum(e["server_tokens"] or e["n_output"] for e in be.request_log()[n0:])


def backend_stream(be, prompts: list[list[int]], concurrency: int) -> int:
    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(lambda p: sum(len(c) for c in be.stream(p)), prompts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--api-server", help="server base URL; default: start a local llama_cpp.server")
    ap.add_argument("--model-path", help="GGUF for the local server and the tokenizer (default: embedded)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the local server")
    ap.add_argument("--stream", action="store_true", help="also compare streaming (Server scenario path)")
    args = ap.parse_args()

    tok = load_tokenizer(args.model_path)     # Gemma's chat format, as in the MLPerf-style prompts
    prompts = [tok.encode(f"<start_of_turn>user\n{QUESTIONS[i % len(QUESTIONS)]}<end_of_turn>\n"
                          "<start_of_turn>model\n") for i in range(args.prompts)]

    with contextlib.ExitStack() as stack:
        url = args.api_server
        if url is None:
            from tests.servers import LlamaServer
            url = stack.enter_context(LlamaServer(args.model_path, threads=args.threads)).url
        be = make_backend("openai", model_path=args.model_path,
                          params=GenerationParams(max_new_tokens=args.max_new_tokens, ignore_eos=True),
                          options={"api_server": url, "concurrency": str(args.concurrency)})
        be.load()
        stack.callback(be.close)
        bodies = [be.request_body(p, stream=False) for p in prompts]
        stream_bodies = [be.request_body(p, stream=True) for p in prompts]
        ep = be.info()["endpoints"][0]
        print(f"server {url}: prompt {ep['prompt']}, output {ep['output']}; {args.prompts} prompts x {args.max_new_tokens} "
              f"tokens, concurrency {args.concurrency}")

        runs = {"plain generate": lambda: asyncio.run(plain_loop(url, bodies, args.concurrency, False)),
                "backend generate": lambda: backend_generate(be, prompts)}
        if args.stream:
            runs["plain stream"] = lambda: asyncio.run(plain_loop(url, stream_bodies, args.concurrency, True))
            runs["backend stream"] = lambda: backend_stream(be, prompts, args.concurrency)
        totals = {name: [0, 0.0] for name in runs}
        best = {name: 0.0 for name in runs}
        for r in range(args.rounds):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                n = fn()
                dt = time.perf_counter() - t0
                totals[name][0] += n
                totals[name][1] += dt
                best[name] = max(best[name], n / dt)
                print(f"round {r + 1} {name:17s} {n:6d} tokens {dt:7.2f} s {n / dt:8.1f} tok/s", flush=True)

    tps = {name: n / dt for name, (n, dt) in totals.items()}
    for label, v in (("all rounds", tps), ("best round (least disturbed by other load)", best)):
        print(f"{label}:")
        for name in runs:
            print(f"  {name:17s} {v[name]:8.1f} tok/s")
        for mode in ("generate", "stream") if args.stream else ("generate",):
            print(f"  ratio {mode:8s} backend/plain: {v['backend ' + mode] / v['plain ' + mode]:.3f}")
    print(f"loadavg: {os.getloadavg()}")


if __name__ == "__main__":
    exit_on_error(main)
