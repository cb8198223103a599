"""evaluation.py and its scoring modules: rouge_score parity, targets, output format, bad input."""
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rouge_score import rouge_scorer

import evaluation
from accuracy.rouge import ROUGE_TYPES, FastRougeScorer, lcs_length, lcs_ref_indices, score_pairs
from accuracy.sentences import newline_sentences, sent_tokenize
from accuracy.targets import ModelTargets, get_targets, load_targets
from common.errors import HarnessError

ROOT = Path(__file__).resolve().parent.parent

# The submission checker's patterns for llama2-70b (tools/submission/submission_checker.py ACC_PATTERN).
CHECKER_PATTERNS = {
    "rouge1": r".*'rouge1':\s([\d.]+).*",
    "rouge2": r".*'rouge2':\s([\d.]+).*",
    "rougeL": r".*'rougeL':\s([\d.]+).*",
    "rougeLsum": r".*'rougeLsum':\s([\d.]+).*",
    "gen_len": r".*'gen_len':\s([\d.]+).*",
    "tokens_per_sample": r".*'tokens_per_sample':\s([\d.]+).*",
}


def reference_scorer():
    # What evaluate.load("rouge").compute(..., use_stemmer=True, use_aggregator=False) builds.
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def generated_pairs(n, seed=0):
    """Summary-like (target, prediction) pairs with shared words, punctuation and newlines."""
    rng = random.Random(seed)
    words = ("the a of cats running runs ran model models answer answered question questions is was "
             "sentence sentences quickly 3 42 data mr dr. e.g. U.S. don't it's x-ray caf\u00e9 naive "
             "generation generated generating evaluate evaluation score scores").split()

    def text(k):
        return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 20)))
                        + rng.choice([".", "!", "?", ",", ""]) for _ in range(k))

    pairs = []
    for _ in range(n):
        target = text(rng.randint(0, 6))
        if rng.random() < 0.6:
            pred = " ".join(w if rng.random() < 0.6 else rng.choice(words) for w in target.split(" "))
        else:
            pred = text(rng.randint(0, 6))
        pairs.append((newline_sentences(target), newline_sentences(pred)))
    return pairs


# --- scoring: hand-checked cases and parity with rouge_score --------------------------------------

def test_stemming_matches_hand_computed_rouge1():
    # target tokens: the cat(s) are run(ning); prediction: a cat run(s) -> 2 common of 4 and 3
    s = FastRougeScorer().score("The cats are running.", "A cat runs")
    assert s.rouge1 == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert s.rouge1 == reference_scorer().score("The cats are running.", "A cat runs")["rouge1"].fmeasure
    assert s.rouge2 == 0.0  # no bigram in common


def test_empty_prediction_scores_zero():
    s = FastRougeScorer().score("Some reference text.", "")
    assert (s.rouge1, s.rouge2, s.rougeL, s.rougeLsum) == (0, 0, 0, 0)
    punct_only = FastRougeScorer().score("Some reference text.", "...\n!!")
    assert punct_only.rougeLsum == 0 and punct_only.rouge1 == 0


def test_identical_texts_score_one():
    text = "The first sentence.\nThe second one, with 42 words."
    s = FastRougeScorer().score(text, text)
    assert (s.rouge1, s.rouge2, s.rougeL, s.rougeLsum) == (1.0, 1.0, 1.0, 1.0)


def test_fast_scorer_equals_rouge_score_exactly():
    pairs = generated_pairs(300)
    ref = reference_scorer()
    fast = FastRougeScorer()
    for target, pred in pairs:
        want = ref.score(target, pred)
        got = fast.score(target, pred)
        for k in ROUGE_TYPES:
            assert getattr(got, k) == want[k].fmeasure, (k, target, pred)


def test_multiprocess_scores_equal_in_process_scores():
    pairs = generated_pairs(450, seed=1)
    targets, preds = zip(*pairs)
    assert score_pairs(list(targets), list(preds), num_workers=2) == score_pairs(list(targets), list(preds), num_workers=1)


