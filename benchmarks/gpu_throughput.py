"""Offline/Server throughput of `--backend hf` on a Llama-2-7B-shaped random fp16 model.

One process: builds the random model on the GPU, measures the copy bandwidth and matmul rate,
runs the baseline (plain `model.generate`, batch 128, default dynamic cache), then the backend's
slots engine directly and through LoadGen Offline (harness/core.py's SUTCore), optionally a
Server QPS sweep through LoadGen, and prints a table:
mode, output tok/s, x baseline, % of the decode roofline, % of the full roofline.

Decode roofline: every step reads the weights once and each sequence's KV cache (its context).
Full roofline: that plus the prompt prefill at the measured matmul rate (2 FLOP/parameter/token),
which the decode-only number (the one usually quoted) leaves out.

    python3 benchmarks/gpu_throughput.py --out results.json               # GPU
    python benchmarks/gpu_throughput.py --tiny --device cpu --n-prompts 8   # CPU dry run of the same code

`--quant-configs fp16,quant_configs/fp8_wa.yaml,quant_configs/fp8.yaml` runs the slots engine (and
LoadGen Offline) once per config on a copy of the same random model (`--backend hf --quant-config`,
real kernels) and compares greedy outputs with the fp16 run and with `--backend fakequant` of the
same config; rooflines of a quantized row count its own weight and KV bytes and its fp8 matmul rate.

`--server-backend-args "prefill_wait_ms=0;prefill_wait_ms=30"` runs each Server target once per
variant (engine scheduling options, set on the same engine between runs: one model build and one
graph capture serve all), so one call compares them on the same card. Every LoadGen run records
the engine thread's time split over the run (`engine` in its row; backends/hf_engine/stats.py).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from backends.base import GenerationParams, parse_options  # noqa: E402
from backends.fakequant import FakeQuantBackend  # noqa: E402
from backends.hf import HFBackend  # noqa: E402
from backends.hf_engine import SlotEngine, stats  # noqa: E402
from common.errors import HarnessError  # noqa: E402
from quantization import fp8_kv  # noqa: E402

log = logging.getLogger("gpu_throughput")
EOS = 2
SERVER_LIMITS = {"llama2-70b": (2000, 200), "interactive": (450, 40)}   # TTFT p99, TPOT p99 (ms)


def build_70b_two_gpus(devices=("cuda:0", "cuda:1"), **shape):
    """Llama-2-70B shape, random fp16 weights made directly on two GPUs (layers split in half)."""
    from accelerate import dispatch_model
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

    dims = {**LLAMA2_70B, **shape}
    cfg = LlamaConfig(**dims)
    layers = cfg.num_hidden_layers
    cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id = EOS, 1, 0
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    half = layers // 2
    dmap = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 1, "lm_head": 1}
    dmap.update({f"model.layers.{i}": 0 if i < half else 1 for i in range(layers)})
    torch.manual_seed(0)
    for name, dev in dmap.items():
        mod = model.get_submodule(name)
        mod.to_empty(device=devices[dev])
        for p in mod.parameters():
            p.data.normal_(0.0, 0.02)
    for mod in model.modules():
        if isinstance(mod, LlamaRMSNorm):
            mod.weight.data.fill_(1.0)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg, device=devices[0])  # buffers, not parameters
    model = dispatch_model(model, device_map={k: devices[v] for k, v in dmap.items()})
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = EOS, 0
    return model


LLAMA2_70B = dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                  num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=4096)


def build_70b_fp8(device: str, **shape):
    """Llama-2-70B shape on one GPU with its decoder linears in fp8 (FP8Linear per output channel,
    per-token activations, q/k/v and gate/up merged), random weights: built layer by layer, each
    layer made in fp16 on the GPU and converted before the next one exists (the 138 GB of fp16
    weights never fit at once). Embeddings, norms and the head stay fp16."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

    from quantization.fp8 import FP8Linear, merge_shared_inputs

    cfg = LlamaConfig(**{**LLAMA2_70B, **shape})
    cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id = EOS, 1, 0
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    torch.manual_seed(0)

    def materialize(mod):
        mod.to_empty(device=device)
        for p in mod.parameters():
            p.data.normal_(0.0, 0.02)
        for m in mod.modules():
            if isinstance(m, LlamaRMSNorm):
                m.weight.data.fill_(1.0)

    for mod in (model.model.embed_tokens, model.model.norm, model.lm_head):
        materialize(mod)
    for layer in model.model.layers:
        materialize(layer)
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if isinstance(lin, torch.nn.Linear):
                    setattr(parent, name, FP8Linear(lin, "per_channel", "per_token"))
        merge_shared_inputs(layer)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg, device=device)  # buffers, not parameters
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = EOS, 0
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return model


def build_model(tiny: bool, device: str, layers: int):
    if tiny:
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096)
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                          num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id = EOS, 1, 0
    torch.manual_seed(0)
    dtype = torch.float32 if device == "cpu" else torch.float16
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = EOS, 0
    return model


class InMemoryHF(HFBackend):
    """The hf backend over a model already in memory (the random weights are never saved)."""

    model_in_memory = None
    share_model = False   # the model is built quantized and too large to copy (--shape-70b-fp8)

    def _load_model(self):
        # a quant config rewrites the model: give it a copy, keep the fp16 one for the other rows
        model = InMemoryHF.model_in_memory
        return copy.deepcopy(model) if self.options["quant_config"] and not InMemoryHF.share_model else model


class InMemoryFake(FakeQuantBackend):
    _load_model = InMemoryHF._load_model


