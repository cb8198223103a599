"""vLLM in-process backend (`--backend vllm`): one `vllm.LLM` owned by one engine thread.

- generate() (Offline) hands its prompts to the engine thread, which runs them through
  `LLM.generate` in one call (batches that arrive together are merged), as vLLM's own
  `vllm bench throughput` does; vLLM schedules them with continuous batching.
- stream() (Server) adds one request to the same engine (`LLMEngine.add_request`) and the engine
  thread steps it; each step's new ids (RequestOutputKind.DELTA) go to the caller's queue at
  once, so the first id reaches LoadGen as soon as the prefill that produced it returns. Several
  threads may stream at once; all their requests share each engine step.
- A batch that arrives while streams run joins the step loop instead of `LLM.generate` (which
  would take their outputs), so neither waits for the other.
- Prompts are token ids (TokensPrompt) and no tokenizer is loaded (skip_tokenizer_init): the
  ids reported are vLLM's own. Decoding is greedy (temperature 0); EOS ids come from the model's
  generation config, its config and its tokenizer where the folder has one (Gemma 3: <eos>,
  <end_of_turn>, </s> for the embedded GGUF's converted folder).
- A GGUF path (or no --model-path: the embedded Gemma 3 270M) is dequantized once into a
  safetensors folder by the hf backend's conversion (cached), which vLLM then loads.

vLLM starts its engine core in child processes (spawn): the calling script needs the
`if __name__ == "__main__":` guard, as main.py has.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

# Before vLLM is imported: its INFO lines would bury the run summary.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
import vllm  # here, so that a missing vLLM is one line at backend lookup
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind, SamplingParams

from backends.base import Backend
from common.errors import HarnessError
from inputs.models import resolve_model_path

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "float16", "bfloat16")
_STOP = object()


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0] if text else type(e).__name__


class _NoTokenizerNotes(logging.Filter):
    """Without a tokenizer vLLM logs a chat-template warm-up traceback and 'Using None for EOS';
    token-id prompts need no template, and the EOS ids go in as stop ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "Chat template warmup failed" not in msg and "Using None for EOS" not in msg


