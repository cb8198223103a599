"""Hugging Face transformers backend (`--backend hf`): FP32/FP16/BF16 on CPU or CUDA.

Two generation engines share the loaded model:
- "slots" (backends/hf_engine/): a continuous-batching loop over a static KV cache with a
  fixed number of slots, CUDA graphs for the decode step on a GPU. Used for Llama-family models.
- "generate": plain `model.generate` on left-padded batches; any causal LM (e.g. Gemma 3).
`engine=auto` picks "slots" where the model supports it.

With `--quant-config` (option quant_config) the backend *executes* the config with real
low-precision kernels (quantization.fp8: FP8 Linear through torch._scaled_mm, an fp8 KV cache
read by a Triton decode attention) and refuses, in one line, what has no real kernel here. On
the CPU the same maths runs as a float32 reference; info()["quant"] says which ran.

Subclasses (the fake-quant backend) override `prepare_model()` to rewrite the model after it is
loaded in its target dtype/device and before any CUDA graph is captured, and extend `defaults`.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from typing import Any, Iterator

from backends import speculative
from backends.base import Backend
from common.errors import HarnessError
from inputs.models import cache_dir, file_fingerprint, resolve_model_path

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
GGUF_CACHE_VERSION = "v3"  # bump when the conversion changes, so older cached copies are not reused


def _one_line(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0] if text else type(e).__name__


class HFBackend(Backend):
    name = "hf"
    defaults: dict[str, Any] = {
        "engine": "auto",          # auto | slots | generate
        "batch_size": 128,         # slots (sequences decoded together); generate: prompts per call
        "device_map": "",          # "auto": spread a model larger than one GPU over all GPUs
        "max_seq_len": 0,          # KV cache length per slot; 0: sized from the prompts (Offline)
        "cuda_graphs": True,       # capture the decode step (GPU only)
        "kv_bucket": 64,           # attention reads the cache up to the next multiple of this
        "prefill_tokens": 8192,    # prompt tokens prefilled in one forward pass
        "stream_interval": 1,      # stream(): tokens per chunk after the first (fewer thread wake-ups)
        "prefill_wait_ms": 0.0,    # slots, while decoding: a new request waits up to this for others
                                   # to share its prefill forward (Server arrivals); 0: prefilled at once
        "decode_sdpa": "auto",     # SDPA kernel for decode steps: auto | efficient | cudnn | math
        "compile": "auto",         # slots: torch.compile backend for RMSNorm/RoPE/SiLU*up: auto (inductor
                                   # on one GPU, else off) | off | inductor | eager
        "fuse_fp8": False,         # slots, compile, real fp8 activations: RMSNorm and SiLU*up quantize their
                                   # output in the compiled kernel (off by default until checked on a GPU)
        "attn_implementation": "sdpa",
        "quant_config": "",        # YAML file (main.py: --quant-config): hf executes it for real
        **speculative.OPTIONS,     # transformers' prompt lookup / assisted generation (engine=generate)
        "draft_quant_config": "",  # draft: the draft_model (default: the target) fake-quantized by this YAML
    }
    kv_fp8_mode = "real"           # how the slots engine applies a kv_cache section (fakequant: "fake")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.dtype not in DTYPES:
            raise HarnessError(f"unknown dtype '{self.dtype}' for backend '{self.name}' "
                               f"(choose from: {', '.join(DTYPES)})")
        dev = self.device
        if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise HarnessError(f"unknown device '{dev}' for backend '{self.name}' (use cpu, cuda or cuda:N)")
        if self.options["engine"] not in ("auto", "slots", "generate"):
            raise HarnessError(f"option engine must be auto, slots or generate, got '{self.options['engine']}'")
        if self.options["device_map"] not in ("", "auto"):
            raise HarnessError(f"option device_map must be 'auto' or empty, got '{self.options['device_map']}'")
        if self.options["compile"] not in ("auto", "off", "inductor", "eager"):
            raise HarnessError(f"option compile must be auto, off, inductor or eager, got '{self.options['compile']}'")
        if self.options["batch_size"] < 1:
            raise HarnessError("option batch_size must be >= 1")
        if self.options["prefill_wait_ms"] < 0:
            raise HarnessError("option prefill_wait_ms must be >= 0")
        self.quant_config = None
        self.quant_report: dict | None = None
        if self.options["quant_config"]:
            from quantization.config import load_config

            # Parsed now so that a bad config fails before minutes of weight loading.
            self.quant_config = load_config(self.options["quant_config"])
            self.check_quant_config(self.quant_config)
        self.spec_kind = speculative.check_options(self.options, self.name)
        if self.spec_kind and self.options["engine"] == "slots":
            raise HarnessError("speculative decoding runs on engine=generate (transformers' assisted generation)")
        self.spec: speculative.HFAssist | None = None
        self.model = None
        self.engine = None  # SlotEngine when the slots engine is in use
        self._lock = threading.Lock()  # serialises the generate engine and score()

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch

        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise HarnessError(f"device '{self.device}' asked for but no CUDA GPU is available "
                                   "(use --device cpu)")
            idx = int(self.device[5:]) if ":" in self.device else 0
            if idx >= torch.cuda.device_count():
                raise HarnessError(f"device '{self.device}' asked for but only "
                                   f"{torch.cuda.device_count()} GPU(s) are visible")
        elif self.options["device_map"] == "auto":
            raise HarnessError("option device_map=auto needs --device cuda")
        self.torch_dtype = getattr(torch, self.dtype)
        model = self._load_model()
        model = self.prepare_model(model)
        model.eval()
        self.model = model
        self.eos_token_ids = frozenset(self._eos_ids(model))
        self.input_device = model.get_input_embeddings().weight.device
        engine = self.options["engine"]
        if self.spec_kind:
            engine = "generate"
            self.spec = speculative.HFAssist(self.spec_kind, self.options, model, self._load_draft(model))
        if engine == "auto":
            from backends.hf_engine import supports
            engine = "slots" if supports(model) else "generate"
        elif engine == "slots":
            from backends.hf_engine import supports
            if not supports(model):
                raise HarnessError(f"engine=slots does not support model type "
                                   f"'{model.config.model_type}' (use engine=generate)")
        if engine != "slots" and self.quant_config is not None and self.quant_config.kv_cache is not None:
            raise HarnessError(f"{self.quant_config.label}: kv_cache: only the slots engine (Llama-family "
                               f"models) has an fp8 KV cache; this model runs on engine={engine}")
        self.engine_name = engine
        log.info("hf backend: %s %s on %s, engine=%s, eos=%s", model.config.model_type, self.dtype,
                 self.input_device, engine, sorted(self.eos_token_ids))

    def _load_model(self, path: str | None = None):
        """Weights from a local folder or a GGUF file (default: the target's), in the target dtype
        on the target device."""
        import torch
        from transformers import AutoModelForCausalLM

        path = resolve_model_path(path or self.model_path)
        if not os.path.isdir(path):
            if not path.endswith(".gguf"):
                raise HarnessError(f"cannot load {path}: expected a checkpoint folder or a .gguf file")
            path = self._gguf_to_folder(path)
        kwargs: dict[str, Any] = {"dtype": self.torch_dtype, "local_files_only": True,
                                  "attn_implementation": self.options["attn_implementation"]}
        if self.options["device_map"] == "auto":
            kwargs["device_map"] = "auto"
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except Exception as e:  # transformers raises many types for unreadable checkpoints
            raise HarnessError(f"cannot load a model from {path}: {_one_line(e)}") from e
        if self.options["device_map"] != "auto":
            model.to(torch.device(self.device))
        return model

    def _gguf_to_folder(self, gguf_path: str) -> str:
        """Dequantize a GGUF file once and keep it as safetensors in the cache folder."""
        from transformers import AutoModelForCausalLM

        folder = cache_dir("hf-from-gguf") / f"{file_fingerprint(gguf_path)}-{GGUF_CACHE_VERSION}"
        if (folder / "config.json").is_file():
            return str(folder)
        log.info("converting %s to safetensors (once; cached in %s)", gguf_path, folder)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                os.path.dirname(gguf_path) or ".", gguf_file=os.path.basename(gguf_path),
                local_files_only=True)
        except Exception as e:
            raise HarnessError(f"cannot load a model from {gguf_path}: {_one_line(e)}") from e
        # A GGUF names one EOS, but llama.cpp stops at every end-of-generation token of the
        # vocabulary (Gemma 3: <eos>, <end_of_turn>, </s>). Use the same set, so that the hf and
        # llamacpp backends end the same outputs at the same place.
        eos = self._eos_ids(model) | self._end_of_generation_ids(gguf_path)
        if eos:
            model.generation_config.eos_token_id = sorted(eos)
        # The weights are plain float tensors now; drop the GGUF marker that blocks save_pretrained.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = tempfile.mkdtemp(dir=folder.parent)
        try:
            model.save_pretrained(tmp)
            if folder.is_dir() and not (folder / "config.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)  # left empty by an interrupted run
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (folder / "config.json").is_file():
                raise HarnessError(f"cannot write the converted model to {folder}") from None
            # else another process finished first: use its copy
        return str(folder)

    @staticmethod
    def _end_of_generation_ids(gguf_path: str) -> set[int]:
        from inputs.tokenizer import load_tokenizer

        try:
            tok = load_tokenizer(gguf_path)
        except HarnessError as e:  # e.g. llama-cpp-python missing: keep the GGUF's own EOS only
            log.warning("end-of-generation tokens of %s not added to EOS: %s", gguf_path, e)
            return set()
        return tok.eog_token_ids

    def check_quant_config(self, cfg) -> None:
        """Refuse, before loading, a config this backend cannot execute with real kernels."""
        from quantization.fp8 import check_executable

        check_executable(cfg)
        if cfg.kv_cache is not None and self.device.startswith("cuda"):
            try:
                import triton  # noqa: F401  (the fp8 decode attention kernel)
            except ImportError:
                raise HarnessError(f"{cfg.label}: kv_cache: the fp8 decode attention needs Triton on the GPU "
                                   "(pip install triton), or simulate it with --backend fakequant") from None

    def prepare_model(self, model):
        """Rewrite the loaded model before any CUDA graph is captured: here, the quant config's
        FP8 Linear layers (subclasses: e.g. fake quantization)."""
        if self.quant_config is not None:
            from quantization.fp8 import convert_model

            self.quant_report = convert_model(model, self.quant_config, model.get_input_embeddings().weight.device)
            kv = self.quant_config.kv_cache
            self.quant_report["kv_cache"] = None if kv is None else {
                "format": kv.format, "granularity": kv.granularity,
                "decode_attention": "triton" if self.device.startswith("cuda") else "float32 reference"}
        return model

    @staticmethod
    def _eos_ids(model) -> set[int]:
        ids: set[int] = set()
        for src in (getattr(model, "generation_config", None), model.config):
            eos = getattr(src, "eos_token_id", None) if src is not None else None
            if isinstance(eos, int):
                ids.add(eos)
            elif eos:
                ids.update(int(e) for e in eos)
        return ids

    # ---- generation ----------------------------------------------------------------------
    def _slot_engine(self, prompts: list[list[int]]):
        """The slots engine, (re)built when the prompts need a longer cache than the current one."""
        from backends.hf_engine import SlotEngine

        need = self.params.max_new_tokens + max(len(p) for p in prompts)
        fixed = self.options["max_seq_len"]
        if fixed and need > fixed:
            raise HarnessError(f"a prompt plus max_new_tokens needs {need} cache positions, more than "
                               f"option max_seq_len={fixed}")
        if self.engine is not None and self.engine.cache_len >= need:
            return self.engine
        # Without max_seq_len the cache grows to the longest request seen, in steps of 512
        # positions; each growth waits for the running requests and re-captures CUDA graphs.
        cache_len = fixed or -(-need // 512) * 512
        if self.engine is not None:
            log.warning("growing the KV cache to %d positions per slot (set --backend-arg max_seq_len "
                        "to size it once)", cache_len)
            self.engine.close()
            self.engine = None
        self.engine = SlotEngine(
            self.model, n_slots=self.options["batch_size"], cache_len=cache_len, params=self.params,
            eos_ids=self.eos_token_ids, cuda_graphs=self.options["cuda_graphs"],
            kv_bucket=self.options["kv_bucket"], prefill_tokens=self.options["prefill_tokens"],
            stream_interval=self.options["stream_interval"], decode_sdpa=self.options["decode_sdpa"],
            compile=self.options["compile"], fuse_fp8=self.options["fuse_fp8"],
            prefill_wait_ms=self.options["prefill_wait_ms"], **self._kv_options())
        return self.engine

    def _kv_options(self) -> dict:
        kv = self.quant_config.kv_cache if self.quant_config is not None else None
        if kv is None:
            return {}
        return {"kv_fp8": self.kv_fp8_mode, "kv_static_scale": kv.scale if kv.granularity == "per_tensor" else None}

    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        self._check_loaded()
        if not prompts:
            return []
        if self.engine_name == "slots":
            # One engine serves Offline batches and Server streams; it merges everything queued.
            # Submit under the lock: a concurrent call may replace (close) the engine right after.
            with self._lock:
                engine = self._slot_engine(prompts)
                reqs = engine.submit(prompts)
            return [self.trim(out) for out in engine.collect(reqs)]
        bs = 1 if self.spec else self.options["batch_size"]  # assisted generation takes one prompt at a time
        outs: list[list[int]] = []
        for i in range(0, len(prompts), bs):
            outs.extend(self._generate_padded(prompts[i:i + bs]))
        return outs

    def _generation_config(self):
        from transformers import GenerationConfig

        eos = sorted(self.eos_token_ids)
        pad = getattr(self.model.generation_config, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.model.config, "pad_token_id", None)
        if pad is None:
            pad = eos[0] if eos else 0
        p = self.params
        return GenerationConfig(
            do_sample=False, max_new_tokens=p.max_new_tokens,
            min_new_tokens=0 if p.ignore_eos else p.min_new_tokens,
            eos_token_id=None if p.ignore_eos or not eos else eos, pad_token_id=pad,
            **(self.spec.generation_config() if self.spec else {})), pad

    def _generate_padded(self, prompts: list[list[int]], streamer=None) -> list[list[int]]:
        """Plain model.generate on one left-padded batch."""
        import torch

        gc, pad = self._generation_config()
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            if not p:
                raise HarnessError("empty prompt (no tokens)")
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        with self._lock, torch.inference_mode():
            # generate() fills an unset eos_token_id from the model's own generation_config; with
            # ignore_eos that must stay unset (EOS is then an ordinary token), so clear it meanwhile.
            saved = self.model.generation_config.eos_token_id
            if self.params.ignore_eos:
                self.model.generation_config.eos_token_id = None
            if self.spec:
                self.spec.begin(width)
            try:
                out = self.model.generate(input_ids=ids.to(self.input_device),
                                          attention_mask=mask.to(self.input_device),
                                          generation_config=gc, streamer=streamer,
                                          **(self.spec.generate_kwargs() if self.spec else {}))
            finally:
                self.model.generation_config.eos_token_id = saved
            if self.spec:
                self.spec.end(out.shape[1] - width)
        return [self.trim(row[width:].tolist()) for row in out.cpu()]

    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        self._check_loaded()
        if self.engine_name == "slots":
            with self._lock:
                engine = self._slot_engine([prompt])
                req = engine.submit([prompt])[0]
            yield from engine.chunks(req)
            return
        yield from self._stream_generate(prompt)

    def _stream_generate(self, prompt: list[int]) -> Iterator[list[int]]:
        """Stream through model.generate with a streamer: tokens arrive as they are decoded."""
        chunks: queue.Queue = queue.Queue()
        done = object()

        class _Streamer:  # transformers' BaseStreamer protocol: put() gets the prompt first
            def __init__(self):
                self.seen_prompt = False

            def put(self, value):
                if not self.seen_prompt:
                    self.seen_prompt = True
                    return
                chunks.put(value.reshape(-1).tolist())

            def end(self):
                pass

        def work():
            try:
                self._generate_padded([prompt], streamer=_Streamer())
                chunks.put(done)
            except Exception as e:  # handed to the consumer thread
                chunks.put(e)

        threading.Thread(target=work, daemon=True).start()
        produced: list[int] = []
        while True:
            item = chunks.get()
            if item is done:
                return
            if isinstance(item, Exception):
                raise item
            # Apply the same EOS/max trimming as generate(): stop after the first EOS.
            new = self.trim(produced + item)[len(produced):]
            produced.extend(new)
            if new:
                yield new
            if len(new) < len(item):
                # Drain the rest so the worker finishes; nothing more is yielded.
                while (item := chunks.get()) is not done and not isinstance(item, Exception):
                    pass
                return

    def score(self, ids: list[int]) -> list[float]:
        self._check_loaded()
        import torch

        if not ids:
            return []
        x = torch.tensor([ids], device=self.input_device)
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=x).logits[0].float()
        logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, x[0, 1:, None].to(logits.device))[:, 0]
        return [0.0] + logp.cpu().tolist()

    def _load_draft(self, target):
        """The draft model of speculative=draft: draft_model (default: the target's weights),
        fake-quantized by draft_quant_config if given; None for ngram."""
        if self.spec_kind != "draft":
            return None
        o = self.options
        draft = self._load_model(o["draft_model"] or None)
        if o["draft_quant_config"]:
            from quantization.config import load_config
            from quantization.fake import quantize_model

            quantize_model(draft, load_config(o["draft_quant_config"]))
        n_t, n_d = target.get_output_embeddings().weight.shape[0], draft.get_output_embeddings().weight.shape[0]
        speculative.check_same_vocab(n_t, n_d, o["draft_model"] or self.model_path, self.name)
        return draft.eval()

    def _check_loaded(self):
        if self.model is None:
            raise HarnessError(f"backend '{self.name}' used before load()")

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self.model is not None:
            self.model = None
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["engine"] = getattr(self, "engine_name", self.options["engine"])
        if self.spec is not None:
            out["speculative"] = self.spec.stats.to_dict()
        if self.quant_config is not None:
            out["quant_config_path"] = self.quant_config.path
            out["quant_config"] = self.quant_config.to_dict()
            if self.quant_report is not None:
                out["quant"] = self.quant_summary()
        return out

    def quant_summary(self) -> dict:
        """What was done to the model and which kernels run (info()["quant"])."""
        return {"execution": "real", **self.quant_report}