def test_lcs_backtrack_picks_the_same_subsequence_as_rouge_score():
    rng = random.Random(3)
    for _ in range(500):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 15))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 15))]
        assert lcs_ref_indices(a, b) == rouge_scorer.lcs_ind(a, b)
        assert lcs_length(a, b) == (rouge_scorer._lcs_table(a, b)[-1][-1] if a and b else 0)


def test_sentence_splitting_changes_only_rougelsum():
    fast = FastRougeScorer()
    for target, pred in generated_pairs(100, seed=2):
        split = fast.score(target, pred)
        joined = fast.score(target.replace("\n", " "), pred.replace("\n", " "))
        assert (split.rouge1, split.rouge2, split.rougeL) == (joined.rouge1, joined.rouge2, joined.rougeL)


def test_sentence_splitter_is_punkt_english():
    assert sent_tokenize("Dr. Smith went home. He was tired.") == ["Dr. Smith went home.", "He was tired."]
    assert newline_sentences("  Mr. Brown paid $3.50 at 5 p.m. yesterday. It rained!  ") == \
        "Mr. Brown paid $3.50 at 5 p.m. yesterday.\nIt rained!"
    import punkt  # the package's own Punkt implementation, same English model
    text = "I saw Mt. Fuji in Jan. 2020. It was e.g. nice? Yes. The U.S. Army came. (Really.) OK."
    assert sent_tokenize(text) == punkt.sent_tokenize(text)


# --- targets and the printed format ---------------------------------------------------------------

LLAMA = ModelTargets("llama2-70b", {"rouge1": 44.4312, "rouge2": 22.0352, "rougeL": 28.6162,
                                    "tokens_per_sample": 294.45}, "test")


def result_with(**over):
    base = {"rouge1": 44.4312, "rouge2": 22.0352, "rougeL": 28.6162, "rougeLsum": 40.0,
            "gen_len": 1000, "gen_num": 10, "gen_tok_len": 2945, "tokens_per_sample": 294.5}
    base.update(over)
    return base


def test_threshold_boundaries():
    assert LLAMA.check(result_with(), "99.9").passed
    assert LLAMA.check(result_with(rouge1=44.4312 * 0.99), "99").passed  # equal passes (>=)
    assert not LLAMA.check(result_with(rouge1=round(44.4312 * 0.99, 4) - 0.0001), "99").passed
    assert LLAMA.check(result_with(rouge2=22.0352 * 0.999), "99.9").passed
    assert not LLAMA.check(result_with(rouge2=22.0352 * 0.995), "99.9").passed
    assert LLAMA.check(result_with(rouge2=22.0352 * 0.995), "99").passed
    assert LLAMA.check(result_with(tokens_per_sample=294.45 * 0.9), "99").passed
    assert LLAMA.check(result_with(tokens_per_sample=294.45 * 1.1), "99.9").passed
    assert not LLAMA.check(result_with(tokens_per_sample=265.0), "99").passed  # < 265.005
    assert not LLAMA.check(result_with(tokens_per_sample=324.0), "99").passed  # > 323.895
    failed = [c.metric for c in LLAMA.check(result_with(rougeL=1.0, tokens_per_sample=400.0), "99").checks
              if not c.passed]
    assert failed == ["rougeL", "tokens_per_sample"]


def test_repository_targets_file_leaves_the_mlperf_models_to_the_registry():
    assert "llama2-70b" not in load_targets(ROOT / "accuracy_targets.yaml")  # mlsubmit/registry.py has them
    with pytest.raises(HarnessError, match="no accuracy targets for model 'nope'"):
        get_targets("nope", ROOT / "accuracy_targets.yaml")


def test_default_model_name():
    assert evaluation.default_model_name(None) == "gemma3-270m-q4_k_m"
    assert evaluation.default_model_name("/models/Llama-2-70b-chat-hf/") == "llama2-70b"
    assert evaluation.default_model_name("/m/my-model.gguf") == "my-model"


