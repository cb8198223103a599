"""processcnndm.py (the llama3.1-8b CNN-DailyMail set from a local file), the reference's JSON
array read back by dataset.py, and evaluation.py on such a set. Real tokenizers: a tiny BPE one
trained in-process, and the embedded Gemma GGUF's for the shipped demo."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evaluation
import processcnndm
from common.errors import HarnessError
from common.tables import read_table
from dataset import Dataset

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "cnndm_demo" / "cnn_dailymail_demo.jsonl"

ARTICLES = [f"Story {i}: the council of town {i} met on day {i} and agreed to build {i} new bridges." for i in range(9)]
HIGHLIGHTS = [f"Town {i} will build {i} bridges." for i in range(9)]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A byte-level BPE tokenizer trained in-process, saved as a checkpoint folder; it adds a BOS
    in front as Llama 3.1's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    template = processcnndm.INSTRUCTION_TEMPLATE[processcnndm.INSTRUCTION]
    tok.train_from_iterator(ARTICLES + HIGHLIGHTS + [template], trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    path = tmp_path_factory.mktemp("tok")
    hf.save_pretrained(path)
    return str(path), hf


@pytest.fixture
def split(tmp_path):
    path = tmp_path / "validation.jsonl"
    path.write_text("".join(json.dumps({"id": f"x{i}", "article": a, "highlights": h}) + "\n"
                            for i, (a, h) in enumerate(zip(ARTICLES, HIGHLIGHTS))))
    return path


def _tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "processcnndm.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_reference_records_prompt_and_tokens(tmp_path, split, tok_dir):
    path, tok = tok_dir
    p = _tool("--dataset-path", split, "--model-id", path, "--export-dir", tmp_path / "out")
    assert p.returncode == 0, p.stderr[-2000:]
    records = json.loads((tmp_path / "out" / "cnn_eval.json").read_text())  # one JSON array, as the reference's
    assert [list(r) for r in records] == [["instruction", "input", "tok_input", "output"]] * len(ARTICLES)
    template = records[0]["instruction"]["llama"]
    assert template.startswith("Summarize the following news article in 128 tokens.") and "{input}" in template
    for r, article, summary in zip(records, ARTICLES, HIGHLIGHTS):
        assert r["input"] == article and r["output"] == summary
        # the tokenizer's own encoding of the filled template, BOS first, no chat template
        assert r["tok_input"] == tok.encode(template.format_map({"input": article}))
        assert r["tok_input"][0] == tok.bos_token_id
    # the parquet beside it is the same table; dataset.py reads both
    as_json, as_parquet = (read_table(tmp_path / "out" / f"cnn_eval.{s}") for s in ("json", "parquet"))
    assert as_json.to_dict("records") == as_parquet.to_dict("records")
    ds = Dataset(str(tmp_path / "out" / "cnn_eval.json"))
    assert ds.input_ids == [r["tok_input"] for r in records]


def test_n_samples_follows_the_reference_shuffle(tmp_path, split, tok_dir):
    """datasets' shuffle(seed=42) is numpy's default_rng(42).permutation; the first n are kept."""
    p = _tool("--dataset-path", split, "--model-id", tok_dir[0], "--export-dir", tmp_path / "out", "--n-samples", 4)
    assert p.returncode == 0, p.stderr[-2000:]
    records = json.loads((tmp_path / "out" / "cnn_eval_4.json").read_text())
    order = np.random.default_rng(42).permutation(len(ARTICLES))[:4]
    assert [r["input"] for r in records] == [ARTICLES[i] for i in order]


@pytest.mark.parametrize("extra, content, message", [
    ((), '{"id": "a", "story": "x", "highlights": "y"}\n', "lacks column(s) article"),
    ((), '{"id": "a", "article": null, "highlights": "y"}\n', "column article of row 0 is None, not text"),
    (("--n-samples", "5"), '{"article": "x", "highlights": "y"}\n', "--n-samples must be between 1 and the 1 rows"),
])
def test_bad_input_is_one_error_line_and_nothing_written(tmp_path, tok_dir, extra, content, message):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    p = _tool("--dataset-path", src, "--model-id", tok_dir[0], "--export-dir", tmp_path / "out", *extra)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_existing_data_set_is_never_replaced(tmp_path, split, tok_dir):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cnn_eval.json").write_text("earlier")
    p = _tool("--dataset-path", split, "--model-id", tok_dir[0], "--export-dir", tmp_path / "out")
    assert p.returncode == 2 and "exists already" in p.stderr
    assert (tmp_path / "out" / "cnn_eval.json").read_text() == "earlier"
    assert not (tmp_path / "out" / "cnn_eval.parquet").exists()


def test_json_array_that_is_not_records_is_refused(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text("[1, 2]")
    with pytest.raises(HarnessError, match="expected an array of objects"):
        read_table(bad, "dataset")


def test_shipped_demo_set(tmp_path):
    """The demo file has the split's columns; the embedded model's tokenizer builds it (what main.py
    runs for --lg-model-name llama3_1-8b without --dataset-path)."""
    pytest.importorskip("llama_cpp")
    rows = [json.loads(line) for line in DEMO.read_text().splitlines()]
    assert len(rows) >= 24 and all(set(r) == {"id", "article", "highlights"} for r in rows)
    assert len({r["article"] for r in rows}) == len(rows)
    from inputs.demo import CNNDM_DEMO, default_dataset_path
    path = default_dataset_path(None, export_root=str(tmp_path), demo=CNNDM_DEMO)
    assert Dataset(path).total_sample_count == len(rows)


def test_evaluation_scores_a_cnn_set_as_the_llama31_reference(tmp_path, split, tok_dir, capsys):
    """ROUGE-1/2/L/Lsum, gen_len in characters and gen_num; targets from the registry for a
    Llama-3.1-8B checkpoint name, recorded ones with ROUGE-Lsum and gen_len for another model."""
    path, tok = tok_dir
    assert _tool("--dataset-path", split, "--model-id", path, "--export-dir", tmp_path / "out").returncode == 0
    data = tmp_path / "out" / "cnn_eval.json"
    answers = [h if i % 2 else "Nothing to see." for i, h in enumerate(HIGHLIGHTS)]
    entries = [{"seq_id": i, "qsl_idx": i, "data": np.array(tok.encode(a) + [tok.eos_token_id], np.int32)
                .tobytes().hex(), "token_count": 0} for i, a in enumerate(answers)]
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps(entries))
    args = ["--checkpoint-path", path, "--mlperf-accuracy-file", str(log), "--dataset-file", str(data),
            "--num-workers", "1"]
    assert evaluation.main(args + ["--targets-file", str(tmp_path / "t.yaml"), "--record-targets", "tiny-cnn"]) == 0
    result = eval(capsys.readouterr().out.split("Results\n\n")[1].splitlines()[0])
    assert result["gen_num"] == len(answers) and result["gen_len"] == sum(len(a) for a in answers)
    assert 0 < result["rouge1"] < 100 and "rougeLsum" in result
    from accuracy.targets import load_targets
    assert set(load_targets(tmp_path / "t.yaml")["tiny-cnn"].metrics) == {"rouge1", "rouge2", "rougeL", "rougeLsum",
                                                                          "gen_len"}
    # a checkpoint named like Llama-3.1-8B is judged on the round's llama3.1-8b targets
    assert evaluation.default_model_name("/m/Llama-3.1-8B-Instruct") == "llama3_1-8b"
    assert evaluation.default_model_name(None, cnndm=True) == "gemma3-270m-q4_k_m-cnndm"
    assert evaluation.main(args + ["--model-name", "llama3_1-8b", "--log-dir", str(tmp_path / "e")]) == 1
    out = capsys.readouterr().out
    assert "rougeLsum" in out and "gen_len" in out and "99% level: FAIL" in out
