"""Optional torch.compile'd element-wise kernels (RMSNorm, RoPE, SiLU*up) patched into a Llama
decoder, and their removal."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

def _rms_norm(x, weight, eps: float):
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _silu_mul(gate, up):
    return torch.nn.functional.silu(gate) * up


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


class _Fused:
    """A compiled element-wise function; the plain one after any compile/run error."""

    def __init__(self, fn, backend: str):
        self.fn = fn
        self.compiled = torch.compile(fn, backend=backend, dynamic=None)
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


def fuse_elementwise(model, backend: str) -> bool:
    """Route the decoder's RMSNorm, rotary embedding and SiLU*up through torch.compile'd
    functions (one kernel each instead of 2-12 un-fused ones per call; matmuls and attention stay
    as they are). Same maths, in the same dtypes. backend: an inductor / "eager" torch.compile
    backend. False when the model's modules are not the expected Llama ones."""
    import sys

    layers = model.model.layers
    mod = sys.modules[type(layers[0].self_attn).__module__]
    if not (hasattr(mod, "apply_rotary_pos_emb") and all(
            type(getattr(l, n)).__name__.endswith("RMSNorm") for l in layers
            for n in ("input_layernorm", "post_attention_layernorm"))):
        return False
    if backend not in _FUSED:
        _FUSED[backend] = {fn.__name__: _Fused(fn, backend) for fn in (_rms_norm, _silu_mul, _rope)}
    fused = _FUSED[backend]
    rms, silu_mul = fused["_rms_norm"], fused["_silu_mul"]

    def norm_forward(norm):
        def forward(h):
            return rms(h, norm.weight, float(norm.variance_epsilon))
        forward.fused = True
        return forward

    def mlp_forward(mlp):
        def forward(x):
            return mlp.down_proj(silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))
        forward.fused = True
        return forward

    norms = [getattr(l, n) for l in layers for n in ("input_layernorm", "post_attention_layernorm")]
    if type(model.model.norm).__name__.endswith("RMSNorm"):
        norms.append(model.model.norm)
    for norm in norms:
        norm.forward = norm_forward(norm)
    for layer in layers:
        if getattr(layer.mlp.config, "hidden_act", "") == "silu" and hasattr(layer.mlp, "gate_proj"):
            layer.mlp.forward = mlp_forward(layer.mlp)
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