def test_printed_dict_is_parsed_by_the_submission_checker_patterns():
    scores = FastRougeScorer()
    preds = ["The cat sat.", "A dog ran home."]
    s = [scores.score("The cat sat down.", preds[0]), scores.score("The dog ran.", preds[1])]
    result = evaluation.summarize(s, preds, gen_tok_len=9)
    line = str(result)
    assert list(result) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "gen_num", "gen_tok_len",
                            "tokens_per_sample"]
    assert line.startswith("{'rouge1': ") and "np." not in line
    for key, pattern in CHECKER_PATTERNS.items():
        assert float(re.match(pattern, line).group(1)) == pytest.approx(result[key])
    assert result["tokens_per_sample"] == 4.5 and result["gen_num"] == 2 and result["gen_len"] == 27
    assert result["rouge1"] == round(np.mean([x.rouge1 for x in s]) * 100, 4)


# --- end to end -----------------------------------------------------------------------------------

REFERENCES = [
    "The cat sat on the mat. It was a sunny day.",
    "Paris is the capital of France. It is known for the Eiffel Tower.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Dr. Smith answered the question quickly. The answer was correct.",
]
ANSWERS = [
    "A cat sat on a mat. The day was sunny.",
    "The capital of France is Paris.",
    "Water boils at 100 degrees.",
    "",
]


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    """A byte-level BPE tokenizer trained in-process on the test texts, saved as a checkpoint folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(REFERENCES + ANSWERS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    path = tmp_path_factory.mktemp("tok")
    hf.save_pretrained(path)
    return str(path), hf


@pytest.fixture
def run_dir(tmp_path, tiny_tokenizer_dir):
    _, tok = tiny_tokenizer_dir
    df = pd.DataFrame({"id": [f"s{i}" for i in range(len(REFERENCES))], "system_prompt": "", "question": "q",
                       "output": REFERENCES, "input": "q", "tok_input": [[1, 5, 6]] * len(REFERENCES),
                       "tok_output": [tok.encode(r) for r in REFERENCES], "origin": "test",
                       "tok_input_length": 3, "tok_output_length": [len(tok.encode(r)) for r in REFERENCES]})
    df.to_pickle(tmp_path / "dataset.pkl")
    return tmp_path


def write_log(path, answers_by_qsl, tok, dtype=np.int32, eos=True):
    entries = []
    for seq, (qsl, text) in enumerate(answers_by_qsl):
        ids = tok.encode(text) + ([tok.eos_token_id] if eos else [])
        entries.append({"seq_id": seq, "qsl_idx": qsl, "data": np.array(ids, dtype).tobytes().hex().upper(),
                        "token_count": len(ids)})
    path.write_text(json.dumps(entries))
    return path


def run_eval(run_dir, tok_dir, *extra):
    return evaluation.main(["--checkpoint-path", tok_dir, "--mlperf-accuracy-file", str(run_dir / "mlperf_log_accuracy.json"),
                            "--dataset-file", str(run_dir / "dataset.pkl"), "--targets-file",
                            str(run_dir / "targets.yaml"), "--num-workers", "1", *extra])


def test_end_to_end_record_check_and_outputs(run_dir, tiny_tokenizer_dir, capsys):
    tok_dir, tok = tiny_tokenizer_dir
    # qsl 2 appears twice: the first response wins, the second (garbage) is ignored
    write_log(run_dir / "mlperf_log_accuracy.json",
              [(0, ANSWERS[0]), (2, ANSWERS[2]), (1, ANSWERS[1]), (2, "Completely different words here"), (3, ANSWERS[3])],
              tok)
    assert run_eval(run_dir, tok_dir, "--record-targets", "tiny") == 0
    out = capsys.readouterr().out
    result = eval(out.split("Results\n\n")[1].splitlines()[0])  # the printed dict is a Python literal
    ref = reference_scorer()
    preds = [newline_sentences(a) for a in ANSWERS]
    refs = [newline_sentences(r) for r in REFERENCES]
    for k in ROUGE_TYPES:
        want = round(np.mean([ref.score(refs[i], preds[i])[k].fmeasure for i in (0, 2, 1, 3)]) * 100, 4)
        assert result[k] == want
    n_ids = sum(len(tok.encode(a)) + 1 for a in ANSWERS)
    assert result["gen_num"] == 4 and result["gen_tok_len"] == n_ids
    assert result["tokens_per_sample"] == round(n_ids / 4, 1)
    assert result["gen_len"] == sum(len(p) for p in preds)
    assert load_targets(run_dir / "targets.yaml")["tiny"].metrics["rouge1"] == result["rouge1"]

    # checking against the recorded targets passes; outputs land next to the log, never overwritten
    assert run_eval(run_dir, tok_dir, "--model-name", "tiny", "--per-sample-csv", str(run_dir / "s.csv")) == 0
    assert run_eval(run_dir, tok_dir, "--model-name", "tiny") == 0
    txt = (run_dir / "accuracy.txt").read_text()
    assert re.search(r"^hash=[0-9a-f]{64}$", txt, re.M)
    assert float(re.match(CHECKER_PATTERNS["rouge1"], [ln for ln in txt.splitlines() if "'rouge1'" in ln][0]).group(1)) \
        == result["rouge1"]
    assert (run_dir / "accuracy.1.txt").exists() and (run_dir / "accuracy.2.json").exists()  # 3 runs, 3 names
    summary = json.loads((run_dir / "accuracy.json").read_text())
    assert summary["passed"] == {"99": True, "99.9": True} and summary["result"] == result
    rows = pd.read_csv(run_dir / "s.csv", keep_default_na=False)
    assert list(rows["qsl_idx"]) == [0, 2, 1, 3] and rows["gen_output_text"].iloc[1] == ANSWERS[2]

    # worse answers fail the recorded targets: exit status 1
    write_log(run_dir / "mlperf_log_accuracy.json", [(i, "nothing alike") for i in range(4)], tok)
    assert run_eval(run_dir, tok_dir, "--model-name", "tiny") == 1
    assert "99% level: FAIL" in capsys.readouterr().out
    with pytest.raises(HarnessError, match="already has targets for 'tiny'"):
        run_eval(run_dir, tok_dir, "--record-targets", "tiny")


def test_end_to_end_with_the_embedded_gguf_tokenizer(run_dir, capsys):
    """Default --checkpoint-path: ids of the embedded Gemma GGUF, decoded by llama.cpp's vocabulary."""
    pytest.importorskip("llama_cpp")
    from inputs.tokenizer import load_tokenizer
    tok = load_tokenizer(None)
    entries = []
    for qsl, text in enumerate(ANSWERS[:3]):
        ids = tok.encode(text, add_special_tokens=True) + [tok.eos_token_id]  # BOS and EOS are skipped in decoding
        entries.append({"seq_id": qsl, "qsl_idx": qsl, "data": np.array(ids, np.int32).tobytes().hex(),
                        "token_count": len(ids)})
    (run_dir / "mlperf_log_accuracy.json").write_text(json.dumps(entries))
    assert evaluation.main(["--mlperf-accuracy-file", str(run_dir / "mlperf_log_accuracy.json"), "--dataset-file",
                            str(run_dir / "dataset.pkl"), "--targets-file", str(run_dir / "t.yaml"),
                            "--record-targets", "gemma-test", "--num-workers", "1"]) == 0
    result = eval(capsys.readouterr().out.split("Results\n\n")[1].splitlines()[0])
    ref = reference_scorer()
    want = np.mean([ref.score(newline_sentences(REFERENCES[i]), newline_sentences(ANSWERS[i]))["rouge1"].fmeasure
                    for i in range(3)])
    assert result["rouge1"] == round(want * 100, 4)
    assert result["gen_tok_len"] == sum(len(tok.encode(a)) + 1 for a in ANSWERS[:3])


