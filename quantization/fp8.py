"""FP8 (e4m3) arithmetic and real FP8 execution of nn.Linear layers.

The same few functions serve both paths of a config with `format: fp8_e4m3`:
- fake quantization (quantization.fake) rounds a tensor to the e4m3 grid of its scale and back
  (`fake_fp8`), in the model's dtype;
- real execution (`--backend hf --quant-config`) stores each selected nn.Linear's weight as
  float8_e4m3fn with one float32 scale per output channel (or per tensor), quantizes the input
  per token (or per tensor) on every call, and multiplies with `torch._scaled_mm` on a CUDA GPU
  of compute capability 8.9 or more (Ada, Hopper), the input quantized by one Triton kernel, or
  handed over already quantized (FP8Rows) by the compiled RMSNorm / SiLU*up that produced it
  (backends/hf_engine/fused.py). Elsewhere (CPU: tests, CI) the same maths
  runs as a float32 reference: the fp8 codes widened to float32 (exact), one matmul accumulating
  in float32, then the row and column scales, which is what the GPU kernel computes.

Scale of a group: amax / 448 (the largest finite e4m3 value), so the group's largest magnitude
lands on 448; an all-zero group gets scale 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from common.errors import HarnessError
from quantization.config import QuantConfig

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def fp8_scale(amax: torch.Tensor) -> torch.Tensor:
    amax = amax.float()
    # Eager CUDA divides a tensor by a Python number as a multiply by its float32 reciprocal (the
    # CPU divides): written out on CUDA, so that compiled code (inductor), which may lower either
    # form either way, computes what eager torch and the Triton quantizer compute.
    scaled = amax * (1.0 / FP8_MAX) if amax.is_cuda else amax / FP8_MAX
    return torch.where(amax > 0, scaled, torch.ones_like(amax))


def to_fp8(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    # the clamp matters: e4m3fn has no infinity, an out-of-range cast would give NaN
    return torch.clamp(x.float() / scale, -FP8_MAX, FP8_MAX).to(FP8)


def fake_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize x to the e4m3 grid of `scale` (broadcastable); returned in x.dtype."""
    return (to_fp8(x, scale).float() * scale).to(x.dtype)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 codes, float32 scales of shape (..., 1)): one scale per vector of the last dim."""
    scale = fp8_scale(x.abs().amax(dim=-1, keepdim=True))
    return to_fp8(x, scale), scale


def quantize_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = fp8_scale(x.abs().amax())
    return to_fp8(x, scale), scale


_ROW_KERNEL = None


def _row_kernel():
    """Triton kernel: per-row amax, scale and e4m3 cast in one pass (eager torch takes five
    kernels and a Python call each; prefill calls this 224 times per group on a 7B model)."""
    global _ROW_KERNEL
    if _ROW_KERNEL is None:
        import triton
        import triton.language as tl

        @triton.jit
        def quantize_rows_kernel(X, Q, S, K, stride_x, BLOCK: tl.constexpr):
            row = tl.program_id(0).to(tl.int64)
            offs = tl.arange(0, BLOCK)
            mask = offs < K
            x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
            amax = tl.max(tl.abs(x), axis=0)
            # as eager torch on CUDA computes it (a tensor divided by a Python number is a multiply
            # by its reciprocal there; tensor by tensor an IEEE division): the same scales and codes
            scale = tl.where(amax > 0, amax * (1.0 / 448.0), 1.0)
            q = tl.clamp(tl.math.div_rn(x, scale), -448.0, 448.0)
            tl.store(Q + row * K + offs, q.to(tl.float8e4nv), mask=mask)
            tl.store(S + row, scale)

        _ROW_KERNEL = quantize_rows_kernel
    return _ROW_KERNEL


def quantize_rows_fast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows for a 2-D input: the Triton kernel on CUDA, eager torch elsewhere."""
    if not x.is_cuda:
        return quantize_rows(x)
    import triton

    m, k = x.shape
    q = torch.empty((m, k), dtype=FP8, device=x.device)
    s = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(k)
    _row_kernel()[(m,)](x, q, s, k, x.stride(0), BLOCK=block, num_warps=8 if block >= 4096 else 4)
    return q, s


@dataclass(frozen=True, eq=False)   # eq=False: compared by identity, as the tensor it replaces (FP8Group)
class FP8Rows:
    """An activation already quantized per token by the kernel that computed it, handed to
    FP8Linear / FP8Group in place of that tensor: codes (M, K) and scales (M, 1) as quantize_rows
    gives them for the tensor flattened to (M, K); shape and dtype are the tensor's own (callers
    read .shape, the matmul returns dtype)."""

    codes: torch.Tensor
    scale: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype


def takes_rows(module: nn.Module) -> bool:
    """Whether `module` accepts FP8Rows: a per-token FP8Linear, or a member of a per-token FP8Group."""
    if isinstance(module, FP8GroupMember):
        module = module.group
    return isinstance(module, (FP8Linear, FP8Group)) and module.per_token


def scaled_mm_available(device: torch.device) -> bool:
    """torch._scaled_mm with fp8 inputs needs compute capability 8.9 (Ada) or newer."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_matmul(a8: torch.Tensor, scale_a: torch.Tensor, w8: torch.Tensor, scale_w: torch.Tensor,
               out_dtype: torch.dtype) -> torch.Tensor:
    """(a8 * scale_a) @ (w8 * scale_w)^T for a8 (M, K), scale_a (M, 1), w8 (N, K), scale_w (1, N).
    CUDA: torch._scaled_mm (row-wise scales); elsewhere the float32 reference of the same maths."""
    if a8.is_cuda:
        return torch._scaled_mm(a8, w8.t(), scale_a=scale_a, scale_b=scale_w, out_dtype=out_dtype)
    return ((a8.float() @ w8.float().t()) * scale_a * scale_w).to(out_dtype)


class FP8Linear(nn.Module):
    """nn.Linear with an e4m3 weight (per output channel or per tensor scale) and e4m3 inputs
    (per token or per tensor scale, taken from each input: dynamic). The input is a tensor, or
    (per token) FP8Rows: the same codes and scales, computed by the kernel that made the input."""

    def __init__(self, linear: nn.Linear, weight_granularity: str, act_granularity: str):
        super().__init__()
        w = linear.weight.data
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if weight_granularity == "per_channel":
            w8, scale = quantize_rows(w)
        else:
            w8, scale = quantize_tensor(w)
            scale = scale.expand(w.shape[0], 1)
        self.register_buffer("weight", w8)                                   # (N, K) float8_e4m3fn
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())  # (1, N) float32
        self.bias = linear.bias
        self.per_token = act_granularity == "per_token"

    def forward(self, x: torch.Tensor | FP8Rows) -> torch.Tensor:
        shape = x.shape
        if isinstance(x, FP8Rows):   # quantized per token by the kernel that produced it
            if not self.per_token:
                raise TypeError("FP8Rows (per-token codes) given to a per-tensor FP8Linear")
            a8, sa = x.codes, x.scale
        elif self.per_token:
            a8, sa = quantize_rows_fast(x.reshape(-1, self.in_features))
        else:
            a8, sa = quantize_tensor(x.reshape(-1, self.in_features))
            sa = sa.reshape(1, 1).expand(a8.shape[0], 1).contiguous()
        out = fp8_matmul(a8, sa, self.weight, self.weight_scale, x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activations={'per_token' if self.per_token else 'per_tensor'}")


class FP8Group(nn.Module):
    """FP8Linears that read the same input (q/k/v, gate/up) as one: one quantization of the input
    and one wider fp8 matmul per call, each member's output a column slice of it. Row scales
    concatenate exactly (per channel, or a per-tensor scale expanded per channel), and the
    shared input is quantized once, so each output is that of its own FP8Linear."""

    def __init__(self, linears: list[FP8Linear]):
        super().__init__()
        self.register_buffer("weight", torch.cat([m.weight for m in linears]))
        self.register_buffer("weight_scale", torch.cat([m.weight_scale for m in linears], dim=1).contiguous())
        self.sizes = [m.out_features for m in linears]
        self.in_features = linears[0].in_features
        self.per_token = linears[0].per_token
        self._x = None       # the input of the last call, held so that its identity stays unique
        self._outs: list = []

    def output(self, i: int, x: torch.Tensor | FP8Rows) -> torch.Tensor:
        """Member i's output for x: the merged product is computed when x is a new input (or this
        member already took its slice of it) and kept until every member has taken its slice."""
        if x is not self._x or self._outs[i] is None:
            self._outs = list(FP8Linear.forward(self, x).split(self.sizes, dim=-1))
            self._x = x
        out, self._outs[i] = self._outs[i], None
        if all(o is None for o in self._outs):
            self._x = None
        return out

    @property
    def out_features(self) -> int:
        return sum(self.sizes)

    bias = None


class FP8GroupMember(nn.Module):
    """Stands where one of an FP8Group's linears stood; holds no weights of its own."""

    def __init__(self, group: FP8Group, index: int):
        super().__init__()
        self.__dict__["group"] = group   # not a submodule: the group is registered once, on the parent
        self.index = index
        self.in_features, self.out_features = group.in_features, group.sizes[index]

    @property
    def weight(self) -> torch.Tensor:   # a view of the group's codes (callers read .device / .shape)
        start = sum(self.group.sizes[:self.index])
        return self.group.weight[start:start + self.out_features]

    def forward(self, x: torch.Tensor | FP8Rows) -> torch.Tensor:
        return self.group.output(self.index, x)


