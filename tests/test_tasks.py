"""Accuracy tasks (python -m tasks): known answers on tiny inputs, agreement with llama.cpp's own
perplexity computation and between backends on the embedded Gemma 3 270M GGUF, bad files.

The scripted backends below stand in for a model whose answer is known by construction
(log-probs chosen by the test); every run with a real model uses the real llama.cpp and
transformers backends.
"""
from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from backends import GenerationParams
from backends.base import Backend
from common.errors import HarnessError
from tasks import multiple_choice as mc
from tasks import perplexity as ppl
from tasks import summarization as summ
from tasks.__main__ import DEMO, run
from tasks.common import BackendSpec, TaskTokenizer, mean_and_stderr

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets" / "tasks"


class ScriptedBackend(Backend):
    """score(): every token gets `logprob`, except ids listed in `liked` (log-prob -0.01);
    generate(): the ids in `answers[tuple(prompt)]`. Records what it was asked."""
    name = "scripted"

    def __init__(self, logprob: float = 0.0, liked: set[int] = frozenset(), answers: dict | None = None, **kw):
        super().__init__(**kw)
        self.logprob, self.liked, self.answers, self.scored = logprob, set(liked), answers or {}, []

    def load(self):
        pass

    def generate(self, prompts):
        return [self.trim(self.answers[tuple(p)]) for p in prompts]

    def score(self, ids):
        self.scored.append(list(ids))
        return [0.0] + [-0.01 if t in self.liked else self.logprob for t in ids[1:]]


@pytest.fixture(scope="module")
def tok():
    """llama.cpp's tokenizer of the embedded Gemma 3 270M GGUF (vocabulary only)."""
    return TaskTokenizer(None)


# -- perplexity ----------------------------------------------------------------------------------
def test_chunk_windows_follow_llama_perplexity():
    # llama-perplexity -c 512 on 1234 tokens: 2 chunks, each scoring its last 255 tokens.
    windows = ppl.plan_windows(1234, 512, "chunks")
    assert [(w.start, w.end, w.first_scored) for w in windows] == [(0, 512, 257), (512, 1024, 257)]
    with pytest.raises(HarnessError, match="at least 2 \\* ctx-size = 1024"):
        ppl.plan_windows(1000, 512, "chunks")


@pytest.mark.parametrize("n,ctx,stride", [(1000, 128, 64), (130, 128, 32), (50, 128, 64), (300, 100, 99)])
def test_sliding_windows_score_every_token_once(n, ctx, stride):
    scored = []
    for w in ppl.plan_windows(n, ctx, "sliding", stride):
        assert w.end - w.start <= ctx and w.first_scored >= 1
        scored.extend(range(w.start + w.first_scored, w.end))
    assert scored == list(range(1, n))
    with pytest.raises(HarnessError, match="stride must be between 1 and ctx-size - 1"):
        ppl.plan_windows(n, ctx, "sliding", ctx)


def test_perfect_model_has_perplexity_one_and_uniform_model_its_vocab_size():
    ids = list(range(10, 110))
    perfect = ppl.perplexity(ScriptedBackend(0.0), ids, 16, "chunks", progress=False)
    assert perfect.perplexity == 1.0 and perfect.perplexity_stderr == 0.0
    assert perfect.n_scored_tokens == 6 * (16 - 1 - 8)
    uniform = ppl.perplexity(ScriptedBackend(-math.log(4)), ids, 16, "sliding", stride=8, progress=False)
    assert uniform.perplexity == pytest.approx(4.0) and uniform.n_scored_tokens == 99


def test_windows_start_with_bos_and_stderr_is_llama_cpp_formula():
    backend = ScriptedBackend(-1.0, liked={5})
    ids = [2] + [5, 7] * 16           # 33 tokens, two windows of 16
    res = ppl.perplexity(backend, ids, 16, "chunks", bos_id=2, progress=False)
    assert [w[0] for w in backend.scored] == [2, 2] and backend.scored[1][1:] == ids[17:32]
    nll = [1.0 if t == 7 else 0.01 for w in backend.scored for t in w[9:]]
    mean, se = mean_and_stderr(nll)
    var = sum(x * x for x in nll) / len(nll) - mean ** 2
    assert se == pytest.approx(math.sqrt(var / (len(nll) - 1)))
    assert res.mean_nll == pytest.approx(mean) and res.perplexity_stderr == pytest.approx(math.exp(mean) * se)


