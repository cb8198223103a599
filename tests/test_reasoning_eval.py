"""evaluation.py --benchmark: a reasoning benchmark's accuracy log graded end to end (the embedded
model's real tokenizer, the shipped demo set, real sandboxed code runs), and the data set readers."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

import evaluation
from accuracy import sandbox
from inputs import reasoning as data
from inputs.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "reasoning_demo" / "deepseek-r1.jsonl"
# the submission checker's patterns (tools/submission/submission_checker/constants.py ACC_PATTERN)
EXACT_MATCH = r".*'exact_match':\s([\d.]+).*"
TOKENS = r".*'tokens_per_sample':\s([\d.]+).*"

ANSWERS = {  # demo row -> output; rows 1, 5 and 9 are wrong
    0: "<think>maybe ANSWER: A</think>\nANSWER: C", 1: "ANSWER: A", 2: "ANSWER: B", 3: "Final answer: C",
    4: "so \\boxed{0.75}", 5: "\\boxed{2}", 6: "<think>\\boxed{20}</think> \\boxed{24}", 7: "Answer: 24",
    8: "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
    9: "```python\nimport os\nos.fork()\nprint(input())\n```",
}


def write_log(path: Path, tokenizer, answers: dict[int, str]) -> None:
    entries = [{"seq_id": n, "qsl_idx": idx, "token_count": 0,
                "data": np.asarray(tokenizer.encode(text, add_special_tokens=False), np.int32).tobytes().hex()}
                for n, (idx, text) in enumerate(answers.items())]
    path.write_text(json.dumps(entries))


@pytest.mark.skipif(not sandbox.available(), reason="the livecodebench rows need the code sandbox")
def test_demo_accuracy_log_graded_with_checker_line(tmp_path, capsys):
    log = tmp_path / "mlperf_log_accuracy.json"
    write_log(log, load_tokenizer(None), ANSWERS)
    rc = evaluation.main(["--mlperf-accuracy-file", str(log), "--dataset-file", str(DEMO),
                          "--benchmark", "deepseek-r1", "--num-workers", "2"])
    assert rc == 1  # 70% is below 99% of 81.3582, and 10-token answers far from 3,886 tokens
    text = (tmp_path / "accuracy.txt").read_text()
    assert float(re.match(EXACT_MATCH, text.replace("\n", " ")).group(1)) == pytest.approx(70.0)
    assert float(re.match(TOKENS, text.replace("\n", " ")).group(1)) > 0
    summary = json.loads((tmp_path / "accuracy.json").read_text())
    assert summary["per_dataset"]["livecodebench"] == {"right": 1, "total": 2}
    assert summary["per_dataset"]["gpqa"] == {"right": 1, "total": 2}
    assert summary["per_dataset"]["aime1983"] == {"right": 2, "total": 2}
    assert "exact_match 70.0000: FAIL" in capsys.readouterr().out
    # a second evaluation never overwrites the first
    evaluation.main(["--mlperf-accuracy-file", str(log), "--dataset-file", str(DEMO), "--benchmark", "deepseek-r1"])
    assert (tmp_path / "accuracy.1.txt").exists() and (tmp_path / "accuracy.txt").read_text() == text


def test_missing_columns_and_bad_tests_are_one_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"dataset": "math500", "question": "q"}) + "\n")
    with pytest.raises(evaluation.HarnessError, match="lacks column.*ground_truth.*text_input"):
        data.read(str(bad))
    bad.write_text(json.dumps({"dataset": "livecodebench", "ground_truth": "q1", "text_input": "t",
                               "tests": "[{\"in\": 1}]"}) + "\n")
    with pytest.raises(evaluation.HarnessError, match="row 0: tests must be a JSON list"):
        data.code_tests(data.read(str(bad)))


def test_demo_sets_cover_every_sub_dataset_and_tokenize():
    for name, sub in (("deepseek-r1", "aime1983"), ("gpt-oss-120b", "aime25")):
        df = data.read(str(ROOT / "assets" / "reasoning_demo" / f"{name}.jsonl"))
        assert {sub, "math500", "mmlu_pro"} <= set(df["dataset"])
        assert len(data.code_tests(df)) == 2
        ids = data.prompt_ids(df, load_tokenizer(None))
        assert len(ids) == len(df) and all(len(i) > 10 for i in ids)


def test_cli_writes_tok_input_pickle_never_over_a_file(tmp_path):
    out = tmp_path / "demo.pkl"
    assert data.main(["--input", str(DEMO), "--output", str(out)]) == 0
    from common.tables import read_table
    df = read_table(out, "dataset")
    assert len(df) == 10 and all(len(i) == n for i, n in zip(df["tok_input"], df["tok_input_length"]))
    with pytest.raises(evaluation.HarnessError, match="exists already"):
        data.main(["--input", str(DEMO), "--output", str(out)])


def test_demo_set_runs_through_main_and_loadgen_then_grades(tmp_path):
    """The shipped jsonl (text_input only) through main.py and real LoadGen on the null backend,
    tokenized at load by the embedded model's tokenizer, then graded: the table comes out."""
    from helpers import run_main

    out = tmp_path / "run"
    p = run_main("--backend", "null", "--dataset-path", str(DEMO), "--lg-model-name", "deepseek-r1", "--accuracy",
                 "--max-new-tokens", "8", "--backend-arg", "tokens=8", "--output-log-dir", str(out), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rc = evaluation.main(["--mlperf-accuracy-file", str(out / "mlperf_log_accuracy.json"), "--dataset-file", str(DEMO),
                          "--benchmark", "deepseek-r1"])
    assert rc == 1
    text = (out / "accuracy.txt").read_text().replace("\n", " ")
    assert float(re.match(EXACT_MATCH, text).group(1)) == 0.0
    assert float(re.match(TOKENS, text).group(1)) == 8.0
