"""The fake-quantization config: a small YAML file, parsed strictly into dataclasses.

    name: w8a8                      # free text, shown in results
    weights:                        # omit (or null) to keep weights as loaded
      format: int                   # int (integer grid of `bits`) | fp8_e4m3 (8-bit float, max 448)
      bits: 8                       # 1..16 (int); fp8_e4m3 is 8 bits
      granularity: per_channel      # per_tensor | per_channel | per_group
      group_size: 128               # per_group only; must divide each layer's in_features
      symmetric: true               # false: asymmetric (min/max range with a zero point)
    activations:                    # omit (or null) to keep activations as computed
      bits: 8
      granularity: per_token        # per_tensor | per_token | per_channel
      mode: dynamic                 # dynamic (range of each input) | static (calibrated ranges)
      symmetric: true
    kv_cache:                       # omit (or null) to keep the KV cache in the model dtype
      format: fp8_e4m3              # fp8_e4m3 (the only KV format)
      granularity: per_token        # per_token (one dynamic scale per token and KV head) | per_tensor
      scale: 1.0                    # per_tensor only: the fixed scale
    layers:                         # glob patterns on module names (nn.Linear, nn.Embedding)
      include: ["*"]
      skip: ["lm_head", "*embed_tokens"]
    calibration:                    # used by static activations
      dataset: calib.pkl            # reference calibration pickle (column tok_input); relative
                                    # paths are relative to this file
      samples: 128                  # first N rows
      max_tokens: 1024              # each prompt truncated to this many tokens

docs/quantization.md describes every key. Any unknown key, wrong type or out-of-range value is
a HarnessError naming the key. `--backend fakequant` simulates any valid config; `--backend hf`
executes the fp8 subset (quantization.fp8) and refuses the rest. Checks that need the model (patterns matching no layer, group
size dividing in_features, calibration data present) happen in quantization.fake when applied.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from common.errors import HarnessError

FORMATS = ("int", "fp8_e4m3")
KV_FORMATS = ("fp8_e4m3",)
KV_GRANULARITIES = ("per_token", "per_tensor")
WEIGHT_GRANULARITIES = ("per_tensor", "per_channel", "per_group")
ACTIVATION_GRANULARITIES = ("per_tensor", "per_token", "per_channel")
ACTIVATION_MODES = ("dynamic", "static")
MAX_BITS = 16


@dataclass(frozen=True)
class WeightSpec:
    bits: int = 8
    granularity: str = "per_channel"
    group_size: int | None = None
    symmetric: bool = True
    format: str = "int"


@dataclass(frozen=True)
class ActivationSpec:
    bits: int = 8
    granularity: str = "per_token"
    mode: str = "dynamic"
    symmetric: bool = True
    format: str = "int"


@dataclass(frozen=True)
class KVCacheSpec:
    format: str = "fp8_e4m3"
    granularity: str = "per_token"
    scale: float | None = None       # per_tensor only (1.0 when not given)


@dataclass(frozen=True)
class LayerSpec:
    include: tuple[str, ...] = ("*",)
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class CalibrationSpec:
    dataset: str | None = None
    samples: int = 128
    max_tokens: int = 1024


@dataclass(frozen=True)
class QuantConfig:
    name: str = "custom"
    weights: WeightSpec | None = None
    activations: ActivationSpec | None = None
    kv_cache: KVCacheSpec | None = None
    layers: LayerSpec = field(default_factory=LayerSpec)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    path: str | None = None          # the file it was read from (not a YAML key)

    @property
    def label(self) -> str:
        """How error messages name this config."""
        return f"quant config {self.path or '<dict>'}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for results files (tuples become lists)."""
        def plain(v):
            if isinstance(v, tuple):
                return list(v)
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v
        return plain(dataclasses.asdict(self))


