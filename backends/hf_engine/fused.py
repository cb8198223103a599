"""Optional torch.compile'd element-wise kernels (RMSNorm, RoPE, SiLU*up) patched into a Llama
decoder, and their removal.

Where the output of RMSNorm or SiLU*up is read only by per-token FP8 linears (quantization.fp8),
the compiled function also quantizes it: it returns FP8Rows (fp8 codes and per-token scales) in
place of the activation, so the activation is never written out in the model dtype and read back
by a separate quantizer. The codes and scales are those of quantize_rows on the activation the
function computes, rounded to the model dtype as the unfused function's stored output is (see
fp8_numerics).
"""
from __future__ import annotations

import logging

import torch

from quantization.fp8 import FP8Rows, quantize_rows, takes_rows

log = logging.getLogger(__name__)

# RMSNorm and SiLU*up round once, to the output dtype, at the end: what inductor computes for
# HF's forms (`weight * x.to(dtype)`, `silu(gate) * up`: it keeps the float32 value between the
# two operations), written out so that every backend (and the quantizing versions below, whose
# cast stays inside the kernel) rounds in the same place.
def _rms_norm(x, weight, eps: float):
    dtype = torch.promote_types(x.dtype, weight.dtype)
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.to(torch.float32) * h).to(dtype)


def _silu_mul(gate, up):
    dtype = torch.promote_types(gate.dtype, up.dtype)
    return (torch.nn.functional.silu(gate.to(torch.float32)) * up.to(torch.float32)).to(dtype)


def _rms_norm_fp8(x, weight, eps: float):
    y = _rms_norm(x, weight, eps)
    return quantize_rows(y.reshape(-1, y.shape[-1]))


def _silu_mul_fp8(gate, up):
    y = _silu_mul(gate, up)
    return quantize_rows(y.reshape(-1, y.shape[-1]))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def fp8_numerics() -> dict | None:
    """Inductor options under which a compiled quantizing function gives quantize_rows's codes and
    scales for the activation it computes; None when this torch has no switch for one of them.
    - emulate_precision_casts: the activation is rounded to the model dtype before it is quantized,
      as the unfused function's output is when stored (inductor otherwise keeps the float32 value
      of a cast that stays inside one kernel);
    - IEEE division for x / scale, as eager torch and the Triton quantizer divide (inductor's
      Triton division is otherwise approximate; CPU code divides exactly either way). The scale
      itself (fp8_scale) is a multiply on CUDA and a division on the CPU, in any backend.
    Both change only the quantizing functions (RMSNorm, RoPE and SiLU*up alone compile as before)."""
    from torch._inductor import config

    names = config.get_config_copy()
    division = next((n for n in ("eager_numerics.division_rounding", "emulate_divison_rounding") if n in names), None)
    if division is None or "emulate_precision_casts" not in names:
        return None
    return {"emulate_precision_casts": True, division: True}


class _Fused:
    """A compiled element-wise function; the plain one after any compile/run error."""

    def __init__(self, fn, backend: str, options: dict | None = None):
        self.fn = fn
        self.compiled = torch.compile(fn, backend=backend, dynamic=None, options=options)
        self.ok = True

    def __call__(self, *args):
        if self.ok:
            try:
                return self.compiled(*args)
            except Exception as e:
                if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                    raise  # the capture falls back to eager decoding as a whole
                self.ok = False
                log.warning("torch.compile of %s failed (%s); running it eagerly", self.fn.__name__,
                            f"{type(e).__name__}: {e}"[:300])
        return self.fn(*args)


_FUSED: dict[str, dict[str, _Fused]] = {}  # backend -> function name -> compiled


def _compiled(backend: str) -> dict[str, _Fused]:
    """The compiled functions for a torch.compile backend; the quantizing ones only where their
    exactness holds (any backend but inductor runs the functions' own eager ops)."""
    if backend not in _FUSED:
        fused = {fn.__name__: _Fused(fn, backend) for fn in (_rms_norm, _silu_mul, _rope)}
        options = fp8_numerics() if backend == "inductor" else {}
        if options is None:
            log.warning("this torch's inductor has no switch for eager division or casts: FP8 activations "
                        "stay quantized by the separate kernel")
        else:
            fused.update({fn.__name__: _Fused(fn, backend, options or None) for fn in (_rms_norm_fp8, _silu_mul_fp8)})
        _FUSED[backend] = fused
    return _FUSED[backend]