def load_backend(args, slots: int, cls=None, **options) -> InMemoryHF:
    """The hf backend over the in-memory model with `slots` slots, forced output length, loaded;
    `options` override the engine options given by the command line."""
    opts = {"batch_size": slots, "max_seq_len": args.input_len + args.output_len, "kv_bucket": args.kv_bucket,
            "device_map": "auto" if args.shape_70b else ""}
    opts.update(options)
    n_out = args.output_len
    b = (cls or InMemoryHF)(model_path="in-memory", dtype="float32" if args.device == "cpu" else "float16",
                   device=args.device, params=GenerationParams(max_new_tokens=n_out, min_new_tokens=n_out,
                                                                ignore_eos=True),
                   options={k: str(v) for k, v in opts.items()})
    b.load()
    return b


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_device(device: str) -> dict:
    if device == "cpu":
        return {"bandwidth_GBps": 20.0, "matmul_TFLOPs": 0.1, "fp8_matmul_TFLOPs": 0.1, "name": "cpu"}
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync()
    bw = 2 * x.numel() * 10 / (time.perf_counter() - t) / 1e9
    del x, y
    a = torch.randn(8192, 8192, dtype=torch.float16, device=device)
    b = torch.randn(8192, 8192, dtype=torch.float16, device=device)
    for _ in range(3):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    tflops = 2 * 8192**3 * 10 / (time.perf_counter() - t) / 1e12
    out = {"bandwidth_GBps": bw, "matmul_TFLOPs": tflops, "name": torch.cuda.get_device_name(0)}
    if torch.cuda.get_device_capability() >= (8, 9):   # fp8 e4m3, row-wise scales, as FP8Linear runs it
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
        sa = torch.ones(8192, 1, device=device)
        sb = torch.ones(1, 8192, device=device)
        for _ in range(3):
            torch._scaled_mm(a8, b8.t(), scale_a=sa, scale_b=sb, out_dtype=torch.float16)
        sync()
        t = time.perf_counter()
        for _ in range(10):
            torch._scaled_mm(a8, b8.t(), scale_a=sa, scale_b=sb, out_dtype=torch.float16)
        sync()
        out["fp8_matmul_TFLOPs"] = 2 * 8192**3 * 10 / (time.perf_counter() - t) / 1e12
        del a8, b8
    del a, b
    torch.cuda.empty_cache()
    return out


def rooflines(model, batch: int, n_in: int, n_out: int, dev: dict, quant=None) -> tuple[float, float]:
    """(decode-only, prefill+decode) output tok/s bounds for `batch` sequences at a time.
    quant: the QuantConfig a quantized copy runs: its weight bytes as stored (fp8 linears, fp16
    rest), fp8 KV bytes plus one float32 scale per token and KV head, and its linears' prefill
    FLOPs at the measured fp8 matmul rate."""
    cfg = model.config
    codes = sum(b.numel() for b in model.buffers() if b.dtype == torch.float8_e4m3fn)   # linears built in fp8
    n_params = sum(p.numel() for p in model.parameters()) + codes
    bytes_per = next(model.parameters()).element_size()
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * bytes_per
    n_lin = codes
    if quant is not None and quant.weights is not None:
        n_lin = sum(m.weight.numel() for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and name != "lm_head")
    weight_bytes = n_params * bytes_per - n_lin * (bytes_per - 1)
    prefill_s_per_seq = 2 * n_in * (n_lin / dev["fp8_matmul_TFLOPs"] + (n_params - n_lin) / dev["matmul_TFLOPs"]) / 1e12
    if quant is not None and quant.kv_cache is not None:
        per_token_scales = 4 if quant.kv_cache.granularity == "per_token" else 0
        kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (head_dim + per_token_scales)
    avg_ctx = n_in + n_out / 2
    step_s = (weight_bytes + batch * avg_ctx * kv_per_token) / (dev["bandwidth_GBps"] * 1e9)
    decode_tps = batch / step_s
    full_tps = n_out / (n_out / decode_tps + prefill_s_per_seq)
    return decode_tps, full_tps


def baseline_generate(model, prompts, n_out: int, batch: int):
    """The MLPerf reference's way, batched: plain generate, default dynamic cache, forced length."""
    gcfg = GenerationConfig(max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False, eos_token_id=EOS,
                            pad_token_id=0)
    outs = []
    sync()
    t = time.perf_counter()
    for i in range(0, len(prompts), batch):
        x = torch.tensor(prompts[i:i + batch], device=model.device)
        with torch.inference_mode():
            y = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gcfg)
        outs.extend(y[:, x.shape[1]:].tolist())
        del x, y
    sync()
    return outs, time.perf_counter() - t


def compare(ours, base) -> dict:
    same = sum(a == b for a, b in zip(ours, base))
    firsts = []
    for a, b in zip(ours, base):
        d = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if d is not None:
            firsts.append(d)
    return {"identical": same, "total": len(base),
            "first_divergence_median": statistics.median(firsts) if firsts else None,
            "first_divergence_min": min(firsts) if firsts else None}


