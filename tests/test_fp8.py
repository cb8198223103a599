"""FP8 (e4m3) configs: the format's arithmetic, fake quantization of it, the real path of
`--backend hf --quant-config` (FP8 Linear and fp8 KV cache, here their CPU reference maths) and
the fp8 decode attention (torch reference; the Triton kernel under TRITON_INTERPRET=1 when Triton
is installed). Tiny random Llama built in-process, float32 on the CPU."""
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backends import GenerationParams, make_backend  # noqa: E402
from common.errors import HarnessError  # noqa: E402
from quantization.config import load_config, parse_config  # noqa: E402
from quantization.fake import quantize_model, quantize_weight  # noqa: E402
from quantization.fp8 import FP8, FP8_MAX, FP8Group, FP8GroupMember, FP8Linear, fake_fp8, fp8_scale, merge_shared_inputs  # noqa: E402
from quantization.fp8_kv import decode_attention_reference, fake_kv, kernel_configs, quantize_kv  # noqa: E402
from test_fakequant import VOCAB, tiny_model, write_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP8_WA = os.path.join(ROOT, "quant_configs", "fp8_wa.yaml")
FP8_ALL = os.path.join(ROOT, "quant_configs", "fp8.yaml")


def on_e4m3_grid(codes: torch.Tensor) -> bool:
    """Each value is an e4m3 number (up to the float32 rounding of dividing by its scale)."""
    return bool(torch.allclose(codes, codes.clamp(-FP8_MAX, FP8_MAX).to(FP8).float(), rtol=1e-6, atol=0))


# ---- config ------------------------------------------------------------------------------------

def test_fp8_configs_parse():
    cfg = load_config(FP8_ALL)
    assert cfg.weights.format == cfg.activations.format == cfg.kv_cache.format == "fp8_e4m3"
    assert (cfg.weights.granularity, cfg.activations.granularity, cfg.kv_cache.granularity) == \
        ("per_channel", "per_token", "per_token")
    assert cfg.kv_cache.scale is None and load_config(FP8_WA).kv_cache is None
    kv = parse_config({"kv_cache": {"granularity": "per_tensor"}}).kv_cache
    assert kv.scale == 1.0 and parse_config({"kv_cache": {"granularity": "per_tensor", "scale": 0.5}}).kv_cache.scale == 0.5


@pytest.mark.parametrize("raw,key", [
    ({"weights": {"format": "fp4"}}, "weights.format"),
    ({"weights": {"format": "fp8_e4m3", "bits": 4}}, "weights.bits"),
    ({"activations": {"format": "fp8_e4m3", "symmetric": False}}, "activations.symmetric"),
    ({"kv_cache": {"format": "int8"}}, "kv_cache.format"),
    ({"kv_cache": {"granularity": "per_channel"}}, "kv_cache.granularity"),
    ({"kv_cache": {"scale": 2.0}}, "kv_cache.scale"),
    ({"kv_cache": {"granularity": "per_tensor", "scale": -1}}, "kv_cache.scale"),
    ({"kv_cache": {"bits": 8}}, "kv_cache.bits"),
])
def test_bad_fp8_config_names_the_key(raw, key):
    with pytest.raises(HarnessError, match=rf"quant config <dict>: {key}: ") as e:
        parse_config(raw)
    assert "\n" not in str(e.value)


# ---- the arithmetic and fake quantization -------------------------------------------------------

def test_fake_fp8_lands_on_the_scaled_e4m3_grid():
    torch.manual_seed(0)
    x = torch.randn(64, 96) * 3
    scale = fp8_scale(x.abs().amax(dim=-1, keepdim=True))
    y = fake_fp8(x, scale)
    codes = y / scale
    assert on_e4m3_grid(codes) and not on_e4m3_grid(x / scale)
    assert torch.allclose(y.abs().amax(dim=-1), x.abs().amax(dim=-1), rtol=1e-6)   # the largest lands on 448
    # 3 mantissa bits: relative error at most 2^-4 for normal values (|code| >= 2^-6)
    normal = codes.abs() >= 2 ** -6
    assert ((y - x).abs() <= 2 ** -4 * x.abs() + 1e-12)[normal].all()