# Linears of one module that read the same input; merged when all of them are FP8Linear
SHARED_INPUT = {"qkv_fp8": ("q_proj", "k_proj", "v_proj"), "gate_up_fp8": ("gate_proj", "up_proj")}


def merge_shared_inputs(model: nn.Module) -> int:
    """Replace each set of SHARED_INPUT FP8Linears (without bias) by one FP8Group; the number merged."""
    merged = 0
    for parent in list(model.modules()):
        for group_name, names in SHARED_INPUT.items():
            members = [getattr(parent, n, None) for n in names]
            if not all(isinstance(m, FP8Linear) and m.bias is None for m in members):
                continue
            if len({(m.in_features, m.per_token) for m in members}) != 1:
                continue
            group = FP8Group(members)
            setattr(parent, group_name, group)
            for i, n in enumerate(names):
                setattr(parent, n, FP8GroupMember(group, i))
            merged += 1
    return merged


def check_executable(cfg: QuantConfig) -> None:
    """One-line refusal for what `--backend hf` cannot execute with a real kernel (checked before
    loading; the device is checked in convert_model). `--backend fakequant` simulates all of it."""
    simulate = "simulate it with --backend fakequant"
    w, a = cfg.weights, cfg.activations
    for key, spec in (("weights", w), ("activations", a)):
        if spec is not None and spec.format != "fp8_e4m3":
            raise HarnessError(f"{cfg.label}: {key}.format: {spec.format} ({spec.bits}-bit) has no real kernel in "
                               f"--backend hf (it executes fp8_e4m3); {simulate}")
    if (w is None) != (a is None):
        raise HarnessError(f"{cfg.label}: the real fp8 path needs both weights and activations in fp8_e4m3 "
                           f"(torch._scaled_mm takes fp8 on both sides); {simulate}")
    if w is not None and w.granularity == "per_group":
        raise HarnessError(f"{cfg.label}: weights.granularity: per_group has no real fp8 kernel here "
                           f"(per_channel or per_tensor); {simulate}")
    if a is not None and (a.granularity == "per_channel" or a.mode == "static"):
        raise HarnessError(f"{cfg.label}: activations: only dynamic per_token or per_tensor fp8 activations "
                           f"have a real kernel here (got {a.mode} {a.granularity}); {simulate}")


def convert_model(model: nn.Module, cfg: QuantConfig, device: torch.device) -> dict:
    """Replace the selected nn.Linear modules by FP8Linear (weights quantized now, inputs on every
    call). Returns what was done and which kernel runs, for the backend's info()."""
    from quantization.fake import select_layers

    if device.type == "cuda" and not scaled_mm_available(device):
        cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
        raise HarnessError(f"{cfg.label}: fp8_e4m3 needs a GPU of compute capability 8.9 or newer for "
                           f"torch._scaled_mm (this one is {cap}); simulate it with --backend fakequant")
    if cfg.weights is None:
        return {"linear_layers": 0, "matmul": None}
    selected = select_layers(model, cfg)
    embeddings = [n for n, m in selected.items() if not isinstance(m, nn.Linear)]
    if embeddings:
        raise HarnessError(f"{cfg.label}: layers: the real fp8 path quantizes nn.Linear only; add "
                           f"{embeddings[0]!r} to layers.skip (or simulate it with --backend fakequant)")
    for name, m in selected.items():
        if m.in_features % 16 or m.out_features % 16:
            raise HarnessError(f"{cfg.label}: layer {name} ({m.in_features} -> {m.out_features}): fp8 matmuls "
                               f"need both sizes divisible by 16; add it to layers.skip")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FP8Linear(m, cfg.weights.granularity, cfg.activations.granularity))
    merged = merge_shared_inputs(model)
    if device.type == "cuda":
        torch.cuda.empty_cache()   # the fp16 weights just replaced
    return {"linear_layers": len(selected), "merged_groups": merged,
            "matmul": "torch._scaled_mm" if device.type == "cuda" else "float32 reference"}
