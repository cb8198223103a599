"""Plain vs speculative decoding on the same prompts, runs interleaved (plain, ngram, draft, plain, ...).

Each run is a separate process, as a user runs it: `main.py --accuracy` through LoadGen (Offline or
Server, the demo OpenOrca set), or `python -m tasks summarization`. Prints every run and then, per
configuration, the median of its repeats: output tokens per second, TPOT p50/p99 (Server runs;
Offline runs have no streams), draft acceptance, accepted drafts per step, draft and verify time
per step, and how many outputs equal the first plain run's (plain's own repeats included, so
run-to-run determinism shows too). Load average before each run is printed alongside.

    python benchmarks/speculative_compare.py --backend llamacpp --scenario Offline --samples 16 --repeats 2
    python benchmarks/speculative_compare.py --backend llamacpp --scenario Server --samples 16 --repeats 2
    python benchmarks/speculative_compare.py --backend llamacpp --task summarization --only plain ngram
    python benchmarks/speculative_compare.py --backend hf --samples 4 --max-new-tokens 64 --repeats 2
    python benchmarks/speculative_compare.py --model-path gemma3-270m-f16.gguf --only plain draft   # Q4_K_M draft

Configurations: llamacpp (n_threads=1): plain, ngram (speculative=ngram), draft (draft_model = the
target's own GGUF: an upper bound on acceptance, the full cost of a draft as large as the target);
hf (float32, batch_size=1, so plain decodes one prompt at a time as speculation does): plain,
ngram, w8a16 (draft_quant_config=quant_configs/w8a16.yaml: the target's weights fake-quantized to
int8 as the draft).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from accuracy.mlperf_log import decode_ids, read_entries  # noqa: E402
from inputs.models import default_model_path  # noqa: E402

CONFIGS = {
    "llamacpp": {"plain": ["n_threads=1"],
                 "ngram": ["n_threads=1", "speculative=ngram", "num_draft_tokens={k}"],
                 "draft": ["n_threads=1", "draft_model={gguf}", "num_draft_tokens={k}"]},
    "hf": {"plain": ["batch_size=1"],
           "ngram": ["batch_size=1", "speculative=ngram", "num_draft_tokens={k}"],
           "w8a16": ["batch_size=1", "draft_quant_config=quant_configs/w8a16.yaml", "num_draft_tokens={k}"]},
}


def command(args, name: str, out: Path) -> list[str]:
    backend_args = [a.format(k=args.num_draft_tokens, gguf=default_model_path()) for a in CONFIGS[args.backend][name]]
    common = ["--backend", args.backend, "--max-new-tokens", str(args.max_new_tokens), "--no-progress",
              *[x for a in backend_args for x in ("--backend-arg", a)]]
    if args.backend == "hf":
        common += ["--dtype", "float32"]
    if args.model_path:
        common += ["--model-path", args.model_path]
    if args.task:
        return [sys.executable, "-m", "tasks", args.task, *common, "--output-dir", str(out),
                *(["--limit", str(args.samples)] if args.samples else [])]
    return [sys.executable, str(ROOT / "main.py"), "--scenario", args.scenario, "--accuracy",
            "--total-sample-count", str(args.samples or 16), "--output-log-dir", str(out), *common]


def collect(args, out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    if args.task:
        m = res["metrics"]
        return {"tok_s": m["output_tokens_per_second"], "spec": res["backend"].get("speculative") or {},
                "outputs": [s["summary"] for s in res["samples"]]}
    rq = res["requests"]
    streamed = args.scenario == "Server"   # Offline runs have no streams, so no TPOT
    entries = sorted(read_entries(str(out / "mlperf_log_accuracy.json")), key=lambda e: e["qsl_idx"])
    return {"tok_s": rq["output_tokens_per_s"], "tpot_p50": (rq.get("tpot_ms") or {}).get("p50") if streamed else None,
            "tpot_p99": (rq.get("tpot_ms") or {}).get("p99") if streamed else None, "spec": res["run"]["backend"].get("speculative") or {},
            "outputs": [decode_ids(e["data"]).tolist() for e in entries]}


def fmt(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--backend", choices=sorted(CONFIGS), default="llamacpp")
    ap.add_argument("--scenario", choices=["Offline", "Server"], default="Offline")
    ap.add_argument("--task", choices=["summarization"], default=None, help="python -m tasks TASK instead of main.py")
    ap.add_argument("--samples", type=int, default=0, help="main.py --total-sample-count (default 16); task --limit")
    ap.add_argument("--model-path", default=None, help="the target (default: the embedded GGUF; the llamacpp "
                    "draft configuration drafts with the embedded GGUF either way)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--num-draft-tokens", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", nargs="+", default=None, help="configurations to run (default: all of the backend's)")
    ap.add_argument("--output-dir", default=None, help="where the runs go (default: a new temporary folder)")
    args = ap.parse_args()
    names = args.only or list(CONFIGS[args.backend])
    unknown = set(names) - set(CONFIGS[args.backend])
    if unknown:
        ap.error(f"unknown configuration(s) {sorted(unknown)} for {args.backend} (choose from {list(CONFIGS[args.backend])})")
    base = Path(args.output_dir or tempfile.mkdtemp(prefix="spec-compare-"))
    base.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names:
            out = base / f"{name}-{r}"
            load = os.getloadavg()[0]
            cmd = command(args, name, out)
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            if p.returncode != 0:
                print(" ".join(cmd), "\n", p.stderr[-3000:], file=sys.stderr)
                return 2
            got = collect(args, out)
            got["load"] = load
            runs[name].append(got)
            s = got["spec"]
            print(f"{name:6} #{r}  load {load:4.1f}  {fmt(got['tok_s'])} tok/s  TPOT p50/p99 {fmt(got.get('tpot_p50'))}/"
                  f"{fmt(got.get('tpot_p99'))} ms  acceptance {fmt(s.get('acceptance_rate'), 3)}  "
                  f"accepted/step {fmt(s.get('mean_accepted_per_step'), 2)}", flush=True)
    ref = runs[names[0]][0]["outputs"] if names[0] == "plain" else None
    print(f"\n{args.backend} {args.task or args.scenario}, {len(runs[names[0]][0]['outputs'])} samples, {args.max_new_tokens} new "
          f"tokens at most, K={args.num_draft_tokens}, {args.repeats} interleaved repeats; runs in {base}")
    print("| config | output tok/s (runs, median) | TPOT p50 / p99 ms (median) | acceptance | accepted/step | "
          "draft / verify ms per step | outputs equal to plain run 0 |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        rs = runs[name]
        med = lambda key: statistics.median(x[key] for x in rs) if all(x.get(key) is not None for x in rs) else None  # noqa: E731
        s = rs[-1]["spec"]
        steps = (s.get("steps") or 0) + (s.get("steps_without_draft") or 0)
        per_step = f"{1000 * s['draft_s'] / steps:.1f} / {1000 * s['verify_s'] / s['steps']:.1f}" if s.get("steps") else "-"
        same = "-" if ref is None else ", ".join(f"{sum(a == b for a, b in zip(ref, x['outputs']))}/{len(ref)}" for x in rs)
        print(f"| {name} | {', '.join(fmt(x['tok_s']) for x in rs)} ({fmt(med('tok_s'))}) | "
              f"{fmt(med('tpot_p50'))} / {fmt(med('tpot_p99'))} | "
              f"{'-' if s.get('acceptance_rate') is None else fmt(100 * s['acceptance_rate']) + '%'} | "
              f"{fmt(s.get('mean_accepted_per_step'), 2)} | {per_step} | {same} |")
    loads = [x["load"] for rs in runs.values() for x in rs]
    print(f"load average (1 min) before the runs: {min(loads):.1f}-{max(loads):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