class _Reader:
    """Checks one mapping of the YAML against the keys it may hold; errors name the full key."""

    def __init__(self, source: str, raw: Any, where: str, known: tuple[str, ...]):
        self.source, self.where = source, where
        if not isinstance(raw, dict):
            self.fail(where or "top level", f"must be a mapping, got {type(raw).__name__}")
        for key in raw:
            if key not in known:
                self.fail(self.key(key), f"unknown key (known here: {', '.join(known)})")
        self.raw = raw

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else str(name)

    def fail(self, key: str, message: str):
        raise HarnessError(f"quant config {self.source}: {key}: {message}")

    def get(self, name: str, kind: type, default: Any) -> Any:
        if name not in self.raw or self.raw[name] is None:
            return default
        value = self.raw[name]
        # bool is an int subclass in Python: `bits: true` must not pass as 1
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(self.key(name), f"must be {kind.__name__}, got {value!r}")
        return value

    def bits(self) -> int:
        bits = self.get("bits", int, 8)
        if not 1 <= bits <= MAX_BITS:
            self.fail(self.key("bits"), f"must be between 1 and {MAX_BITS}, got {bits}")
        return bits

    def format_and_bits(self) -> tuple[str, int]:
        """`format` and `bits`: fp8_e4m3 is 8 bits wide and symmetric by construction."""
        fmt = self.choice("format", FORMATS, "int")
        if fmt == "int":
            return fmt, self.bits()
        bits = self.get("bits", int, 8)
        if bits != 8:
            self.fail(self.key("bits"), f"{fmt} is 8 bits, got {bits}")
        if self.get("symmetric", bool, True) is not True:
            self.fail(self.key("symmetric"), f"{fmt} is symmetric (sign bit); remove symmetric: false")
        return fmt, bits

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            self.fail(self.key(name), f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def patterns(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        if not all(isinstance(p, str) and p for p in value):
            self.fail(self.key(name), f"must be a list of non-empty glob patterns, got {value!r}")
        return tuple(value)


def _weights(source: str, raw: Any) -> WeightSpec:
    r = _Reader(source, raw, "weights", tuple(f.name for f in dataclasses.fields(WeightSpec)))
    fmt, bits = r.format_and_bits()
    granularity = r.choice("granularity", WEIGHT_GRANULARITIES, "per_channel")
    symmetric = r.get("symmetric", bool, True)
    group_size = r.get("group_size", int, None)
    if granularity == "per_group":
        if group_size is None or group_size < 1:
            r.fail("weights.group_size", f"per_group needs a positive group_size, got {group_size!r}")
    elif group_size is not None:
        r.fail("weights.group_size", f"only used with granularity per_group (granularity is {granularity})")
    if symmetric and bits < 2:
        r.fail("weights.bits", "1-bit symmetric has no non-zero level; use symmetric: false")
    return WeightSpec(bits, granularity, group_size, symmetric, fmt)


def _activations(source: str, raw: Any) -> ActivationSpec:
    r = _Reader(source, raw, "activations", tuple(f.name for f in dataclasses.fields(ActivationSpec)))
    fmt, bits = r.format_and_bits()
    granularity = r.choice("granularity", ACTIVATION_GRANULARITIES, "per_token")
    mode = r.choice("mode", ACTIVATION_MODES, "dynamic")
    symmetric = r.get("symmetric", bool, True)
    if mode == "static" and granularity == "per_token":
        # tokens differ from call to call: a calibrated range cannot belong to one token
        r.fail("activations.granularity", "per_token needs mode: dynamic (static scales are per_tensor or "
                                          "per_channel)")
    if symmetric and bits < 2:
        r.fail("activations.bits", "1-bit symmetric has no non-zero level; use symmetric: false")
    return ActivationSpec(bits, granularity, mode, symmetric, fmt)


def _kv_cache(source: str, raw: Any) -> KVCacheSpec:
    r = _Reader(source, raw, "kv_cache", tuple(f.name for f in dataclasses.fields(KVCacheSpec)))
    fmt = r.choice("format", KV_FORMATS, "fp8_e4m3")
    granularity = r.choice("granularity", KV_GRANULARITIES, "per_token")
    scale = r.raw.get("scale")
    if scale is not None:
        if granularity != "per_tensor":
            r.fail("kv_cache.scale", "only used with granularity per_tensor (per_token scales are dynamic)")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            r.fail("kv_cache.scale", f"must be a positive number, got {scale!r}")
        scale = float(scale)
    elif granularity == "per_tensor":
        scale = 1.0
    return KVCacheSpec(fmt, granularity, scale)


def _layers(source: str, raw: Any) -> LayerSpec:
    r = _Reader(source, raw, "layers", ("include", "skip"))
    return LayerSpec(include=r.patterns("include", ("*",)), skip=r.patterns("skip", ()))


def _calibration(source: str, raw: Any, base_dir: str) -> CalibrationSpec:
    r = _Reader(source, raw, "calibration", tuple(f.name for f in dataclasses.fields(CalibrationSpec)))
    dataset = r.get("dataset", str, None)
    if dataset is not None:
        dataset = os.path.join(base_dir, os.path.expanduser(dataset))
    samples = r.get("samples", int, 128)
    max_tokens = r.get("max_tokens", int, 1024)
    for key, value in (("samples", samples), ("max_tokens", max_tokens)):
        if value < 1:
            r.fail(f"calibration.{key}", f"must be at least 1, got {value}")
    return CalibrationSpec(dataset, samples, max_tokens)


def parse_config(raw: Any, source: str = "<dict>", base_dir: str = ".") -> QuantConfig:
    """A QuantConfig from already-loaded YAML data (a dict)."""
    if raw is None:
        raw = {}
    top = _Reader(source, raw, "", ("name", "weights", "activations", "kv_cache", "layers", "calibration"))
    weights = _weights(source, raw["weights"]) if raw.get("weights") is not None else None
    activations = _activations(source, raw["activations"]) if raw.get("activations") is not None else None
    kv_cache = _kv_cache(source, raw["kv_cache"]) if raw.get("kv_cache") is not None else None
    if weights is None and activations is None and kv_cache is None:
        top.fail("weights", "the config quantizes nothing: give a weights, activations and/or kv_cache section")
    return QuantConfig(
        name=top.get("name", str, "custom"),
        weights=weights,
        activations=activations,
        kv_cache=kv_cache,
        layers=_layers(source, raw.get("layers") or {}),
        calibration=_calibration(source, raw.get("calibration") or {}, base_dir),
    )


def load_config(path: str) -> QuantConfig:
    """Read and validate a quant config YAML file."""
    import yaml

    if not os.path.isfile(path):
        raise HarnessError(f"quant config not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise HarnessError(f"quant config {path}: not valid YAML: {' '.join(str(e).split())}") from None
    cfg = parse_config(raw, source=path, base_dir=os.path.dirname(os.path.abspath(path)))
    return dataclasses.replace(cfg, path=os.path.abspath(path))