# -- multiple choice -----------------------------------------------------------------------------
def test_choice_scores_average_answer_tokens_after_common_prefix(tok):
    context, answers = "The sky is", ["blue today", "green"]
    liked = set(tok.encode(" blue today", bos=False))
    backend = ScriptedBackend(-2.0, liked=liked)
    scores = mc.choice_scores(backend, tok, context, answers)
    prefix = len(tok.encode(context))
    tails = [s[prefix:] for s in backend.scored]
    assert all(s[:prefix] == tok.encode(context) for s in backend.scored)
    assert scores == pytest.approx([sum(-0.01 if t in liked else -2.0 for t in tail) / len(tail) for tail in tails])
    assert scores[0] > scores[1]


def test_accuracy_stderr_and_chance_on_demo_questions(tok):
    questions = mc.load_questions(ASSETS / "mmlu" / "test").questions
    assert len(questions) == 20 and {q.subject for q in questions} == {"elementary science", "world geography"}
    # A model that always prefers the letter "A": right exactly where the answer is A.
    backend = ScriptedBackend(-3.0, liked=set(tok.encode(" A", bos=False)))
    result, samples = mc.evaluate(backend, tok, questions, "letters", progress=False)
    n_a = sum(q.answer == 0 for q in questions)
    assert all(s["predicted"] == 0 for s in samples)
    assert result.accuracy == n_a / 20 and result.chance_accuracy == 0.25
    assert result.accuracy_stderr == pytest.approx(math.sqrt(result.accuracy * (1 - result.accuracy) / 19))


def test_few_shot_prompt_uses_dev_examples_of_the_same_subject():
    dev = mc.load_questions(ASSETS / "mmlu" / "dev").questions
    q = mc.load_questions(ASSETS / "mmlu" / "test" / "world_geography_test.csv").questions[0]
    context, answers = mc.prompt_and_answers(q, "letters", mc.pick_shots(q, dev, 2))
    assert context.startswith("The following are multiple choice questions (with answers) about world geography.")
    assert context.count("Answer:") == 3 and "capital city of Italy?\nA. Rome" in context
    assert "Answer: A\n\n" in context and context.endswith("D. Rome\nAnswer:") and answers == list("ABCD")
    with pytest.raises(HarnessError, match="5-shot needs at least 5"):
        mc.evaluate(ScriptedBackend(), None, [q], "letters", dev[:2], 5)


def _write_llamacpp_bin(path: Path, tasks: list[dict]) -> None:
    """llama.cpp's multiple-choice binary layout (what `llama-perplexity -bf` reads)."""
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<I", len(b)) + b

    def answers(choices, labels) -> bytes:
        return struct.pack("<I", len(choices)) + b"".join(s(c) for c in choices) + struct.pack(f"<{len(labels)}i", *labels)

    bodies = [s(t["question"]) + answers(t["mc1_targets"]["choices"], t["mc1_targets"]["labels"]) + answers([], [])
              for t in tasks]
    offsets, pos = [], 4 + 4 * len(tasks)
    for b in bodies:
        offsets.append(pos)
        pos += len(b)
    path.write_bytes(struct.pack("<I", len(tasks)) + struct.pack(f"<{len(tasks)}I", *offsets) + b"".join(bodies))


def test_llamacpp_json_and_binary_files_read_the_same(tmp_path):
    from_json = mc.load_questions(ASSETS / "mc_demo.json")
    _write_llamacpp_bin(tmp_path / "mc.bin", json.loads((ASSETS / "mc_demo.json").read_text()))
    from_bin = mc.load_questions(tmp_path / "mc.bin")
    assert from_json.format == "llamacpp-json" and from_bin.format == "llamacpp-bin"
    assert from_json.questions == from_bin.questions and len(from_bin.questions) == 20
    csv_q = mc.load_questions(ASSETS / "mmlu" / "test").questions
    assert [(q.choices, q.answer) for q in from_json.questions] == [(q.choices, q.answer) for q in csv_q]


