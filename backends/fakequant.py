"""Fake-quantized Hugging Face backend (`--backend fakequant --quant-config cfg.yaml`).

The hf backend with one extra step: after the weights are loaded in the target dtype on the
target device, the YAML config (quantization/config.py, docs/quantization.md) is applied by
quantization.fake: weights are quantize-dequantized in place, nn.Linear inputs are quantized by
forward pre-hooks, and static activation ranges are calibrated on the calibration prompts.
A kv_cache section is simulated by the slots engine (values rounded through fp8 as they are
written to the cache). Generation, streaming and scoring are the hf backend's, unchanged.
"""
from __future__ import annotations

from typing import Any

from backends.hf import HFBackend
from common.errors import HarnessError


class FakeQuantBackend(HFBackend):
    name = "fakequant"
    defaults: dict[str, Any] = {
        **HFBackend.defaults,
        "calibration_dataset": "",   # overrides calibration.dataset of the config
        "calibration_samples": 0,    # overrides calibration.samples of the config (0: keep)
    }

    kv_fp8_mode = "fake"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.options["quant_config"]:
            raise HarnessError("backend 'fakequant' needs a quant config: --quant-config FILE "
                               "(see quant_configs/ and docs/quantization.md)")
        if self.options["calibration_samples"] < 0:
            raise HarnessError("option calibration_samples must be >= 0")
        self.calibration_dataset = self.options["calibration_dataset"] or self.quant_config.calibration.dataset
        acts = self.quant_config.activations
        if acts is not None and acts.mode == "static" and not self.calibration_dataset:
            raise HarnessError(f"{self.quant_config.label}: activations.mode: static needs calibration "
                               "data: set calibration.dataset or --backend-arg calibration_dataset=FILE")

    def check_quant_config(self, cfg) -> None:
        """Every valid config can be simulated."""

    def prepare_model(self, model):
        from quantization.fake import load_calibration_prompts, quantize_model

        cfg = self.quant_config
        prompts = None
        if cfg.activations is not None and cfg.activations.mode == "static":
            prompts = load_calibration_prompts(
                self.calibration_dataset, self.options["calibration_samples"] or cfg.calibration.samples,
                cfg.calibration.max_tokens, model.get_input_embeddings().num_embeddings)
        self.quant_report = quantize_model(model, cfg, prompts)
        return model

    def info(self) -> dict[str, Any]:
        out = super().info()
        if self.calibration_dataset:
            out["calibration_dataset"] = self.calibration_dataset
        return out

    def quant_summary(self) -> dict:
        kv = self.quant_config.kv_cache
        return {"execution": "simulated (fake quantization)", **self.quant_report.summary(),
                "kv_cache": None if kv is None else {"format": kv.format, "granularity": kv.granularity}}
