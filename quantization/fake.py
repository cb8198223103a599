"""Fake quantization of a loaded PyTorch model: quantize-dequantize weights and activations.

"Fake" because tensors stay in the model's floating-point dtype: every value is snapped to the
integer grid of the chosen bit width (q = round(x / scale) [+ zero point], clamped) and mapped
back (x' = (q - zero) * scale), or with `format: fp8_e4m3` to the e4m3 grid of its scale
(quantization.fp8.fake_fp8; the KV cache is simulated by the hf slots engine, which owns it). The model then computes what an integer kernel would, up to
float rounding, which is how the MLPerf reference measures accuracy of quantized models.

- Weights of the selected nn.Linear / nn.Embedding modules are replaced once, at load time.
- Activations (inputs of the selected nn.Linear modules) are quantized on every call by a
  forward pre-hook, so module names, state_dict keys and HF generate() are unchanged.
  Dynamic mode takes the range of each input; static mode uses ranges observed while running
  calibration prompts through the model (min/max observer).

The config format lives in quantization.config; docs/quantization.md explains the choices.
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from common.errors import HarnessError
from common.tables import read_table
from quantization.config import ActivationSpec, QuantConfig, WeightSpec
from quantization.fp8 import fake_fp8, fp8_scale

log = logging.getLogger(__name__)

QUANTIZABLE = (nn.Linear, nn.Embedding)


# ---------------------------------------------------------------------------------------------
# The arithmetic
# ---------------------------------------------------------------------------------------------

def qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range [lo, hi] onto the integer grid.

    Symmetric: levels -qmax..qmax with qmax = 2^(bits-1) - 1 (the most negative code is left
    out so that the grid is symmetric), zero point 0. Asymmetric: levels 0..2^bits - 1 with a
    zero point; the range is widened to contain 0 so that zero (padding, ReLU output) is exact.
    """
    lo, hi = lo.float(), hi.float()
    if symmetric:
        scale = torch.maximum(lo.abs(), hi.abs()) / (2 ** (bits - 1) - 1)
        zero = torch.zeros_like(scale)
    else:
        lo, hi = torch.clamp(lo, max=0), torch.clamp(hi, min=0)
        scale = (hi - lo) / (2 ** bits - 1)
        zero = torch.round(-lo / torch.where(scale > 0, scale, 1.0))
    # an all-zero group has no range: any scale reproduces it exactly
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Quantize-dequantize x with broadcastable scale/zero; computed in float32, returned in x.dtype."""
    xf = x.float()
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        q = torch.clamp(torch.round(xf / scale), -qmax, qmax)
        return (q * scale).to(x.dtype)
    q = torch.clamp(torch.round(xf / scale) + zero, 0, 2 ** bits - 1)
    return ((q - zero) * scale).to(x.dtype)


def spec_qparams(lo: torch.Tensor, hi: torch.Tensor, spec: WeightSpec | ActivationSpec):
    """qparams for the spec's format: fp8 scales map the largest magnitude to 448, zero point 0."""
    if spec.format == "fp8_e4m3":
        scale = fp8_scale(torch.maximum(lo.float().abs(), hi.float().abs()))
        return scale, torch.zeros_like(scale)
    return qparams(lo, hi, spec.bits, spec.symmetric)


def spec_fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                    spec: WeightSpec | ActivationSpec) -> torch.Tensor:
    if spec.format == "fp8_e4m3":
        return fake_fp8(x, scale)
    return fake_quant(x, scale, zero, spec.bits, spec.symmetric)


def quantize_weight(w: torch.Tensor, spec: WeightSpec) -> torch.Tensor:
    """Quantize-dequantize a [out_features, in_features] weight (or [num, dim] embedding table).

    per_channel: one range per output row; per_group: one range per `group_size` consecutive
    input columns of a row (as GPTQ/AWQ groups); per_tensor: one range.
    """
    if spec.granularity == "per_tensor":
        view = w.reshape(1, -1)
    elif spec.granularity == "per_channel":
        view = w.reshape(w.shape[0], -1)
    else:
        view = w.reshape(-1, spec.group_size)   # groups never straddle rows: group_size divides in_features
    with torch.no_grad():
        lo = view.amin(dim=1, keepdim=True)
        hi = view.amax(dim=1, keepdim=True)
        scale, zero = spec_qparams(lo, hi, spec)
        return spec_fake_quant(view, scale, zero, spec).reshape(w.shape)