def test_mmlu_parquet_and_header_csv(tmp_path):
    import pandas as pd

    pd.DataFrame({"question": ["2+2?"], "subject": ["math"], "choices": [["3", "4", "5", "6"]],
                  "answer": [1]}).to_parquet(tmp_path / "m.parquet")
    (tmp_path / "h.csv").write_text("question,A,B,C,answer,subject\nRed?,yes,no,maybe,A,colours\n")
    assert mc.load_questions(tmp_path / "m.parquet").questions == [mc.Question("2+2?", ("3", "4", "5", "6"), 1, "math")]
    assert mc.load_questions(tmp_path / "h.csv").questions == [mc.Question("Red?", ("yes", "no", "maybe"), 0, "colours")]


@pytest.mark.parametrize("name,content,message", [
    ("x.csv", "only,two\n", "expected MMLU rows"),
    ("x_test.csv", "Q?,a,b,c,d,4\n", "answer index 4 outside the 4 choices"),
    ("x.csv", "question,foo,answer\nq,1,A\n", "header CSV needs the columns"),
    ("x.json", "{not json", "neither JSON nor JSON lines"),
    ("x.json", '[{"question": "q", "choices": ["a"]}]', "mc1_targets"),
    ("x.json", '[{"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]}}]', "exactly one label 1"),
    ("x.bin", b"\x05\x00\x00\x00\x08\x00", "bad task count"),
    ("x.parquet", b"PAR1 not really", "not a readable parquet"),
    ("x.txt", "hello", "expected .csv, .parquet"),
])
def test_bad_multiple_choice_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(HarnessError, match=message):
        mc.load_questions(path)


# -- summarization -------------------------------------------------------------------------------
def test_oracle_summaries_score_rouge_100_and_are_capped_at_300_tokens(tok):
    docs = summ.load_documents(ASSETS / "wikilingua_demo.json")
    assert len(docs) == 8
    answers = {tuple(tok.encode(summ.DEFAULT_TEMPLATE.replace("{document}", d.document))):
               tok.encode(" " + d.reference, bos=False) for d in docs}
    oracle = ScriptedBackend(answers=answers, params=GenerationParams(max_new_tokens=300))
    result, samples = summ.summarize(oracle, tok, docs, batch_size=3, progress=False)
    assert result.rouge1 == pytest.approx(100.0) and result.rougeL == pytest.approx(100.0)
    assert result.documents_per_second > 0 and result.n_failed == 0
    assert [s["summary"] for s in samples] == [d.reference for d in docs]

    long = ScriptedBackend(answers={k: v * 50 for k, v in answers.items()}, params=GenerationParams(max_new_tokens=300))
    result, samples = summ.summarize(long, tok, docs[:2], progress=False)
    assert [s["output_tokens"] for s in samples] == [300, 300] and result.rouge1 < 100


