"""The fp8 activation quantization fused into the compiled RMSNorm and SiLU*up
(backends/hf_engine/fused.py): codes and scales bit-equal to the separate path's (the activation
stored in the model dtype, then quantize_rows), under inductor (C++ code on the CPU) and through
`--backend hf --quant-config` on a tiny Llama. tests/test_fp8_gpu.py checks the same on a GPU."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backends import make_backend  # noqa: E402
from backends.hf_engine import fused  # noqa: E402
from quantization.fp8 import (FP8, FP8Group, FP8Linear, FP8Rows, merge_shared_inputs, quantize_rows,  # noqa: E402
                             takes_rows)
from test_fakequant import tiny_model, write_config  # noqa: E402
from test_fp8 import FP8_ALL, PARAMS, PROMPTS  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def hard_rows(shape, dtype, seed, big):
    """Random rows with the cases that matter to a per-row quantizer: an all-zero row, a row
    with signed zeros, a row whose largest value dwarfs the rest (codes in e4m3's subnormals and
    zeros), values near the dtype's top."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3
    flat = x.view(-1, shape[-1])
    flat[1] = 0
    flat[2, ::2] = -0.0
    flat[3, 5] = 1e4
    flat[4, :3] = big
    return x.to(dtype)


def compiled(fn, options):
    torch._dynamo.reset()
    return torch.compile(fn, backend="inductor", options=options)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_rms_norm_quantization_equals_separate(dtype):
    """Inductor (the C++ code on this CPU) with fp8_numerics: the same codes and scales as the
    compiled RMSNorm's stored output quantized afterwards (RMSNorm compiled with the same options
    and without them). Not against eager: inductor sums the squares in another order."""
    options = fused.fp8_numerics()
    assert options is not None, "this torch's inductor lacks the switches the fused path needs"
    big = 6e4 if dtype == torch.float16 else 1e30
    x = hard_rows((2, 9, 256), dtype, 0, big)
    w = (torch.rand(256, generator=torch.Generator().manual_seed(1)) + 0.5).to(dtype)
    codes, scale = compiled(fused._rms_norm_fp8, options)(x, w, 1e-5)
    assert codes.dtype == FP8 and codes.shape == (18, 256) and scale.shape == (18, 1)
    assert scale[1].item() == 1.0   # the zero row
    for y in (compiled(fused._rms_norm, options)(x, w, 1e-5), compiled(fused._rms_norm, None)(x, w, 1e-5)):
        ref_codes, ref_scale = quantize_rows(y.reshape(-1, 256))
        assert same_bits(codes, ref_codes) and same_bits(scale, ref_scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_silu_mul_quantization_equals_separate(dtype):
    options = fused.fp8_numerics()
    gate_up = hard_rows((3, 5, 2 * 320), dtype, 2, 3e4 if dtype == torch.float16 else 1e30)
    gate, up = gate_up.split(320, dim=-1)   # views of one tensor, as the merged gate/up matmul gives them
    gate[..., 0] = 2.0   # silu(2) * 3e4 stays finite in float16
    codes, scale = compiled(fused._silu_mul_fp8, options)(gate, up)
    assert codes.shape == (15, 320) and scale[1].item() == 1.0
    for y in (compiled(fused._silu_mul, options)(gate, up), compiled(fused._silu_mul, None)(gate, up)):
        ref_codes, ref_scale = quantize_rows(y.reshape(-1, 320))
        assert same_bits(codes, ref_codes) and same_bits(scale, ref_scale)
    assert torch.isfinite(scale).all()


@pytest.mark.parametrize("weights,acts", [("per_channel", "per_token"), ("per_tensor", "per_tensor")])
def test_fp8_linear_and_group_take_rows_in_place_of_the_tensor(weights, acts):
    torch.manual_seed(3)
    lins = [FP8Linear(torch.nn.Linear(64, n, bias=False), weights, acts) for n in (48, 32)]
    x = torch.randn(2, 5, 64) * 3
    codes, scale = quantize_rows(x.reshape(-1, 64))
    rows = FP8Rows(codes, scale, x.shape, x.dtype)
    mlp = torch.nn.Module()
    mlp.gate_proj, mlp.up_proj = lins
    assert merge_shared_inputs(mlp) == 1 and isinstance(mlp.gate_up_fp8, FP8Group)
    if acts == "per_tensor":   # codes with one scale per token mean nothing to a per-tensor layer
        assert not takes_rows(lins[0]) and not takes_rows(mlp.up_proj)
        with pytest.raises(TypeError):
            lins[0](rows)
        return
    assert takes_rows(lins[0]) and takes_rows(mlp.up_proj) and not takes_rows(torch.nn.Linear(64, 64))
    for lin, member in zip(lins, (mlp.gate_proj, mlp.up_proj)):
        out = lin(rows)
        assert out.shape == (2, 5, lin.out_features) and torch.equal(out, lin(x))
        assert torch.equal(member(rows), out)   # both members read one FP8Rows, one matmul


def run_hf(checkpoint, dtype, **options):
    b = make_backend("hf", model_path=checkpoint, dtype=dtype, device="cpu", params=PARAMS,
                     options={"batch_size": "3", "quant_config": FP8_ALL, **options})
    b.load()
    try:
        outs = b.generate(PROMPTS)
        layer = b.model.model.layers[0]   # patched while the engine runs
        fp8 = [getattr(vars(m).get("forward"), "fp8", False)
               for m in (layer.input_layernorm, layer.post_attention_layernorm, layer.mlp)]
        return outs, torch.tensor(b.score(PROMPTS[0] + outs[0])), fp8
    finally:
        b.close()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama-fp8-fused")
    tiny_model().save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_llama_fused_fp8_equals_unfused(checkpoint, dtype):
    """compile=eager (the compiled functions' own ops, run by dynamo) with and without the fused
    quantization (option fuse_fp8): the same greedy outputs and bit-identical log-probs. float32 also against
    compile=off (HF's own modules; in bfloat16 HF rounds twice in RMSNorm where _rms_norm rounds
    once, so only float32 is comparable there). Inductor is checked per function above: through
    the whole model its CPU compile takes over a minute (tests/test_fp8_gpu.py runs it on a GPU)."""
    outs, scores, fp8 = run_hf(checkpoint, dtype, compile="eager", fuse_fp8="true")
    assert fp8 == [True, True, True]   # both norms and the MLP hand FP8Rows to their readers
    ref_outs, ref_scores, ref_fp8 = run_hf(checkpoint, dtype, compile="eager", fuse_fp8="false")
    assert ref_fp8 == [False, False, False]
    assert outs == ref_outs and torch.equal(scores, ref_scores)
    if dtype == "float32":
        off_outs, off_scores, _ = run_hf(checkpoint, dtype, compile="off")
        assert outs == off_outs and torch.equal(scores, off_scores)


def test_per_tensor_activations_keep_the_separate_quantizer(checkpoint, tmp_path):
    path = write_config(tmp_path, "pt.yaml", """\
        weights: {format: fp8_e4m3, granularity: per_tensor}
        activations: {format: fp8_e4m3, granularity: per_tensor}
        layers: {skip: ["lm_head", "*embed_tokens"]}
        """)
    b = make_backend("hf", model_path=checkpoint, dtype="float32", device="cpu", params=PARAMS,
                     options={"batch_size": "3", "quant_config": path, "compile": "eager"})
    b.load()
    try:
        assert b.generate(PROMPTS[:1])
        forward = vars(b.model.model.layers[0].mlp)["forward"]
        assert forward.fused and not hasattr(forward, "fp8")
    finally:
        b.close()


def test_gpu_throughput_compares_fused_and_separate_quantization(tmp_path):
    """benchmarks/gpu_throughput.py --quant-backend-args on the CPU (tiny model, compile=eager):
    fp16 once, fp8 once per fuse_fp8 variant through LoadGen Offline, the separate quantizer's
    greedy outputs equal to the fused one's."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "r.json"
    cmd = [sys.executable, os.path.join(root, "benchmarks", "gpu_throughput.py"), "--tiny", "--device", "cpu",
           "--skip-baseline", "--slots", "4", "--n-prompts", "8", "--input-len", "16", "--output-len", "8",
           "--loadgen-offline", "--quant-configs", "fp16,quant_configs/fp8.yaml", "--match-prompts", "4",
           "--quant-backend-args", "fuse_fp8=true,compile=eager;fuse_fp8=false,compile=eager",
           "--log-dir", str(tmp_path / "logs"), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root,
                       env=dict(os.environ, PYTHONPATH=root, HF_HUB_OFFLINE="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    fused_, separate = "fp8 [fuse_fp8=true,compile=eager]", "fp8 [fuse_fp8=false,compile=eager]"
    assert [r["quant"] for r in res["rows"]] == ["fp16", fused_, separate]
    assert all(r["loadgen"]["result"] == "VALID" and r["tok_s"] > 0 for r in res["rows"])
    assert res["quant_matches"][separate] == {f"vs_{fused_}": {"identical": 4, "total": 4,
                                                               "first_divergence_median": None,
                                                               "first_divergence_min": None}}
    assert res["quant_matches"][fused_]["vs_fakequant"]["total"] == 4
