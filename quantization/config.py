"""The quantization config: a small YAML file, checked by pydantic into frozen dataclasses.

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
a HarnessError naming the key (pydantic checks types, ranges and choices; check_rules() the rules
that tie keys together). `--backend fakequant` simulates any valid config; `--backend hf`
executes the fp8 subset (quantization.fp8) and refuses the rest. Checks that need the model (patterns matching no layer, group
size dividing in_features, calibration data present) happen in quantization.fake when applied.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from common.errors import HarnessError
from common.files import parse_yaml, read_text
from common.schema import describe_errors

FORMATS = ("int", "fp8_e4m3")
MAX_BITS = 16
_STRICT = ConfigDict(extra="forbid", frozen=True)

Bits = Annotated[StrictInt, Field(ge=1, le=MAX_BITS)]
Format = Literal["int", "fp8_e4m3"]
Pattern = Annotated[StrictStr, Field(min_length=1)]
Count = Annotated[StrictInt, Field(ge=1)]


@dataclass(config=_STRICT)
class WeightSpec:
    bits: Bits = 8
    granularity: Literal["per_tensor", "per_channel", "per_group"] = "per_channel"
    group_size: Count | None = None
    symmetric: StrictBool = True
    format: Format = "int"


@dataclass(config=_STRICT)
class ActivationSpec:
    bits: Bits = 8
    granularity: Literal["per_tensor", "per_token", "per_channel"] = "per_token"
    mode: Literal["dynamic", "static"] = "dynamic"
    symmetric: StrictBool = True
    format: Format = "int"


@dataclass(config=_STRICT)
class KVCacheSpec:
    format: Literal["fp8_e4m3"] = "fp8_e4m3"
    granularity: Literal["per_token", "per_tensor"] = "per_token"
    scale: Annotated[float, Field(gt=0, strict=True)] | None = None   # per_tensor only (1.0 when not given)


@dataclass(config=_STRICT)
class LayerSpec:
    include: tuple[Pattern, ...] = ("*",)
    skip: tuple[Pattern, ...] = ()


@dataclass(config=_STRICT)
class CalibrationSpec:
    dataset: StrictStr | None = None
    samples: Count = 128
    max_tokens: Count = 1024


@dataclass(config=_STRICT)
class QuantConfig:
    name: StrictStr = "custom"
    weights: WeightSpec | None = None
    activations: ActivationSpec | None = None
    kv_cache: KVCacheSpec | None = None
    layers: LayerSpec = LayerSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    path: StrictStr | None = None    # the file it was read from (set by load_config)

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


_ADAPTER = TypeAdapter(QuantConfig)


def check_rules(cfg: QuantConfig, raw: dict) -> tuple[str, str] | None:
    """The rules that tie keys together, as (key, message) for the first one broken."""
    if cfg.weights is None and cfg.activations is None and cfg.kv_cache is None:
        return "weights", "the config quantizes nothing: give a weights, activations and/or kv_cache section"
    for section, spec in (("weights", cfg.weights), ("activations", cfg.activations)):
        if spec is None:
            continue
        given = raw.get(section) or {}
        if spec.format == "fp8_e4m3":
            if "bits" in given and spec.bits != 8:
                return f"{section}.bits", f"fp8_e4m3 is 8 bits, got {spec.bits}"
            if not spec.symmetric:
                return f"{section}.symmetric", "fp8_e4m3 is symmetric (sign bit); remove symmetric: false"
        elif spec.symmetric and spec.bits < 2:
            return f"{section}.bits", "1-bit symmetric has no non-zero level; use symmetric: false"
    w = cfg.weights
    if w is not None and w.granularity == "per_group" and w.group_size is None:
        return "weights.group_size", "per_group needs a positive group_size"
    if w is not None and w.granularity != "per_group" and w.group_size is not None:
        return "weights.group_size", f"only used with granularity per_group (granularity is {w.granularity})"
    a = cfg.activations
    if a is not None and a.mode == "static" and a.granularity == "per_token":
        # tokens differ from call to call: a calibrated range cannot belong to one token
        return "activations.granularity", "per_token needs mode: dynamic (static scales are per_tensor or per_channel)"
    kv = cfg.kv_cache
    if kv is not None and kv.scale is not None and kv.granularity != "per_tensor":
        return "kv_cache.scale", "only used with granularity per_tensor (per_token scales are dynamic)"
    return None


def _without_nulls(raw: Any) -> Any:
    """`key: null` in the YAML means "the default", at any level."""
    if isinstance(raw, dict):
        return {k: _without_nulls(v) for k, v in raw.items() if v is not None}
    return raw


def parse_config(raw: Any, source: str = "<dict>", base_dir: str = ".") -> QuantConfig:
    """A QuantConfig from already-loaded YAML data (a dict)."""
    raw = _without_nulls({} if raw is None else raw)
    if not isinstance(raw, dict):
        raise HarnessError(f"quant config {source}: top level: must be a mapping, got {type(raw).__name__}")
    try:
        cfg = _ADAPTER.validate_python(raw)
    except ValidationError as e:
        known = [f.name for f in dataclasses.fields(QuantConfig) if f.name != "path"]
        raise HarnessError(f"quant config {source}: {describe_errors(e, known)}") from None
    broken = check_rules(cfg, raw)
    if broken:
        raise HarnessError(f"quant config {source}: {broken[0]}: {broken[1]}")
    if cfg.kv_cache is not None and cfg.kv_cache.granularity == "per_tensor" and cfg.kv_cache.scale is None:
        cfg = dataclasses.replace(cfg, kv_cache=dataclasses.replace(cfg.kv_cache, scale=1.0))
    if cfg.calibration.dataset is not None:
        dataset = os.path.join(base_dir, os.path.expanduser(cfg.calibration.dataset))
        cfg = dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, dataset=dataset))
    return cfg


def load_config(path: str) -> QuantConfig:
    """Read and validate a quant config YAML file."""
    text = read_text(path, "quant config", allow_empty=True)  # empty: "quantizes nothing" below
    raw = parse_yaml(text, f"quant config {path}")
    cfg = parse_config(raw, source=path, base_dir=os.path.dirname(os.path.abspath(path)))
    return dataclasses.replace(cfg, path=os.path.abspath(path))