class VLLMBackend(Backend):
    name = "vllm"
    # Offline: the whole query set in one LLM.generate call; vLLM batches it (max_num_seqs).
    # Server: one stream per worker, all merged into each engine step.
    default_batch_size = 100_000
    default_num_workers = 64
    defaults: ClassVar[dict[str, Any]] = {
        # 0 / "" / "auto": vLLM's own default
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "quantization": "",            # e.g. fp8, awq, gptq (vLLM's --quantization)
        "kv_cache_dtype": "auto",      # e.g. fp8, fp8_e4m3
        "speculative_config": "",      # JSON, e.g. {"method": "ngram", "num_speculative_tokens": 4, ...}
        "max_num_seqs": 0,             # sequences decoded together
        "max_num_batched_tokens": 0,   # tokens per engine step (prefill chunks plus decodes)
        "gpu_memory_utilization": 0.0,
        "enforce_eager": False,        # no CUDA graphs / torch.compile
        "enable_prefix_caching": True,  # vLLM's default; off measures every prompt in full
        "max_model_len": 0,            # context per sequence; 0: the model's
        "seed": 0,                     # greedy decoding draws no random numbers; recorded
        "engine_args": "",             # JSON object of further vllm.LLM arguments
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.dtype not in DTYPES:
            raise HarnessError(f"unknown dtype '{self.dtype}' for backend 'vllm' (choose from: {', '.join(DTYPES)})")
        if self.device not in ("cpu", "cuda"):
            raise HarnessError(f"device '{self.device}' for backend 'vllm': use cpu or cuda (vLLM spreads a "
                               "model over the GPUs CUDA_VISIBLE_DEVICES shows, with tensor_parallel_size)")
        o = self.options
        if o["tensor_parallel_size"] < 1 or o["pipeline_parallel_size"] < 1 or o["max_num_seqs"] < 0 \
                or o["max_model_len"] < 0 or o["max_num_batched_tokens"] < 0 \
                or not 0 <= o["gpu_memory_utilization"] <= 1:
            raise HarnessError("options tensor_parallel_size and pipeline_parallel_size must be >= 1, "
                               "max_num_seqs, max_num_batched_tokens and max_model_len >= 0, "
                               "gpu_memory_utilization within 0..1")
        # Parsed now so that a typo fails before minutes of loading.
        self._speculative = self._json_option("speculative_config")
        self._extra = self._json_option("engine_args")
        self.llm = None
        self.max_model_len = 0
        self.vocab_size = 0
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._dead: BaseException | None = None     # the engine thread's fatal error
        self._ids = itertools.count()

    def _json_option(self, key: str) -> dict | None:
        raw = self.options[key]
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise HarnessError(f"option {key} must be a JSON object: {e}") from None
        if not isinstance(value, dict):
            raise HarnessError(f"option {key} must be a JSON object, got {raw!r}")
        return value

    # -- lifecycle ---------------------------------------------------------------------------
    def engine_kwargs(self, path: str) -> dict[str, Any]:
        """The vllm.LLM arguments for `path`: the options that are set, then engine_args."""
        o = self.options
        kw: dict[str, Any] = {
            "model": path, "skip_tokenizer_init": True, "dtype": self.dtype, "seed": o["seed"],
            "tensor_parallel_size": o["tensor_parallel_size"],
            "pipeline_parallel_size": o["pipeline_parallel_size"], "kv_cache_dtype": o["kv_cache_dtype"],
            "enforce_eager": o["enforce_eager"], "enable_prefix_caching": o["enable_prefix_caching"],
        }
        for key in ("quantization", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization",
                    "max_model_len"):
            if o[key]:
                kw[key] = o[key]
        if self._speculative is not None:
            kw["speculative_config"] = self._speculative
        kw.update(self._extra or {})
        return kw

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm.platforms import current_platform

        if current_platform.device_type != self.device:
            raise HarnessError(f"--device {self.device} asked for, but this vLLM build runs on "
                               f"'{current_platform.device_type}' (give --device {current_platform.device_type})")
        path = self._model_folder()
        logging.getLogger("vllm.renderers.base").addFilter(_NoTokenizerNotes())
        try:
            self.llm = vllm.LLM(**self.engine_kwargs(path))
        except Exception as e:  # vLLM raises many types for bad checkpoints, options and memory
            raise HarnessError(f"vLLM could not start on {path}: {_one_line(e)}") from e
        mc = self.llm.llm_engine.model_config
        self.max_model_len = mc.max_model_len
        self.vocab_size = mc.get_vocab_size()
        self.eos_token_ids = frozenset(self._eos_ids(path, mc))
        self._thread = threading.Thread(target=self._engine_loop, name="vllm-engine", daemon=True)
        self._thread.start()
        log.info("vllm backend: %s, %s, max_model_len %d, eos %s", path, mc.dtype, self.max_model_len,
                 sorted(self.eos_token_ids))

    def _model_folder(self) -> str:
        path = resolve_model_path(self.model_path)
        if os.path.isdir(path):
            return path
        if not path.endswith(".gguf"):
            raise HarnessError(f"cannot load {path}: expected a checkpoint folder or a .gguf file")
        from backends.hf import HFBackend

        # The hf backend's cached conversion: dequantized weights with the GGUF's full
        # end-of-generation set in generation_config.json.
        return HFBackend(model_path=path)._gguf_to_folder(path)

    @staticmethod
    def _eos_ids(path: str, model_config) -> set[int]:
        ids: set[int] = set()

        def add(eos):
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, (list, tuple)):
                ids.update(int(e) for e in eos)

        add(model_config.try_get_generation_config().get("eos_token_id"))
        add(getattr(model_config.hf_text_config, "eos_token_id", None))
        if any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model")):
            try:
                from transformers import AutoTokenizer

                add(AutoTokenizer.from_pretrained(path, local_files_only=True).eos_token_id)
            except Exception as e:  # noqa: BLE001 - an unreadable tokenizer leaves the config's EOS ids
                log.warning("tokenizer of %s not read for its EOS id: %s", path, _one_line(e))
        return ids

    def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join(60)
            self._thread = None
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["max_model_len"] = self.max_model_len
        out["eos_token_ids"] = sorted(self.eos_token_ids)
        out["vllm_version"] = vllm.__version__
        return out

    # -- requests ----------------------------------------------------------------------------
    def sampling_params(self, stream: bool):
        """Greedy decoding; a stream gets each step's new ids (DELTA), a batch only the finished
        outputs (FINAL_ONLY: nothing to copy per step)."""
        p = self.params
        # ignore_eos: EOS is an ordinary token (as in the hf backend), neither banned nor stopping.
        return SamplingParams(
            temperature=0.0, max_tokens=p.max_new_tokens, min_tokens=0 if p.ignore_eos else p.min_new_tokens,
            ignore_eos=p.ignore_eos, stop_token_ids=[] if p.ignore_eos else sorted(self.eos_token_ids),
            detokenize=False, skip_special_tokens=False,
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY)

    def _check_prompt(self, prompt: list[int]) -> str | None:
        """Why vLLM would refuse the prompt or cut its output short, or None."""
        if not prompt:
            return "empty prompt (no tokens)"
        if len(prompt) + self.params.max_new_tokens > self.max_model_len:
            return (f"a prompt of {len(prompt)} tokens plus max_new_tokens={self.params.max_new_tokens} "
                    f"exceeds max_model_len={self.max_model_len}")
        if min(prompt) < 0 or max(prompt) >= self.vocab_size:
            return f"prompt holds token ids outside the vocabulary (0..{self.vocab_size - 1})"
        return None

    def _check_loaded(self) -> None:
        if self.llm is None:
            raise HarnessError("backend 'vllm' used before load()")
        if self._dead is not None:
            raise HarnessError(f"the vLLM engine failed: {_one_line(self._dead)}")

    def generate(self, prompts: list[list[int]]) -> list[list[int] | BaseException]:
        self._check_loaded()
        outs: list[Any] = [None] * len(prompts)
        good = []
        for i, p in enumerate(prompts):
            why = self._check_prompt(p)
            if why:
                outs[i] = HarnessError(why)     # fails that query alone
            else:
                good.append(i)
        if good:
            reply: queue.SimpleQueue = queue.SimpleQueue()
            self._inbox.put(("batch", [prompts[i] for i in good], reply))
            got = self._wait(reply)
            if isinstance(got, BaseException):
                raise got
            for i, ids in zip(good, got):
                outs[i] = ids if isinstance(ids, BaseException) else self.trim(ids)
        return outs

    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        self._check_loaded()
        why = self._check_prompt(prompt)
        if why:
            raise HarnessError(why)
        rid = f"stream-{next(self._ids)}"
        chunks: queue.SimpleQueue = queue.SimpleQueue()
        self._inbox.put(("stream", rid, prompt, chunks))
        produced: list[int] = []
        finished = False
        try:
            while not finished:
                item = self._wait(chunks)
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                ids, finished = item
                new = self.trim(produced + ids)[len(produced):]
                produced.extend(new)
                if new:
                    yield new
                if len(new) < len(ids):     # cut at EOS / max_new_tokens: nothing more is wanted
                    return
        finally:
            if not finished:                # abandoned or cut: free its sequence in the engine
                self._inbox.put(("abort", rid))

    def _wait(self, q: queue.SimpleQueue):
        """The next item of q, or the engine thread's error should it die before answering."""
        while True:
            try:
                return q.get(timeout=1.0)
            except queue.Empty:
                if self._dead is not None:
                    return HarnessError(f"the vLLM engine failed: {_one_line(self._dead)}")

    # -- the engine thread -------------------------------------------------------------------
    def _engine_loop(self) -> None:
        """Owns self.llm: runs batches with LLM.generate when no stream is in the engine, else
        steps the engine and routes each request's new ids to its stream's queue or its batch."""

        engine = self.llm.llm_engine
        stream_params, batch_params = self.sampling_params(True), self.sampling_params(False)
        active: dict[str, queue.SimpleQueue | None] = {}   # request id -> stream queue, None: a batch's
        results: dict[str, Any] = {}                        # a batch request's ids (or its error)
        batches: list[tuple[list[str], queue.SimpleQueue]] = []

        def add(rid: str, prompt: list[int], q: queue.SimpleQueue | None) -> None:
            try:
                engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt),
                                   batch_params if q is None else stream_params)
            except Exception as e:  # noqa: BLE001 - refused by vLLM's own checks: fails this request alone
                if q is None:
                    results[rid] = e
                else:
                    q.put(e)
                return
            active[rid] = q

        try:
            while True:
                cmds = [] if active else [self._inbox.get()]
                while True:
                    try:
                        cmds.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                if _STOP in cmds:
                    raise HarnessError("backend closed")
                waiting = [c for c in cmds if c[0] == "batch"]
                if waiting and not active:
                    self._run_batches(waiting, batch_params)
                    waiting = []
                for c in cmds:
                    if c[0] == "stream":
                        add(c[1], c[2], c[3])
                    elif c[0] == "abort" and c[1] in active:
                        engine.abort_request([c[1]])
                        del active[c[1]]
                for c in waiting:           # streams are running: the batch joins the step loop
                    rids = [f"batch-{next(self._ids)}" for _ in c[1]]
                    for rid, p in zip(rids, c[1]):
                        results[rid] = []
                        add(rid, p, None)
                    batches.append((rids, c[2]))
                if active:
                    for out in engine.step():
                        if out.request_id not in active:    # aborted meanwhile
                            continue
                        q = active[out.request_id]
                        ids = list(out.outputs[0].token_ids) if out.outputs else []
                        if q is None:
                            results[out.request_id].extend(ids)
                        else:
                            q.put((ids, out.finished))
                        if out.finished:
                            del active[out.request_id]
                    for b in [b for b in batches if not any(r in active for r in b[0])]:
                        b[1].put([results.pop(r) for r in b[0]])
                        batches.remove(b)
        except BaseException as e:  # noqa: BLE001 - closed, or the engine is unusable: fail everything waiting
            if not isinstance(e, HarnessError):
                self._dead = e
                log.error("vLLM engine thread failed: %s", _one_line(e))
            if active:
                with contextlib.suppress(Exception):   # the engine may be gone already
                    engine.abort_request(list(active))
            for q in active.values():
                if q is not None:
                    q.put(e)
            for _, reply in batches:
                reply.put(e)
            while True:
                try:
                    c = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if c is not _STOP and c[0] in ("batch", "stream"):
                    c[2 if c[0] == "batch" else 3].put(e)

    def _run_batches(self, waiting: list[tuple], params) -> None:
        """Every batch queued now in one LLM.generate call (the fastest path), split back."""

        prompts = [p for c in waiting for p in c[1]]
        try:
            res = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        except Exception as e:  # noqa: BLE001 - handed to the callers; the engine may still work
            for c in waiting:
                c[2].put(e)
            return
        start = 0
        for c in waiting:
            c[2].put([list(r.outputs[0].token_ids) for r in res[start:start + len(c[1])]])
            start += len(c[1])