class ActivationQuantizer:
    """Forward pre-hook quantizing the input of one nn.Linear.

    While `observing` is set it only records the input range (calibration); afterwards static
    mode quantizes with the recorded range, dynamic mode with the range of each input:
    per_token = last dimension of each token, per_channel = each input feature over all tokens,
    per_tensor = whole input.
    """

    def __init__(self, spec: ActivationSpec):
        self.spec = spec
        self.observing = False
        self.lo: torch.Tensor | None = None   # static range (after calibration)
        self.hi: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.zero: torch.Tensor | None = None

    def _range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.spec.granularity
        if g == "per_token":
            return x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
        if g == "per_channel":
            flat = x.reshape(-1, x.shape[-1])
            return flat.amin(dim=0), flat.amax(dim=0)
        return x.amin(), x.amax()

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = self._range(x.detach().float())
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def freeze(self) -> None:
        """Turn the observed range into the static scale."""
        self.scale, self.zero = spec_qparams(self.lo, self.hi, self.spec)
        self.observing = False

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.mode == "static":
            scale, zero = self.scale, self.zero
        else:
            scale, zero = spec_qparams(*self._range(x.detach()), self.spec)
        return spec_fake_quant(x, scale, zero, self.spec)

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        if self.observing:
            self.observe(args[0])
            return None
        return (self.quantize(args[0]),) + tuple(args[1:])


# ---------------------------------------------------------------------------------------------
# Applying a config to a model
# ---------------------------------------------------------------------------------------------

@dataclass
class QuantReport:
    """What was done to the model (goes into the backend's info())."""
    weight_layers: list[str] = field(default_factory=list)
    activation_layers: list[str] = field(default_factory=list)
    untied: list[str] = field(default_factory=list)      # modules given their own copy of a shared weight
    calibration_samples: int = 0
    calibration_tokens: int = 0

    def summary(self) -> dict[str, Any]:
        return {"weight_layers": len(self.weight_layers), "activation_layers": len(self.activation_layers),
                "untied": self.untied, "calibration_samples": self.calibration_samples,
                "calibration_tokens": self.calibration_tokens}


def select_layers(model: nn.Module, cfg: QuantConfig) -> dict[str, nn.Module]:
    """The nn.Linear/nn.Embedding modules matched by layers.include and not by layers.skip.

    Every pattern must match at least one such module: a typo would otherwise silently
    quantize more (or less) than intended.
    """
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}
    for key, patterns in (("layers.include", cfg.layers.include), ("layers.skip", cfg.layers.skip)):
        for p in patterns:
            if not any(fnmatch.fnmatchcase(name, p) for name in candidates):
                examples = ", ".join(list(candidates)[:4])
                raise HarnessError(f"{cfg.label}: {key}: pattern {p!r} matches no "
                                   f"nn.Linear/nn.Embedding module (names look like: {examples})")
    selected = {name: m for name, m in candidates.items()
                if any(fnmatch.fnmatchcase(name, p) for p in cfg.layers.include)
                and not any(fnmatch.fnmatchcase(name, p) for p in cfg.layers.skip)}
    if not selected:
        raise HarnessError(f"{cfg.label}: layers: include/skip leave no module to quantize")
    return selected


def _check_group_size(selected: dict[str, nn.Module], cfg: QuantConfig) -> None:
    spec = cfg.weights
    if spec is None or spec.granularity != "per_group":
        return
    for name, m in selected.items():
        in_features = m.weight.shape[1]
        if in_features % spec.group_size:
            raise HarnessError(f"{cfg.label}: weights.group_size: {spec.group_size} does not "
                               f"divide in_features {in_features} of layer {name}")


def quantize_weights(model: nn.Module, selected: dict[str, nn.Module], spec: WeightSpec, report: QuantReport) -> None:
    """Replace the selected modules' weights by their quantized values.

    Tied weights (lm_head sharing the embedding table) are one tensor: it is quantized once in
    place when every module using it is selected, and copied first when only some are, so that
    a skipped module keeps the original values.
    """
    users: dict[int, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, QUANTIZABLE):
            users.setdefault(id(m.weight), []).append(name)
    done: set[int] = set()
    for name, m in selected.items():
        w = m.weight
        if id(w) in done:
            report.weight_layers.append(name)
            continue
        q = quantize_weight(w.data, spec)
        if all(u in selected for u in users[id(w)]):
            w.data.copy_(q)
            done.add(id(w))
        else:
            m.weight = nn.Parameter(q, requires_grad=False)
            report.untied.append(name)
        report.weight_layers.append(name)