def test_int64_log_needs_dtype_int64(run_dir, tiny_tokenizer_dir):
    tok_dir, tok = tiny_tokenizer_dir
    write_log(run_dir / "mlperf_log_accuracy.json", list(enumerate(ANSWERS[:3])), tok, dtype=np.int64)
    with pytest.raises(HarnessError, match="looks like int64"):
        run_eval(run_dir, tok_dir, "--record-targets", "x")
    assert run_eval(run_dir, tok_dir, "--record-targets", "x", "--dtype", "int64") == 0


@pytest.mark.parametrize("content, message", [
    (None, "accuracy log not found"),
    ("", "is empty"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "01000000"', "is not valid JSON"),
    ("[]", "has no responses"),
    ('{"a": 1}', "expected a list"),
    ('[{"seq_id": 0, "qsl_idx": 9, "data": "01000000"}]', "qsl_idx 9 .*outside the dataset"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "010000"}]', "not a whole number of int32 ids"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "zz"}]', "hex 'data'"),
    ('[{"seq_id": 0, "qsl_idx": 5.7, "data": "01000000"}]', "entry 0: qsl_idx must be a non-negative integer, got 5.7"),
    ('[{"seq_id": 0, "qsl_idx": true, "data": "01000000"}]', "entry 0: qsl_idx must be a non-negative integer, got true"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "01000000"}, [1]]', r"entry 1: expected a JSON object, got \[1\]"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "FFFFFF7F"}]', "outside the tokenizer's vocabulary"),
])
def test_bad_accuracy_log(run_dir, tiny_tokenizer_dir, content, message):
    if content is not None:
        (run_dir / "mlperf_log_accuracy.json").write_text(content)
    with pytest.raises(HarnessError, match=message):
        run_eval(run_dir, tiny_tokenizer_dir[0], "--record-targets", "x")