def test_summarization_formats(tmp_path):
    (tmp_path / "gem.jsonl").write_text('{"source": "Doc one.", "target": "Sum one."}\n'
                                        '{"source": "Doc two.", "target": "Sum two."}\n')
    (tmp_path / "orig.json").write_text(json.dumps({"https://x/a": {"Step 1": {"document": "D", "summary": "S"}}}))
    assert [d.reference for d in summ.load_documents(tmp_path / "gem.jsonl")] == ["Sum one.", "Sum two."]
    assert summ.load_documents(tmp_path / "orig.json") == [summ.Document("https://x/a#Step 1", "D", "S")]
    (tmp_path / "bad.json").write_text('[{"text": "no summary"}]')
    with pytest.raises(HarnessError, match="needs \"document\" and \"summary\""):
        summ.load_documents(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(HarnessError, match="is empty"):
        summ.load_documents(tmp_path / "empty.json")


# -- command line --------------------------------------------------------------------------------
def test_cli_summarization_with_null_backend_writes_results_once(tmp_path):
    out = tmp_path / "run"
    args = ["summarization", "--backend", "null", "--backend-arg", "tokens=1000", "--limit", "3",
            "--output-dir", str(out), "--no-progress"]
    path = run(args)
    results = json.loads(path.read_text())
    assert {"kind", "task", "backend", "model", "dataset", "metrics", "environment", "started",
            "finished"} <= set(results)
    assert results["kind"] == "task" and results["task"] == "summarization"
    assert results["backend"]["backend"] == "null" and results["backend"]["max_new_tokens"] == 300
    m = results["metrics"]
    assert m["n_documents"] == 3 and m["output_tokens"] == 900 and m["documents_per_second"] > 0
    before = path.read_bytes()
    with pytest.raises(HarnessError, match="already exists"):
        run(args)
    assert path.read_bytes() == before


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tasks", "multiple-choice", "--dataset-path",
                           str(tmp_path / "missing.csv"), "--output-dir", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: multiple-choice file not found: {tmp_path / 'missing.csv'}"
    with pytest.raises(HarnessError, match="cannot score tokens"):
        run(["perplexity", "--backend", "null", "--ctx-size", "64", "--output-dir", str(tmp_path / "p")])
    assert not (tmp_path / "p" / "results.json").exists()
    with pytest.raises(HarnessError, match="--num-fewshot needs --fewshot-path"):
        run(["multiple-choice", "--num-fewshot", "5", "--output-dir", str(tmp_path / "m")])
    with pytest.raises(HarnessError, match="text file not found"):
        run(["perplexity", "--dataset-path", str(tmp_path / "nope.txt"), "--output-dir", str(tmp_path / "q")])


# -- real models (embedded Gemma 3 270M GGUF) ----------------------------------------------------
def _llama_cpp_reference_perplexity(model_path: str, text: str, n_ctx: int, n_tokens: int) -> tuple[float, int]:
    """llama-perplexity's computation written directly against llama_cpp: tokenize with BOS,
    non-overlapping n_ctx chunks with BOS as first token, NLL of the second half of each."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                          verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=True)[:n_tokens]
    nll = []
    for i in range(len(tokens) // n_ctx):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        first = n_ctx // 2   # logits at first..n_ctx-2 predict tokens first+1..n_ctx-1
        logits = np.asarray(llm.scores[first:n_ctx - 1], dtype=np.float64)
        top = logits.max(axis=1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        nll.extend(lse[k] - logits[k, chunk[first + k + 1]] for k in range(n_ctx - 1 - first))
    llm.close()
    return math.exp(sum(nll) / len(nll)), len(nll)


@pytest.fixture(scope="module")
def gemma_llamacpp():
    # One thread: on a shared 2-core machine llama.cpp's threads wait on each other far longer
    # than the few hundred tokens here take to compute.
    backend = BackendSpec("llamacpp", options={"n_ctx": "96", "n_threads": "1"}).open(
        GenerationParams(max_new_tokens=8))
    yield backend
    backend.close()


CTX, N_TOKENS = 64, 128   # two chunks: a few hundred tokens of work per backend


@pytest.fixture(scope="module")
def llamacpp_ppl(tok, gemma_llamacpp):
    ids = tok.encode((ASSETS / "prose.txt").read_text())[:N_TOKENS]
    return ppl.perplexity(gemma_llamacpp, ids, CTX, "chunks", bos_id=tok.bos_id, progress=False)


@pytest.mark.slow
def test_llamacpp_perplexity_within_1_percent_of_llama_cpp_reference(gemma_llamacpp, llamacpp_ppl):
    text = (ASSETS / "prose.txt").read_text()
    ref, n_ref = _llama_cpp_reference_perplexity(gemma_llamacpp.model_path, text, CTX, N_TOKENS)
    print(f"perplexity: tasks {llamacpp_ppl.perplexity:.4f}, llama.cpp reference {ref:.4f}")
    assert llamacpp_ppl.n_scored_tokens == n_ref == 2 * (CTX - 1 - CTX // 2)
    assert llamacpp_ppl.perplexity == pytest.approx(ref, rel=0.01)
    assert 1 < llamacpp_ppl.perplexity < 1000


@pytest.mark.slow
def test_greedy_continuation_wins_multiple_choice(tok, gemma_llamacpp):
    question = "The capital city of France is"
    continuation = gemma_llamacpp.generate([tok.encode(question)])[0]
    answer = tok.decode(continuation).strip()
    assert answer
    choices = ("a small wooden boat with red sails", answer, "seventeen purple elephants", "under the kitchen table")
    result, samples = mc.evaluate(gemma_llamacpp, tok, [mc.Question(question, choices, 1)], "text", progress=False)
    assert samples[0]["predicted"] == 1, (answer, samples[0]["scores"])


@pytest.mark.slow
def test_hf_float32_and_llamacpp_perplexity_agree(tok, llamacpp_ppl):
    ids = tok.encode((ASSETS / "prose.txt").read_text())[:N_TOKENS]
    hf = BackendSpec("hf", dtype="float32").open(GenerationParams(max_new_tokens=1))
    try:
        from_hf = ppl.perplexity(hf, ids, CTX, "chunks", bos_id=tok.bos_id, progress=False)
    finally:
        hf.close()
    print(f"perplexity: hf float32 {from_hf.perplexity:.4f}, llamacpp {llamacpp_ppl.perplexity:.4f}")
    # The hf backend runs the GGUF's Q4_K_M weights dequantized to float32; llama.cpp multiplies
    # them quantized (with 8-bit activations), so the two differ by rounding only.
    assert from_hf.n_scored_tokens == llamacpp_ppl.n_scored_tokens
    assert from_hf.perplexity == pytest.approx(llamacpp_ppl.perplexity, rel=0.03)


@pytest.fixture(scope="module")
def tiny_hf_checkpoint(tmp_path_factory):
    """A 2-layer random Llama and a byte-level BPE tokenizer (BOS first) built in-process."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([(ASSETS / "prose.txt").read_text()], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_hf_checkpoint_folder_perplexity_equals_direct_torch_computation(tiny_hf_checkpoint):
    import torch
    from transformers import AutoModelForCausalLM

    tok = TaskTokenizer(str(tiny_hf_checkpoint))
    ids = tok.encode((ASSETS / "prose.txt").read_text())[:200]
    assert tok.bos_id == 1 and ids[0] == 1 and tok.decode(ids[1:40]).startswith("The Lighthouse Keeper's Ledger")
    backend = BackendSpec("hf", model_path=str(tiny_hf_checkpoint)).open(GenerationParams(max_new_tokens=1))
    try:
        ours = ppl.perplexity(backend, ids, 64, "sliding", stride=32, bos_id=tok.bos_id, progress=False)
    finally:
        backend.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_checkpoint, dtype=torch.float32).eval()
    nll = []
    for w in ppl.plan_windows(len(ids), 64, "sliding", 32):
        window = torch.tensor([[1] + ids[w.start + 1:w.end]])
        with torch.no_grad():
            logp = torch.log_softmax(model(window).logits[0].double(), dim=-1)
        nll += [-logp[j - 1, window[0, j]].item() for j in range(w.first_scored, w.end - w.start)]
    assert ours.n_scored_tokens == len(nll) == len(ids) - 1
    assert ours.perplexity == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)