def test_fp8_weights_and_per_token_activations_in_fakequant():
    model = tiny_model()
    w = model.model.layers[0].mlp.up_proj.weight.data.clone()
    report = quantize_model(model, load_config(FP8_WA))
    assert len(report.weight_layers) == len(report.activation_layers) == 14
    q = model.model.layers[0].mlp.up_proj.weight.data
    rows = q / fp8_scale(w.abs().amax(dim=1, keepdim=True))
    assert on_e4m3_grid(rows) and torch.allclose(rows.abs().amax(dim=1), torch.tensor(FP8_MAX))
    assert torch.equal(q, quantize_weight(w, load_config(FP8_WA).weights))


def test_fp8_linear_reference_equals_fake_quant_linear():
    """The real layer (fp8 codes, one float32 matmul, scales after) against the simulation
    (dequantized weights and inputs, matmul). Same maths; float32 rounding order only."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48, bias=True)
    x = torch.randn(5, 7, 64)
    cfg = load_config(FP8_WA)
    real = FP8Linear(lin, "per_channel", "per_token")
    assert real.weight.dtype == FP8 and real.weight_scale.shape == (1, 48)
    wq = quantize_weight(lin.weight.data, cfg.weights)
    xq = fake_fp8(x, fp8_scale(x.abs().amax(dim=-1, keepdim=True)))
    fake = torch.nn.functional.linear(xq, wq, lin.bias)
    out = real(x)
    assert out.shape == (5, 7, 48)
    assert torch.allclose(out, fake, rtol=1e-5, atol=1e-5), (out - fake).abs().max()
    exact = lin(x)
    assert 1e-3 < (out - exact).abs().max() < 0.1 * exact.abs().max()   # it did quantize, by a few %


@pytest.mark.parametrize("weights,acts", [("per_channel", "per_token"), ("per_tensor", "per_tensor")])
def test_merged_qkv_gives_each_linears_own_output(weights, acts):
    """q/k/v merged into one FP8Group: one input quantization and one matmul, each member's slice
    equal to what its own FP8Linear computes (the row scales concatenate exactly)."""
    torch.manual_seed(1)
    attn = torch.nn.Module()
    lins = {n: torch.nn.Linear(64, m, bias=False) for n, m in (("q_proj", 64), ("k_proj", 32), ("v_proj", 32))}
    for n, lin in lins.items():
        setattr(attn, n, FP8Linear(lin, weights, acts))
    alone = {n: getattr(attn, n) for n in lins}
    assert merge_shared_inputs(attn) == 1
    assert isinstance(attn.qkv_fp8, FP8Group) and isinstance(attn.k_proj, FP8GroupMember)
    assert attn.qkv_fp8.weight.shape == (128, 64) and attn.k_proj.weight.shape == (32, 64)
    assert sum(1 for _ in attn.buffers()) == 2   # the codes and scales are held once, by the group
    x = torch.randn(3, 5, 64) * 4
    for n in ("q_proj", "k_proj", "v_proj"):      # in the order the attention calls them
        out = getattr(attn, n)(x)
        assert out.shape == (3, 5, lins[n].out_features)
        assert torch.allclose(out, alone[n](x), rtol=1e-6, atol=1e-6), n
    # a new input (or a member called twice on one input) computes afresh, never a stale slice
    y = torch.randn(2, 64)
    assert torch.allclose(attn.v_proj(y), alone["v_proj"](y), rtol=1e-6, atol=1e-6)
    assert torch.allclose(attn.v_proj(y), alone["v_proj"](y), rtol=1e-6, atol=1e-6)
    assert torch.allclose(attn.q_proj(y), alone["q_proj"](y), rtol=1e-6, atol=1e-6)


def test_linears_with_bias_stay_separate():
    mlp = torch.nn.Module()
    mlp.gate_proj = FP8Linear(torch.nn.Linear(32, 48, bias=True), "per_channel", "per_token")
    mlp.up_proj = FP8Linear(torch.nn.Linear(32, 48, bias=True), "per_channel", "per_token")
    assert merge_shared_inputs(mlp) == 0 and isinstance(mlp.up_proj, FP8Linear)


# ---- fp8 KV cache and decode attention ----------------------------------------------------------

def kv_case(b=3, h=8, hk=2, L=40, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, 1, d, generator=g)
    k, v = torch.randn(b, hk, L, d, generator=g) * 2, torch.randn(b, hk, L, d, generator=g)
    lengths = torch.tensor([L, 7, 23][:b])
    return q, k, v, lengths


@pytest.mark.parametrize("static", [None, 0.02])
def test_decode_attention_reference_equals_sdpa_on_the_dequantized_cache(static):
    q, k, v, lengths = kv_case()
    k8, ks = quantize_kv(k, static)
    v8, vs = quantize_kv(v, static)
    ks, vs = (static, static) if static else (ks, vs)
    out = decode_attention_reference(q, k8.view(FP8), v8.view(FP8), ks, vs, lengths, 0.25)
    kd, vd = fake_kv(k, static), fake_kv(v, static)
    mask = (torch.arange(k.shape[2])[None, :] < lengths[:, None])[:, None, None, :]
    ref = torch.nn.functional.scaled_dot_product_attention(q, kd, vd, attn_mask=mask, scale=0.25, enable_gqa=True)
    assert out.shape == (3, 1, 8, 16)
    assert torch.allclose(out, ref.transpose(1, 2), atol=1e-5), (out - ref.transpose(1, 2)).abs().max()


INTERPRETED_KERNEL_CHECK = """
import torch
from quantization.fp8 import FP8, _row_kernel, quantize_rows
from quantization.fp8_kv import decode_attention_reference, decode_attention_triton, kernel_configs, quantize_kv
from test_fp8 import kv_case
for h, hk in ((4, 4), (8, 2)):
    for static in (None, 0.02):
        q, k, v, lengths = kv_case(h=h, hk=hk, L=70, seed=h)
        k8, ks = quantize_kv(k, static)
        v8, vs = quantize_kv(v, static)
        ks, vs = (static, static) if static else (ks, vs)
        ref = decode_attention_reference(q, k8.view(FP8), v8.view(FP8), ks, vs, lengths, 0.25)
        for cfg in kernel_configs(h // hk):
            cfg = (cfg[0], 16, cfg[2], cfg[3])   # blocks of 16 positions: several blocks, a partial last one
            out = decode_attention_triton(q, k8, v8, ks, vs, lengths, 0.25, config=cfg)
            print(h, hk, cfg[0], torch.isfinite(out).all().item(), (out - ref).abs().max().item())
torch.manual_seed(0)         # the same rows every run (over 300 seeds at least 97% of the codes matched)
x = torch.randn(5, 100) * 3
x[2] = 0
q8, s8 = torch.empty(5, 100, dtype=FP8), torch.empty(5, 1)
_row_kernel()[(5,)](x, q8, s8, 100, x.stride(0), BLOCK=128)
q0, s0 = quantize_rows(x)
# Triton 3.x's interpreter emulates the float8 cast without carrying a round-up into the exponent
# (x/s = 127.1 gives 64, not 128), so only most codes can match here; tests/test_fp8_gpu.py
# checks the GPU cast exactly.
same = (q8.view(torch.uint8) == q0.view(torch.uint8)).float().mean().item()
# scales: amax times 1/448 as torch does on CUDA (the CPU divides): equal to float32 rounding
print("rows", torch.allclose(s8, s0, rtol=1e-6, atol=0) and same > 0.95)
# the cache-write kernel: keys with the projection's strides (n, T, heads, d) seen as (n, heads, T, d),
# 5 heads in a block of 8, rows and positions out of order; against the eager write
from quantization.fp8_kv import _write_kernel, write_kv
x = (torch.randn(3, 4, 5, 16) * 2).transpose(1, 2)
rows, pos = torch.tensor([2, 0, 3]), torch.tensor([[1, 2, 3, 4], [0, 1, 2, 3], [8, 9, 10, 11]])
ref_c, ref_s = torch.zeros(4, 5, 12, 16, dtype=torch.uint8), torch.ones(4, 5, 12)
write_kv(x, ref_c, ref_s, rows, pos)
c, s = torch.zeros_like(ref_c), torch.ones_like(ref_s)
_write_kernel()[(3, 4)](x, rows, pos, c, s, x.stride(0), x.stride(1), x.stride(2), pos.stride(0), pos.stride(1),
                        c.stride(0), c.stride(1), c.stride(2), s.stride(0), s.stride(1), H=5, D=16, BLOCK_H=8)
written = ref_s != 1
same = (c == ref_c)[written].float().mean().item()
print("write", bool(written.sum() == 3 * 4 * 5) and torch.allclose(s, ref_s, rtol=1e-6, atol=0)
      and same > 0.95 and bool((c[~written] == 0).all()))
"""


def test_triton_decode_kernel_in_the_interpreter():
    """The GPU kernel's own code, run by Triton's interpreter on the CPU (a fresh process: the
    interpreter must be on before Triton is first imported), against the torch reference."""
    pytest.importorskip("triton")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", INTERPRETED_KERNEL_CHECK], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[-2] == "rows True"   # the Triton activation quantizer: torch's scales and codes
    assert lines[-1] == "write True"  # the fp8 cache write: the eager write's scales and codes, nothing else
    rows = [line.split() for line in lines[:-2]]
    assert len(rows) == 2 * (len(kernel_configs(1)) + len(kernel_configs(4)))
    for h, hk, block_g, finite, err in rows:
        # float32 inputs: float32 tiles (the GPU test checks the fp16 operands of 16-bit models)
        assert finite == "True" and float(err) < 1e-5, rows


# ---- the backends: real (reference maths) against the simulation -------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama-fp8")
    tiny_model().save_pretrained(path)
    return str(path)


PARAMS = GenerationParams(max_new_tokens=20, min_new_tokens=1, ignore_eos=True)
g = torch.Generator().manual_seed(3)
PROMPTS = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (6, 11, 17, 4)]


def run(name, checkpoint, **options):
    b = make_backend(name, model_path=checkpoint, dtype="float32", device="cpu", params=PARAMS,
                     options={"batch_size": "3", **options})
    b.load()
    try:
        outs = b.generate(PROMPTS)   # 4 prompts on 3 slots: one waits and is prefilled into a freed slot
        scores = torch.tensor(b.score(PROMPTS[0] + outs[0]))
        return outs, scores, b.info()
    finally:
        b.close()


@pytest.mark.parametrize("config", [FP8_WA, FP8_ALL])
def test_real_fp8_path_matches_its_fake_quant_simulation(checkpoint, config):
    """Same config, executed (hf: fp8 codes, scales after the float32 matmul, fp8 KV cache read by
    the fp8 decode attention) and simulated (fakequant: dequantized values in float32).
    Tolerance: the two differ only in float32 rounding order (~1e-6 relative). An activation
    within that of a midpoint between two e4m3 codes could round the other way (one element off
    by one e4m3 step, ~6%); on this model that moves log-probs by far less than 1e-3, and the
    greedy outputs must be identical."""
    ref_out, ref_scores, _ = run("hf", checkpoint)
    real_out, real_scores, real_info = run("hf", checkpoint, quant_config=config)
    fake_out, fake_scores, fake_info = run("fakequant", checkpoint, quant_config=config)
    assert real_info["quant"]["execution"] == "real" and real_info["quant"]["matmul"] == "float32 reference"
    assert real_info["quant"]["linear_layers"] == 14 and real_info["quant_config_path"] == config
    assert real_info["quant"]["merged_groups"] == 4   # q/k/v and gate/up of both layers
    assert fake_info["quant"]["execution"].startswith("simulated")
    if config == FP8_ALL:
        assert real_info["quant"]["kv_cache"]["decode_attention"] == "float32 reference"
    assert real_out == fake_out
    assert (real_scores - fake_scores).abs().max() < 1e-3
    # and fp8 is not a no-op: the log-probs of the same continuation move against float32
    assert (real_scores - ref_scores).abs().max() > 1e-3


def test_fp8_kv_cache_real_equals_simulated_and_differs_from_float(checkpoint, tmp_path):
    kv_only = write_config(tmp_path, "kv.yaml", "kv_cache: {format: fp8_e4m3}\n")
    ref_out, _, _ = run("hf", checkpoint)
    real_out, _, info = run("hf", checkpoint, quant_config=kv_only)
    fake_out, _, _ = run("fakequant", checkpoint, quant_config=kv_only)
    assert info["quant"]["linear_layers"] == 0 and info["quant"]["kv_cache"]["granularity"] == "per_token"
    assert real_out == fake_out
    static = write_config(tmp_path, "kv_static.yaml", "kv_cache: {granularity: per_tensor, scale: 0.01}\n")
    assert run("hf", checkpoint, quant_config=static)[0] == run("fakequant", checkpoint, quant_config=static)[0]
    assert len(ref_out) == len(real_out) == 4


@pytest.mark.parametrize("text,message", [
    ("weights: {bits: 8}\nactivations: {bits: 8}\n", r"weights.format: int \(8-bit\) has no real kernel"),
    ("weights: {format: fp8_e4m3}\n", r"needs both weights and activations in fp8_e4m3"),
    ("weights: {format: fp8_e4m3, granularity: per_group, group_size: 32}\nactivations: {format: fp8_e4m3}\n",
     r"weights.granularity: per_group has no real fp8 kernel"),
    ("weights: {format: fp8_e4m3}\nactivations: {format: fp8_e4m3, granularity: per_channel}\n",
     r"only dynamic per_token or per_tensor fp8 activations"),
])
def test_hf_refuses_what_it_cannot_execute(checkpoint, tmp_path, text, message):
    path = write_config(tmp_path, "c.yaml", text)
    with pytest.raises(HarnessError, match=message) as e:
        make_backend("hf", model_path=checkpoint, dtype="float32", device="cpu", params=PARAMS,
                     options={"quant_config": path})
    assert "\n" not in str(e.value) and "--backend fakequant" in str(e.value)


def test_hf_refuses_fp8_embeddings_and_kv_cache_without_slots(checkpoint, tmp_path):
    path = write_config(tmp_path, "e.yaml", "weights: {format: fp8_e4m3}\nactivations: {format: fp8_e4m3}\n")
    b = make_backend("hf", model_path=checkpoint, dtype="float32", device="cpu", params=PARAMS,
                     options={"quant_config": path})
    with pytest.raises(HarnessError, match=r"quantizes nn.Linear only; add 'model.embed_tokens' to layers.skip"):
        b.load()
    b = make_backend("hf", model_path=checkpoint, dtype="float32", device="cpu", params=PARAMS,
                     options={"quant_config": FP8_ALL, "engine": "generate"})
    with pytest.raises(HarnessError, match=r"kv_cache: only the slots engine"):
        b.load()


def test_main_refuses_hf_with_an_int_config_in_one_line(checkpoint, tmp_path):
    from helpers import run_main, tiny_conf, tiny_dataset

    data = tiny_dataset(tmp_path / "tiny.pkl", n=4)
    conf = tiny_conf(tmp_path / "user.conf", n=4)
    p = run_main("--scenario", "Offline", "--backend", "hf", "--model-path", checkpoint, "--dataset-path", str(data),
                 "--user-conf", str(conf), "--quant-config", os.path.join(ROOT, "quant_configs", "w8a8.yaml"),
                 "--output-log-dir", str(tmp_path / "out"))
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "weights.format: int (8-bit) has no real kernel in --backend hf" in lines[0]