def test_a_missing_reference_answer_is_refused_not_scored_as_text(run_dir, tiny_tokenizer_dir):
    """A None (or NaN) 'output' would otherwise be scored as the word "None"."""
    _, tok = tiny_tokenizer_dir
    df = pd.read_pickle(run_dir / "dataset.pkl")
    df.loc[1, "output"] = None
    df.to_pickle(run_dir / "dataset.pkl")
    write_log(run_dir / "mlperf_log_accuracy.json", [(0, ANSWERS[0]), (1, ANSWERS[1])], tok)
    with pytest.raises(HarnessError, match="the .output. of sample 1 is (None|nan), not text \\(1 such samples\\)"):
        run_eval(run_dir, tiny_tokenizer_dir[0], "--record-targets", "x")


def test_cli_unknown_model_name_is_one_error_line(run_dir, tiny_tokenizer_dir):
    write_log(run_dir / "mlperf_log_accuracy.json", [(0, ANSWERS[0])], tiny_tokenizer_dir[1])
    proc = subprocess.run([sys.executable, str(ROOT / "evaluation.py"), "--mlperf-accuracy-file",
                           str(run_dir / "mlperf_log_accuracy.json"), "--dataset-file", str(run_dir / "dataset.pkl"),
                           "--checkpoint-path", tiny_tokenizer_dir[0], "--model-name", "no-such-model"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: no accuracy targets for model 'no-such-model'")


def test_model_without_targets_gets_scores_and_no_verdict(run_dir, tiny_tokenizer_dir, capsys):
    """A checkpoint with no recorded targets (name chosen from its folder): scores printed and
    written, 'no verdict', exit 0. An explicit unknown --model-name stays an error (a typo)."""
    tok_dir, tok = tiny_tokenizer_dir
    write_log(run_dir / "mlperf_log_accuracy.json", list(enumerate(ANSWERS)), tok)
    args = ["--checkpoint-path", tok_dir, "--mlperf-accuracy-file", str(run_dir / "mlperf_log_accuracy.json"),
            "--dataset-file", str(run_dir / "dataset.pkl"), "--num-workers", "1"]
    assert evaluation.main(args) == 0  # the project's targets file has none for this checkpoint
    out = capsys.readouterr().out
    result = eval(out.split("Results\n\n")[1].splitlines()[0])
    assert result["gen_num"] == 4 and result["rouge1"] > 0
    assert "no verdict" in out and "PASS" not in out and "FAIL" not in out
    summary = json.loads((run_dir / "accuracy.json").read_text())
    assert summary["result"] == result and summary["passed"] is None and summary["targets"] is None
    with pytest.raises(HarnessError, match="no accuracy targets for model 'nope'"):
        evaluation.main([*args, "--model-name", "nope"])


def test_recorded_targets_go_beside_the_run_not_into_the_project(run_dir, tiny_tokenizer_dir, capsys):
    tok_dir, tok = tiny_tokenizer_dir
    write_log(run_dir / "mlperf_log_accuracy.json", list(enumerate(ANSWERS)), tok)
    project_targets = (ROOT / "accuracy_targets.yaml").read_bytes()
    assert evaluation.main(["--checkpoint-path", tok_dir, "--mlperf-accuracy-file",
                            str(run_dir / "mlperf_log_accuracy.json"), "--dataset-file", str(run_dir / "dataset.pkl"),
                            "--num-workers", "1", "--record-targets", "mine"]) == 0
    assert (ROOT / "accuracy_targets.yaml").read_bytes() == project_targets
    recorded = load_targets(run_dir / "accuracy_targets.yaml")["mine"]
    assert f"in {run_dir / 'accuracy_targets.yaml'}" in capsys.readouterr().out
    # and they judge the next evaluation when named
    assert evaluation.main(["--checkpoint-path", tok_dir, "--mlperf-accuracy-file",
                            str(run_dir / "mlperf_log_accuracy.json"), "--dataset-file", str(run_dir / "dataset.pkl"),
                            "--num-workers", "1", "--targets-file", str(run_dir / "accuracy_targets.yaml"),
                            "--model-name", "mine"]) == 0
    assert "99% level: PASS" in capsys.readouterr().out and recorded.metrics["rouge1"] > 0


def test_sentencepiece_folder_decodes_as_the_reference_slow_tokenizer(tmp_path):
    """A Llama-2-style folder (tokenizer.model + the fast tokenizer): evaluation decodes with
    SentencePiece, as the reference's use_fast=False tokenizer does, also for a response cut
    inside a multi-byte character (where gen_len depends on the replacement characters written)."""
    import importlib.util
    import random

    import sentencepiece as spm

    from inputs.tokenizer import SentencePieceDecoder, load_decoder

    spec = importlib.util.spec_from_file_location("processorca_speed", ROOT / "benchmarks" / "processorca_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = random.Random(0)
    words = "the answer question step total number people water city because".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "." for _ in range(2000)]
    folder = tmp_path / "llama-like"
    folder.mkdir()
    bench.train_sentencepiece(folder / "tokenizer.model", lines, vocab_size=300)
    _, fast = bench.llama2_like_tokenizers(folder / "tokenizer.model")
    fast.save_pretrained(folder)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))

    decoder = load_decoder(str(folder))
    assert isinstance(decoder, SentencePieceDecoder)
    full = sp.encode("the answer \u4e2d\u6587 city")  # unseen CJK characters: byte-fallback pieces
    first_byte = next(i for i, t in enumerate(full) if sp.id_to_piece(t).startswith("<0x"))
    cut = full[:first_byte + 1] + [sp.eos_id()]  # one byte of a three-byte character, then EOS
    assert decoder.decode(cut) == sp.decode(full[:first_byte + 1])
    assert decoder.batch_decode([full])[0] == "the answer \u4e2d\u6587 city"