@pytest.mark.slow
def test_cli_perplexity_fakequant_int4_on_checkpoint_folder(tiny_hf_checkpoint, tmp_path):
    (tmp_path / "int4.yaml").write_text("name: w4\nweights:\n  bits: 4\n  granularity: per_channel\n")
    (tmp_path / "text.txt").write_text((ASSETS / "prose.txt").read_text()[:1200])
    runs = {}
    for name, extra in (("hf", []), ("fakequant", ["--quant-config", str(tmp_path / "int4.yaml")])):
        path = run(["perplexity", "--backend", name, "--model-path", str(tiny_hf_checkpoint), "--ctx-size", "64",
                    "--dataset-path", str(tmp_path / "text.txt"), "--output-dir", str(tmp_path / name),
                    "--no-progress", *extra])
        runs[name] = json.loads(path.read_text())
    assert runs["fakequant"]["backend"]["backend"] == "fakequant"
    full, int4 = (runs[n]["metrics"]["perplexity"] for n in ("hf", "fakequant"))
    print(f"perplexity of the tiny random model: float32 {full:.3f}, int4 weights {int4:.3f}")
    # Rounding weights to 4 bits moves every log-prob of the random model a little.
    assert full != int4 and int4 == pytest.approx(full, rel=0.2)


def test_demo_files_exist_for_every_task(tok):
    assert all(DEMO[task].exists() for task in DEMO)
    # Enough text for llama-perplexity's default context of 512 (it needs 2 * 512 tokens).
    assert len(tok.encode((ASSETS / "prose.txt").read_text())) >= 1024