def fuse_elementwise(model, backend: str, quantize: bool = True) -> bool:
    """Route the decoder's RMSNorm, rotary embedding and SiLU*up through torch.compile'd
    functions (one kernel each instead of 2-12 un-fused ones per call; matmuls and attention stay
    as they are). Same maths, in the same dtypes. An RMSNorm whose readers (q/k/v, or gate/up) all
    take FP8Rows, and a SiLU*up whose down_proj does, also quantize their output (module
    docstring) unless quantize is False. backend: an inductor / "eager" torch.compile backend.
    False when the model's modules are not the expected Llama ones."""
    import sys

    layers = model.model.layers
    mod = sys.modules[type(layers[0].self_attn).__module__]
    if not (hasattr(mod, "apply_rotary_pos_emb") and all(
            type(getattr(l, n)).__name__.endswith("RMSNorm") for l in layers
            for n in ("input_layernorm", "post_attention_layernorm"))):
        return False
    fused = _compiled(backend)
    rms, silu_mul = fused["_rms_norm"], fused["_silu_mul"]
    rms_fp8, silu_mul_fp8 = (fused.get("_rms_norm_fp8"), fused.get("_silu_mul_fp8")) if quantize else (None, None)

    def norm_forward(norm, readers):
        if rms_fp8 is not None and readers and all(takes_rows(r) for r in readers):
            def forward(h):
                codes, scale = rms_fp8(h, norm.weight, float(norm.variance_epsilon))
                return FP8Rows(codes, scale, h.shape, torch.promote_types(h.dtype, norm.weight.dtype))
            forward.fp8 = True
        else:
            def forward(h):
                return rms(h, norm.weight, float(norm.variance_epsilon))
        forward.fused = True
        return forward

    def mlp_forward(mlp):
        if silu_mul_fp8 is not None and takes_rows(mlp.down_proj):
            def forward(x):
                gate, up = mlp.gate_proj(x), mlp.up_proj(x)
                codes, scale = silu_mul_fp8(gate, up)
                return mlp.down_proj(FP8Rows(codes, scale, gate.shape, torch.promote_types(gate.dtype, up.dtype)))
            forward.fp8 = True
        else:
            def forward(x):
                return mlp.down_proj(silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))
        forward.fused = True
        return forward

    def readers(module, names):
        return [getattr(module, n, None) for n in names]

    norms = [(l.input_layernorm, readers(l.self_attn, ("q_proj", "k_proj", "v_proj"))) for l in layers]
    norms += [(l.post_attention_layernorm, readers(l.mlp, ("gate_proj", "up_proj"))) for l in layers]
    if type(model.model.norm).__name__.endswith("RMSNorm"):
        norms.append((model.model.norm, []))   # read by the output projection
    for norm, norm_readers in norms:
        norm.forward = norm_forward(norm, norm_readers)
    for layer in layers:
        if getattr(layer.mlp.config, "hidden_act", "") == "silu" and hasattr(layer.mlp, "gate_proj"):
            layer.mlp.forward = mlp_forward(layer.mlp)
    n_fp8 = sum(getattr(vars(m).get("forward"), "fp8", False) for m in model.model.modules())
    if n_fp8:
        log.info("%d RMSNorm / SiLU*up functions quantize their output to fp8", n_fp8)
    if not isinstance(mod.apply_rotary_pos_emb, _Fused):
        _ORIGINAL_ROPE[mod] = mod.apply_rotary_pos_emb
    mod.apply_rotary_pos_emb = fused["_rope"]  # module-wide: the attention forward calls it by name
    return True


_ORIGINAL_ROPE: dict = {}  # modeling module -> its own apply_rotary_pos_emb


def unfuse_elementwise(model):
    """Undo fuse_elementwise."""
    import sys

    for m in model.model.modules():
        if getattr(vars(m).get("forward"), "fused", False):
            del m.forward
    mod = sys.modules[type(model.model.layers[0].self_attn).__module__]
    if mod in _ORIGINAL_ROPE:
        mod.apply_rotary_pos_emb = _ORIGINAL_ROPE.pop(mod)