def loadgen_run(backend, prompts, scenario: str, log_dir: str, target_qps: float = 0.0,
                duration_s: float = 0.0, workers: int = 1, batch_size: int = 128,
                limits_ms: tuple[int, int] = SERVER_LIMITS["llama2-70b"], min_queries: int = 1) -> dict:
    """One LoadGen run over an in-memory QSL through harness/core.py's SUTCore (Server: TTFT and
    TPOT p99 limits_ms, at least duration_s and min_queries queries); with the GPU energy of the run."""
    import mlperf_loadgen as lg

    from harness.core import SUTCore

    n = len(prompts)
    settings = lg.TestSettings()
    settings.mode = lg.TestMode.PerformanceOnly
    settings.use_token_latencies = True
    if scenario == "Offline":
        settings.scenario = lg.TestScenario.Offline
        settings.offline_expected_qps = n  # with min_duration 0: issue exactly n samples
        settings.min_query_count = n
        settings.min_duration_ms = 0
    else:
        settings.scenario = lg.TestScenario.Server
        settings.server_target_qps = target_qps
        settings.ttft_latency = limits_ms[0] * 1_000_000   # ns
        settings.tpot_latency = limits_ms[1] * 1_000_000
        settings.min_duration_ms = int(duration_s * 1000)
        settings.min_query_count = max(1, min_queries)
    core = SUTCore(backend, prompts, streaming=scenario == "Server", num_workers=workers, batch_size=batch_size)
    sut = lg.ConstructSUT(core.issue_queries, core.flush_queries)
    qsl = lg.ConstructQSL(n, n, lambda s: None, lambda s: None)
    os.makedirs(log_dir, exist_ok=True)
    out = lg.LogOutputSettings()
    out.outdir = log_dir
    ls = lg.LogSettings()
    ls.log_output = out
    core.start()
    meter = energy_meter()
    engine = getattr(backend, "engine", None)
    before, cpu0 = (engine.snapshot(), stats.thread_cpu_s(engine.thread)) if engine else (None, None)
    t = time.perf_counter()
    lg.StartTestWithLogSettings(sut, qsl, settings, ls)
    wall = time.perf_counter() - t
    split = None
    if engine:
        cpu1 = stats.thread_cpu_s(engine.thread)
        split = stats.summarize(before, engine.snapshot(), wall, cpu1 - cpu0 if None not in (cpu0, cpu1) else None)
    core.stop()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    summary = {}
    path = os.path.join(log_dir, "mlperf_log_summary.txt")
    if os.path.isfile(path):
        for line in open(path):
            if ":" in line:
                k, v = line.split(":", 1)
                summary[k.strip()] = v.strip()
    recs = core.records
    n_tok = sum(r.n_output for r in recs)
    first = min(r.t_issued for r in recs)
    last = max(r.t_done for r in recs if r.t_done)
    return {"samples": len(recs), "tokens": n_tok, "wall_s": wall, "tok_s": n_tok / (last - first),
            "energy": energy_of(meter, n_tok), "engine": split,
            "errors": len(core.errors), "result": summary.get("Result is", "?"),
            "lg_tokens_per_s": summary.get("Tokens per second", summary.get("Completed tokens per second", "?")),
            "ttft_p99_ms": _pct([1000 * r.ttft for r in recs if r.ttft is not None], 99),
            "tpot_p99_ms": _pct([1000 * r.tpot for r in recs if r.tpot is not None], 99),
            "summary_lines": {k: v for k, v in summary.items() if "latency" in k.lower() or "valid" in k.lower()
                              or "per second" in k.lower() or "satisfied" in k.lower()}}


def energy_meter():
    """NVML sampling around one timed run (power, the enforced power limit, the energy counter)."""
    from harness.sysmetrics import SystemMonitor

    return SystemMonitor(interval_s=0.5).start()


def energy_of(meter, output_tokens: int) -> dict:
    """J per output token from NVML's energy counter over the run, with the power limit; the
    fields are None without NVML (the CPU dry run)."""
    agg = meter.stop(output_tokens=output_tokens)["aggregates"]
    return {k: agg.get(k) for k in ("gpu_energy_j", "gpu_joules_per_output_token", "gpu0_power_w_mean",
                                    "gpu0_power_limit_w")}