def add_activation_quantizers(selected: dict[str, nn.Module], spec: ActivationSpec,
                              report: QuantReport) -> dict[str, ActivationQuantizer]:
    quantizers = {}
    for name, m in selected.items():
        if isinstance(m, nn.Linear):   # an embedding's input is token ids
            quantizers[name] = ActivationQuantizer(spec)
            m.register_forward_pre_hook(quantizers[name])
            report.activation_layers.append(name)
    return quantizers


def calibrate(model: nn.Module, quantizers: dict[str, ActivationQuantizer], prompts: list[list[int]],
              report: QuantReport) -> None:
    """Run the prompts through the model one at a time (no padding to pollute the ranges) and
    freeze each quantizer's observed range into its static scale."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    for q in quantizers.values():
        q.observing = True
    with torch.no_grad():
        for ids in tqdm(prompts, desc="calibrating activation ranges", unit="prompt"):
            model(input_ids=torch.tensor([ids], device=device), use_cache=False)
            report.calibration_samples += 1
            report.calibration_tokens += len(ids)
    for name, q in quantizers.items():
        if q.lo is None:
            raise HarnessError(f"layer {name} saw no input during calibration, so it has no static activation "
                               f"range; add it to layers.skip")
        q.freeze()


def load_calibration_prompts(path: str, samples: int, max_tokens: int, vocab_size: int | None) -> list[list[int]]:
    """The first `samples` prompts (column tok_input) of a calibration table such as the
    reference's open_orca_gpt4_tokenized_llama.calibration_1000.pkl (or its parquet / JSON lines
    form, see common/tables.py), each cut to max_tokens.

    The ids must come from the model's tokenizer: the reference file holds Llama-2 ids.
    """
    df = read_table(path, "calibration dataset")
    if "tok_input" not in df.columns:
        raise HarnessError(f"calibration dataset {path}: needs a DataFrame with a tok_input column")
    if len(df) == 0:
        raise HarnessError(f"calibration dataset {path}: has no rows")
    if samples > len(df):
        log.warning("calibration: %d samples asked, %s has %d; using all", samples, path, len(df))
    prompts = []
    for row, ids in enumerate(df["tok_input"].iloc[:samples]):
        ids = [int(t) for t in ids][:max_tokens]
        if not ids:
            raise HarnessError(f"calibration dataset {path}: row {row} has an empty tok_input")
        if vocab_size is not None and max(ids) >= vocab_size:
            raise HarnessError(f"calibration dataset {path}: row {row} has token id {max(ids)} >= the model's "
                               f"vocabulary size {vocab_size}; tokenize it with this model's tokenizer")
        prompts.append(ids)
    return prompts


def quantize_model(model: nn.Module, cfg: QuantConfig, calibration_prompts: list[list[int]] | None = None) -> QuantReport:
    """Apply `cfg` to `model` (weights now, activation hooks from now on) and calibrate static
    activation ranges on `calibration_prompts`. Returns what was done."""
    report = QuantReport()
    if cfg.weights is None and cfg.activations is None:
        return report   # a KV-cache-only config: the engine applies it
    selected = select_layers(model, cfg)
    _check_group_size(selected, cfg)
    if cfg.activations and cfg.activations.mode == "static" and not calibration_prompts:
        raise HarnessError(f"{cfg.label}: activations.mode: static needs calibration data: set "
                           f"calibration.dataset or --backend-arg calibration_dataset=FILE")
    if cfg.weights:
        quantize_weights(model, selected, cfg.weights, report)
    if cfg.activations:
        quantizers = add_activation_quantizers(selected, cfg.activations, report)
        if not quantizers:
            raise HarnessError(f"{cfg.label}: activations: the selected layers include no "
                               f"nn.Linear to quantize the input of")
        if cfg.activations.mode == "static":
            calibrate(model, quantizers, calibration_prompts, report)
    log.info("fake-quantized %d weight(s) and %d activation input(s) with %s", len(report.weight_layers),
             len(report.activation_layers), cfg.name)
    return report