def write_json(res: dict, path: str):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(res, f, indent=1, default=str)
        os.replace(path + ".tmp", path)


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2-layer model (CPU dry run of the same code paths)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--baseline-batch", type=int, default=128)
    ap.add_argument("--slots", default="128,256", help="slot counts (batch sizes) to try for the engine")
    ap.add_argument("--n-prompts", type=int, default=256, help="prompts per engine run (>= slots)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--loadgen-offline", action="store_true", help="also run LoadGen Offline on the best slots")
    ap.add_argument("--server-qps", default="", help="comma list of Server target QPS to try through LoadGen")
    ap.add_argument("--server-duration-s", type=float, default=60)
    ap.add_argument("--server-min-queries", type=int, default=1, help="Server: each run lasts until this many "
                    "queries too (LoadGen's early stopping needs a few hundred for a p99 at the limits)")
    ap.add_argument("--server-slots", type=int, default=256)
    ap.add_argument("--server-limits", default="llama2-70b", help="';' list of Server latency limits, each "
                    "NAME (swept over --server-qps) or NAME:QPS,QPS,... (its own targets); names: "
                    f"{', '.join(f'{k} (TTFT/TPOT p99 {a}/{b} ms)' for k, (a, b) in SERVER_LIMITS.items())}")
    ap.add_argument("--server-quant-configs", default="fp16", help="comma list: 'fp16' and/or quant config YAMLs "
                    "the Server sweep runs (one backend each)")
    ap.add_argument("--stream-interval", type=int, default=16, help="Server: tokens per streamed chunk after the first")
    ap.add_argument("--server-backend-args", default="", help="';' list of variants, each a ',' list of KEY=VALUE "
                    f"engine options ({', '.join(SlotEngine.SCHEDULE)}): each Server target runs once per variant, "
                    "e.g. 'prefill_wait_ms=0;prefill_wait_ms=30'")
    ap.add_argument("--decode-sdpa", default="", help="extra runs of the last slot count with these decode "
                    "SDPA kernels (comma list of efficient,cudnn,math)")
    ap.add_argument("--compile", default="auto", help="engine option compile for the --slots runs (comma list: "
                    "each slot count runs once per value, e.g. off,auto)")
    ap.add_argument("--prefill-tokens", default="8192", help="engine option prefill_tokens (prompt tokens "
                    "per prefill forward) for the --slots runs (comma list)")
    ap.add_argument("--kv-bucket", type=int, default=32, help="engine option kv_bucket (smaller: less KV "
                    "over-read per decode step, more CUDA graphs)")
    ap.add_argument("--profile", action="store_true", help="only print kernel times of one prefill group "
                    "and one eager decode step (last --slots value)")
    ap.add_argument("--overlap-probe", action="store_true", help="only time decode steps and a prefill group "
                    "one after the other vs at once on two CUDA streams (last --slots value)")
    ap.add_argument("--shape-70b", action="store_true", help="Llama-2-70B shape split over cuda:0 and cuda:1")
    ap.add_argument("--shape-70b-fp8", action="store_true", help="Llama-2-70B shape on one GPU, its linears built "
                    "in fp8 (run it with --quant-configs quant_configs/fp8_kv.yaml for the fp8 KV cache)")
    ap.add_argument("--check-ties", action="store_true", help="explain output mismatches (logit gaps)")
    ap.add_argument("--quant-configs", default="", help="comma list: 'fp16' and/or quant config YAMLs, each run "
                    "by the slots engine (and LoadGen Offline with --loadgen-offline) at the last --slots value "
                    "instead of the --slots runs; outputs compared with fp16 and with fakequant")
    ap.add_argument("--quant-backend-args", default="", help="';' list of variants, each a ',' list of KEY=VALUE "
                    "hf options (e.g. 'fuse_fp8=true;fuse_fp8=false'): each quant config YAML of --quant-configs "
                    "runs once per variant on a fresh backend ('fp16' once), a later variant's outputs "
                    "compared with the first's")
    ap.add_argument("--match-prompts", type=int, default=128, help="prompts whose greedy outputs are compared")
    ap.add_argument("--out", default="", help="write all results as JSON here")
    ap.add_argument("--log-dir", default="/tmp/gpu_throughput_logs")
    args = ap.parse_args()
    try:
        server_variants(args.server_backend_args)   # a bad variant fails before the model is built
        option_variants(args.quant_backend_args, "--quant-backend-args")
    except HarnessError as e:
        ap.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    n_in, n_out = args.input_len, args.output_len
    res: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv,
                 "torch": torch.__version__, "loadavg_start": os.getloadavg()}
    import transformers
    res["transformers"] = transformers.__version__
    dev = measure_device(args.device)
    res["device"] = dev
    log.info("device %s", dev)
    if args.shape_70b_fp8:
        model = build_70b_fp8(args.device, **(dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
                                               if args.tiny else {}))
        InMemoryHF.share_model = True
        args.match_prompts = 0   # no fp16 model to compare with, no second copy for fakequant
    else:
        model = build_70b_two_gpus() if args.shape_70b else build_model(args.tiny, args.device, args.layers)
    InMemoryHF.model_in_memory = model
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    n_total = max(args.n_prompts, args.baseline_batch)
    prompts = [torch.randint(3, vocab, (n_in,), generator=g).tolist() for _ in range(n_total)]
    rows = []

    def row(mode, tps, batch, extra=None, quant=None):
        dec, full = rooflines(model, batch, n_in, n_out, dev, quant)
        r = {"mode": mode, "tok_s": tps, "batch": batch, "pct_decode_roofline": 100 * tps / dec,
             "pct_full_roofline": 100 * tps / full, "decode_roofline": dec, "full_roofline": full, **(extra or {})}
        rows.append(r)
        log.info("ROW %s", json.dumps(r))
        return r

    if args.profile:
        for name in [c for c in args.quant_configs.split(",") if c] or ["fp16"]:
            profile_engine(model, prompts, n_in, n_out, args, "" if name == "fp16" else name)
        return
    if args.overlap_probe:
        res["overlap"] = overlap_probe(model, prompts, n_in, n_out, args)
        print(json.dumps(res["overlap"], indent=1))
        write_json(res, args.out)
        return

    base_out = None
    if not args.skip_baseline:
        bb = args.baseline_batch
        baseline_generate(model, prompts[:bb], 4, bb)  # warm-up
        base_out, dt = baseline_generate(model, prompts[:bb], n_out, bb)
        row(f"generate, dynamic cache, batch {bb}", bb * n_out / dt, bb, {"seconds": dt})
        if args.check_ties:
            # Plain generate against itself: same prompts, batch 16 instead of bb.
            small, _ = baseline_generate(model, prompts[:16], n_out, 16)
            res["generate_b16_vs_b128"] = compare(small, base_out[:16])
            log.info("generate batch 16 vs batch %d: %s", bb, res["generate_b16_vs_b128"])
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

    if args.quant_configs:
        quant_runs(args, model, prompts, row, res)
        args.slots, args.loadgen_offline = "", False
    best = None
    variants = [(int(s), "auto", c, int(p)) for s in args.slots.split(",") if s for c in args.compile.split(",")
                if c for p in args.prefill_tokens.split(",") if p]
    variants += [(variants[-1][0], k, variants[-1][2], variants[-1][3]) for k in args.decode_sdpa.split(",")
                 if k and variants]
    for slots, sdpa, comp, pf in variants:
        b = load_backend(args, slots, decode_sdpa=sdpa, compile=comp, prefill_tokens=pf)
        try:
            todo = prompts[: max(args.n_prompts, slots)]
            t = time.perf_counter()
            b.generate(todo[:slots])  # warm-up: graph capture for every (slots, kv bucket)
            warm = time.perf_counter() - t
            sync()
            before = dict(b.engine.stats)
            meter = energy_meter()
            t = time.perf_counter()
            outs = b.generate(todo)
            sync()
            dt = time.perf_counter() - t
            energy = energy_of(meter, len(todo) * n_out)
            split = {k: v - before[k] for k, v in b.engine.stats.items()}
            log.info("time split: prefill %.2f s (%d groups, %.0f prompt tok/s), decode %.2f s (%d steps, "
                     "%.2f ms each)", split["prefill_s"], split["prefill_groups"],
                     split["prefill_tokens"] / max(split["prefill_s"], 1e-9), split["decode_s"],
                     split["decode_steps"], 1000 * split["decode_s"] / max(split["decode_steps"], 1))
            extra = {"seconds": dt, "n_prompts": len(todo), "warmup_s": warm, "split": split,
                     "graphs": len(b.engine.graphs), "cuda_graphs": b.engine.use_graphs, "energy": energy}
            if base_out is not None:
                extra["match"] = compare(outs[: len(base_out)], base_out)
                if args.check_ties:
                    extra["ties"] = tie_margins(model, prompts, outs, base_out)
            extra["step_ms"] = decode_step_ms(b.engine, slots, n_in + n_out)
            label = (f"hf backend slots engine, {slots} slots" + (f", decode_sdpa={sdpa}" if sdpa != "auto" else "")
                     + (f", compile={comp}" if comp != "auto" else "") + f", prefill {pf} tokens")
            if torch.cuda.is_available():
                extra["max_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            r = row(label, len(todo) * n_out / dt, slots, extra)
            if best is None or r["tok_s"] > best[1]:
                best = (slots, r["tok_s"], pf)
        except (torch.cuda.OutOfMemoryError, HarnessError) as e:  # HarnessError: the KV cache does not fit
            log.warning("slots=%d: out of memory (%s)", slots, str(e)[:200])
            rows.append({"mode": f"hf backend slots engine, {slots} slots, decode_sdpa={sdpa}", "error": "OOM"})
        finally:
            b.close()
            gc.collect()
            torch.cuda.empty_cache() if torch.cuda.is_available() else None

    if args.loadgen_offline and best:
        slots, _, pf = best
        b = load_backend(args, slots, prefill_tokens=pf)
        b.generate(prompts[:slots])  # warm-up
        # Two workers with batches of `slots`: while one waits for its batch the other's is queued,
        # so the engine's slots stay full.
        lgr = loadgen_run(b, prompts[: args.n_prompts], "Offline", os.path.join(args.log_dir, "offline"),
                          workers=2, batch_size=slots)
        row(f"LoadGen Offline, hf backend, {slots} slots, prefill {pf} tokens", lgr["tok_s"], slots,
            {"loadgen": lgr, "energy": lgr["energy"]})
        b.close()
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

    if args.server_qps or ":" in args.server_limits:
        res["server"] = []
        server_sweeps(args, prompts, lambda run: (res["server"].append(run), write_json(res, args.out)))

    res["rows"] = rows
    res["loadavg_end"] = os.getloadavg()
    write_json(res, args.out)
    print(f"\ndevice: {dev['name']}, copy {dev['bandwidth_GBps']:.0f} GB/s, fp16 matmul {dev['matmul_TFLOPs']:.0f} "
          f"TFLOP/s; input {n_in} / output {n_out} tokens; loadavg {os.getloadavg()}")
    base_tps = rows[0]["tok_s"] if rows and not args.skip_baseline else None
    print("| mode | output tok/s | x baseline | % decode roofline | % prefill+decode roofline | outputs = baseline |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['error']} | | | | |")
            continue
        m = r.get("match")
        ms = f"{m['identical']}/{m['total']}" if m else ""
        xb = f"{r['tok_s'] / base_tps:.2f}" if base_tps else ""
        print(f"| {r['mode']} | {r['tok_s']:.0f} | {xb} | {r['pct_decode_roofline']:.0f}% "
              f"(of {r['decode_roofline']:.0f}) | {r['pct_full_roofline']:.0f}% (of {r['full_roofline']:.0f}) | {ms} |")
    split_rows = [r for r in rows if r.get("split")]
    if split_rows:
        print("\n| mode | seconds | prefill s (groups) | prompt tok/s in prefill | decode s (steps) | ms per decode step |")
        print("|---|---|---|---|---|---|")
        for r in split_rows:
            sp = r["split"]
            print(f"| {r['mode']} | {r['seconds']:.2f} | {sp['prefill_s']:.2f} ({sp['prefill_groups']}) | "
                  f"{sp['prefill_tokens'] / max(sp['prefill_s'], 1e-9):.0f} | {sp['decode_s']:.2f} "
                  f"({sp['decode_steps']}) | {1000 * sp['decode_s'] / max(sp['decode_steps'], 1):.2f} |")
    for label, m in res.get("quant_matches", {}).items():
        if "vs_fakequant" not in m:   # a later --quant-backend-args variant against the first
            (other, c), = m.items()
            print(f"| {label} greedy outputs | = {other[3:]}: {c['identical']}/{c['total']} "
                  f"(first difference median {c['first_divergence_median']}) |")
            continue
        f16, fq = m.get("vs_fp16"), m["vs_fakequant"]
        print(f"| {label} greedy outputs | = fp16: {f16['identical'] if f16 else '-'}/{f16['total'] if f16 else '-'} "
              f"(first difference median {f16['first_divergence_median'] if f16 else '-'}) | = fakequant: "
              f"{fq['identical']}/{fq['total']} (first difference median {fq['first_divergence_median']}) |")
    for r in rows:
        if "x_fp16" in r:
            print(f"| {r['mode']} | {r['tok_s']:.0f} tok/s | x fp16 {r['x_fp16']:.2f} | "
                  f"J/token {r['energy']['gpu_joules_per_output_token']} | power limit {r['energy']['gpu0_power_limit_w']} W |")
    for s in res.get("server", []):
        e = s["engine"] or {}
        print(f"| LoadGen Server {s['quant']} {s['limits']} target {s['target_qps']:g} QPS [{s['variant']}] | "
              f"{s['tok_s']:.0f} | {s['samples'] / s['wall_s']:.1f} samples/s | "
              f"result {s['result']} | J/token {s['energy']['gpu_joules_per_output_token']} | "
              f"TTFT p99 {s['ttft_p99_ms']} ms | TPOT p99 {s['tpot_p99_ms']} ms | errors {s['errors']} | "
              f"prompts/group {_fmt(e.get('prompts_per_group'))} | ms/decode step {_fmt(e.get('decode_ms_per_step'))} "
              f"| prefill share {_fmt(e.get('share', {}).get('prefill'))} | off-CPU busy s "
              f"{_fmt(e.get('off_cpu_busy_s'))} |")


def slug(text: str) -> str:
    """text as a folder name: letters, digits, '.', '_' and '-'."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def server_variants(text: str) -> list[tuple[str, dict]]:
    """--server-backend-args: ';' list of variants, each a ',' list of KEY=VALUE engine scheduling
    options (SlotEngine.SCHEDULE); '' is one variant with the command line's values. (label, options)."""
    return option_variants(text, "--server-backend-args", SlotEngine.SCHEDULE)


def option_variants(text: str, flag: str, keys=None) -> list[tuple[str, dict]]:
    """A ';' list of variants, each a ',' list of KEY=VALUE hf options (only `keys`, where given),
    checked by the backend's own parser; '' is one variant with the command line's values."""
    defaults = {k: v for k, v in HFBackend.defaults.items() if keys is None or k in keys}
    out = []
    for entry in [e.strip() for e in text.split(";") if e.strip()] or [""]:
        given = {}
        for item in [i.strip() for i in entry.split(",") if i.strip()]:
            key, sep, value = item.partition("=")
            if not sep:
                raise HarnessError(f"{flag}: expected KEY=VALUE, got '{item}'")
            given[key.strip()] = value.strip()
        opts = parse_options(defaults, given, f"hf ({flag})")
        out.append((entry or "default", {k: opts[k] for k in given}))
    return out


def server_sweeps(args, prompts, record) -> None:
    """LoadGen Server at each --server-qps target, per quant config and latency limit set, once
    per --server-backend-args variant (set on the same engine between runs); a variant's sweep of
    a limit set stops at its first target whose latency limits fail (higher ones would fail too;
    an INVALID for too few queries, early stopping, goes on). record(run) gets each run as it ends
    (the results file is rewritten each time: a sweep cut short keeps what it measured)."""
    from quantization.config import load_config

    slots = args.server_slots
    variants = server_variants(args.server_backend_args)
    for name in [c for c in args.server_quant_configs.split(",") if c]:
        label = "fp16" if name == "fp16" else load_config(name).name
        b = load_backend(args, slots, stream_interval=args.stream_interval,
                         quant_config="" if name == "fp16" else name)
        try:
            warm_all_graphs(b, prompts)
            base = {k: b.options[k] for k in SlotEngine.SCHEDULE}
            for entry in [x for x in args.server_limits.split(";") if x]:
                limits, _, targets = entry.partition(":")
                failed: set[str] = set()
                for qps in [float(q) for q in (targets or args.server_qps).split(",") if q]:
                    for vlabel, opts in variants:
                        if vlabel in failed:
                            continue
                        sched = {**base, **opts}
                        b.options.update(sched)
                        b.engine.reschedule(**sched)
                        lgr = loadgen_run(b, prompts, "Server",
                                          os.path.join(args.log_dir, f"server_{label}_{limits}_{qps:g}_{slug(vlabel)}"),
                                          target_qps=qps, duration_s=args.server_duration_s, workers=2 * slots,
                                          limits_ms=SERVER_LIMITS[limits], min_queries=args.server_min_queries)
                        lgr.update(target_qps=qps, quant=label, limits=limits, limits_ms=SERVER_LIMITS[limits],
                                   variant=vlabel, schedule=sched)
                        record(lgr)
                        log.info("SERVER %s", json.dumps(lgr, default=str))
                        print(f"ENGINE {label} {limits} {qps:g} QPS [{vlabel}] {lgr['result']}: "
                              f"{stats.line(lgr['engine'])}", flush=True)
                        if lgr["summary_lines"].get("Performance constraints satisfied") == "NO":
                            failed.add(vlabel)
                    if len(failed) == len(variants):
                        break
        finally:
            b.close()
            gc.collect()
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


def profile_engine(model, prompts, n_in, n_out, args, quant_config: str = ""):
    """Kernel-time table for one prefill group and a few eager decode steps of the slots engine
    (quant_config: a quant config YAML the engine executes, '' for the model as built)."""
    from torch.profiler import ProfilerActivity, profile

    slots = int(args.slots.split(",")[-1])
    b = load_backend(args, slots, cuda_graphs="false", quant_config=quant_config)
    b.generate(prompts[:2])  # warm-up
    eng = b.engine
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    from backends.hf_engine import Request
    n_group = max(1, min(slots, eng.prefill_tokens // n_in, len(prompts)))
    group = [Request(prompt=p, slot=i) for i, p in enumerate(prompts[:n_group])]
    with torch.inference_mode():
        eng._prefill(group[:1])  # warm-up of this shape
        sync()
        for label, fn in (("prefill group", lambda: eng._prefill(group)),
                          ("decode step", lambda: eng._step_body(slots, n_in + n_out))):
            with profile(activities=acts) as prof:
                t = time.perf_counter()
                for _ in range(3):
                    fn()
                sync()
                dt = (time.perf_counter() - t) / 3
            print(f"\n== {quant_config or 'fp16'}: {label}: {dt * 1000:.1f} ms wall each ==")
            key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
            print(prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=60))
    b.close()
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


def overlap_probe(model, prompts, n_in, n_out, args) -> dict:
    """Can a compute-bound prefill group run during memory-bound decode steps on one GPU?
    Times k captured decode steps (all slots, full window) and one prefill forward of a group
    (prefill_tokens prompt tokens), first one after the other, then launched together on two
    CUDA streams (with either one at high priority). The cache contents are garbage here: only
    the timing counts. Concurrent time near max(decode, prefill) would mean prefill can hide under
    decode; near their sum, that it cannot."""
    slots = int(args.slots.split(",")[-1])
    b = load_backend(args, slots, kv_bucket=n_in + n_out, compile="auto")
    b.generate(prompts[:slots])  # captures the (slots, full window) graph
    eng = b.engine
    graph = eng.graphs[(slots, n_in + n_out)]
    n = max(1, eng.prefill_tokens // n_in)
    ids = torch.tensor(prompts[:n], device=eng.device)
    rows = torch.arange(n, device=eng.device)

    def prefill():
        eng.prefill_forward(ids, rows)

    def timed(fn, reps=3):
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return 1000 * (time.perf_counter() - t) / reps

    with torch.inference_mode():
        t_pre = timed(prefill)
        t_step = timed(lambda: graph.replay())
        k = max(1, round(t_pre / t_step))

        def decode():
            for _ in range(k):
                graph.replay()

        out = {"slots": slots, "prefill_group_tokens": n * n_in, "prefill_ms": t_pre, "decode_step_ms": t_step,
               "decode_steps": k, "serial_ms": timed(lambda: (decode(), prefill()))}
        for label, prio in (("equal", (0, 0)), ("decode_high", (-1, 0)), ("prefill_high", (0, -1))):
            sd, sp = torch.cuda.Stream(priority=prio[0]), torch.cuda.Stream(priority=prio[1])

            def both():
                sd.wait_stream(torch.cuda.current_stream())
                sp.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(sd):
                    decode()
                with torch.cuda.stream(sp):
                    prefill()
                torch.cuda.current_stream().wait_stream(sd)
                torch.cuda.current_stream().wait_stream(sp)

            out[f"concurrent_ms_{label}"] = timed(both)
    out["ideal_overlap_ms"] = max(k * t_step, t_pre)
    b.close()
    return out


def decode_step_ms(engine, nb: int, kv_len: int) -> float | None:
    """Median time of one captured decode step (slots nb, full kv_len window)."""
    graph = engine.graphs.get((nb, kv_len))
    if graph is None or not torch.cuda.is_available():
        return None
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        graph.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def tie_margins(model, prompts, ours, base, limit: int = 16) -> dict:
    """At the first token where ours and the baseline differ: the gap between the two candidates'
    logits in one fp16 forward of the common prefix. Near-zero gaps mean a near-tie that any
    change of kernel or batch shape can flip, not a bug."""
    gaps, top2 = [], 0
    for p, a, b in zip(prompts, ours, base):
        d = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if d is None:
            continue
        x = torch.tensor([p + a[:d]], device=model.device)
        with torch.inference_mode():
            logits = model(x).logits[0, -1].float()
        gaps.append(abs(logits[a[d]] - logits[b[d]]).item())
        top2 += int(set(torch.topk(logits, 2).indices.tolist()) == {a[d], b[d]})
        if len(gaps) >= limit:
            break
    spread = None
    if gaps:
        with torch.inference_mode():
            lg_ = model(torch.tensor([prompts[0]], device=model.device)).logits[0, -1].float()
        spread = (lg_.max() - lg_.topk(10).values[-1]).item()
    return {"n": len(gaps), "median_gap": statistics.median(gaps) if gaps else None,
            "max_gap": max(gaps) if gaps else None, "both_are_top2": top2,
            "typical_top1_minus_top10": spread}


def quant_runs(args, model, prompts, row, res):
    """Per config ('fp16' or a quant config YAML): the slots engine over all prompts, then LoadGen
    Offline (--loadgen-offline), on a fresh backend at the last --slots value; greedy outputs of
    the first --match-prompts prompts against the fp16 run and against fakequant of the config."""
    from quantization.config import load_config

    n_in, n_out = args.input_len, args.output_len
    slots = int(args.slots.split(",")[-1])
    todo = prompts[: max(args.n_prompts, slots)]
    n_match = min(args.match_prompts, len(todo))
    outs: dict[str, list] = {}
    fp16_tps: dict[str, float] = {}
    logits = {"fp16": last_logits(model, todo[:8])} if n_match else {}
    res["quant_matches"] = {}

    def free(b):
        b.close()
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

    variants = option_variants(args.quant_backend_args, "--quant-backend-args")
    runs = [(c, v) for c in args.quant_configs.split(",") if c for v in ([("", {})] if c == "fp16" else variants)]
    for name, (variant, options) in runs:
        cfg = None if name == "fp16" else load_config(name)
        base = "fp16" if cfg is None else cfg.name
        tag = "" if cfg is None or len(variants) == 1 else " [{}]"
        label, first = base + tag.format(variant), base + tag.format(variants[0][0])
        b = load_backend(args, slots, quant_config="" if cfg is None else name, **options)
        try:
            t = time.perf_counter()
            b.generate(todo[:slots])  # warm-up: compile, graph capture for every (slots, kv bucket)
            warm = time.perf_counter() - t
            outs[label] = b.generate(todo[:n_match]) if n_match else []
            sync()
            before = dict(b.engine.stats)
            t = time.perf_counter()
            if args.loadgen_offline:   # the engine's split is taken around the LoadGen run itself
                lgr = loadgen_run(b, todo, "Offline", os.path.join(args.log_dir, f"offline_{slug(label)}"),
                                  workers=2, batch_size=slots)
                energy = lgr["energy"]
            else:
                meter = energy_meter()
                b.generate(todo)
                sync()
                energy = energy_of(meter, len(todo) * n_out)
            sync()
            dt = time.perf_counter() - t
            split = {k: v - before[k] for k, v in b.engine.stats.items()}
            extra = {"seconds": dt, "n_prompts": len(todo), "warmup_s": warm, "split": split, "quant": label,
                     "energy": energy,
                     "quant_info": b.info().get("quant"), "graphs": len(b.engine.graphs),
                     "cuda_graphs": b.engine.use_graphs, "step_ms": decode_step_ms(b.engine, slots, n_in + n_out),
                     "fp8_attention_tuning": {str(k): v for k, v in fp8_kv.tuned.items()}}
            if torch.cuda.is_available():
                extra["max_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            if args.loadgen_offline:
                extra["loadgen"] = lgr
                r = row(f"LoadGen Offline, hf backend, {slots} slots, {label}", lgr["tok_s"], slots, extra, cfg)
            else:
                r = row(f"hf backend slots engine, {slots} slots, {label}", len(todo) * n_out / dt, slots, extra, cfg)
            if cfg is None:
                fp16_tps["rate"] = r["tok_s"]
            if "rate" in fp16_tps:
                r["x_fp16"] = r["tok_s"] / fp16_tps["rate"]
            if label != first and n_match:   # the same config with other options: same tokens?
                res["quant_matches"][label] = {f"vs_{first}": compare(outs[label], outs[first])}
                log.info("MATCH %s %s", label, json.dumps(res["quant_matches"][label]))
            elif cfg is not None and n_match:
                match = {"vs_fp16": compare(outs[label], outs["fp16"]) if "fp16" in outs else None}
                logits["real"] = last_logits(b.model, todo[:8])
                if args.check_ties and "fp16" in outs:
                    match["vs_fp16_ties"] = tie_margins(b.model, todo, outs[label], outs["fp16"])
        finally:
            free(b)
        if cfg is not None and n_match and label == first:
            fb = load_backend(args, n_match, cls=InMemoryFake, quant_config=name)
            try:
                fake = fb.generate(todo[:n_match])
                match["vs_fakequant"] = compare(outs[label], fake)
                if args.check_ties:
                    match["vs_fakequant_ties"] = tie_margins(fb.model, todo, outs[label], fake)
                logits["fake"] = last_logits(fb.model, todo[:8])
            finally:
                free(fb)
            match["logit_noise"] = logit_noise(logits)
            res["quant_matches"][label] = match
            log.info("MATCH %s %s", label, json.dumps(match))


def last_logits(model, prompts) -> torch.Tensor:
    """Next-token logits after each prompt (one plain forward each, float32 on the CPU)."""
    with torch.inference_mode():
        return torch.stack([model(torch.tensor([p], device=model.device)).logits[0, -1].float().cpu()
                            for p in prompts])


def logit_noise(logits: dict) -> dict:
    """How far the real, the simulated and the fp16 next-token logits lie apart, against the gap
    between the fp16 model's top two candidates (a greedy choice flips where noise > gap)."""
    def gap(a, b):
        d = (a - b).abs()
        return {"max": d.max().item(), "median_of_row_max": d.amax(dim=1).median().item()}

    top2 = logits["fp16"].topk(2, dim=1).values
    return {"real_vs_fake": gap(logits["real"], logits["fake"]), "real_vs_fp16": gap(logits["real"], logits["fp16"]),
            "fake_vs_fp16": gap(logits["fake"], logits["fp16"]),
            "fp16_top1_minus_top2_median": (top2[:, 0] - top2[:, 1]).median().item(),
            "real_vs_fake_argmax_equal": int((logits["real"].argmax(1) == logits["fake"].argmax(1)).sum()),
            "n": len(logits["fp16"])}


def warm_all_graphs(backend, prompts):
    """Capture the graphs a Server run will need (each slot count) before LoadGen starts timing."""
    engine = None
    n = 1
    while True:
        backend.generate(prompts[:n])
        engine = backend.engine
        if n >= engine.n_slots:
            break
        n = min(2 * n, engine.n_slots)
    # Fewer sequences use smaller graphs only while the lowest slots are busy; also warm with a
    # staggered set so every (slot count, kv bucket) pair that a run can hit exists.
    threads = [threading.Thread(target=lambda p=p: list(backend.stream(p))) for p in prompts[:engine.n_slots]]
    for t in threads:
        t.start()
        time.sleep(0.005)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
