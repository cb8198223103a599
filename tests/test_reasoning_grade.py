"""Exact-match grading of deepseek-r1 / gpt-oss-120b outputs. The expected grades in
tests/data/reasoning_official_grades.json were written by the reference graders of
mlcommons/inference run unchanged (benchmarks/reasoning_official_grades.py); ours must equal
them item by item."""
import json
from pathlib import Path

import pytest

from accuracy import reasoning
from common.errors import HarnessError

DATA = Path(__file__).parent / "data"
ITEMS = json.loads((DATA / "reasoning_outputs.json").read_text())
OFFICIAL = json.loads((DATA / "reasoning_official_grades.json").read_text())


@pytest.mark.parametrize("benchmark", reasoning.BENCHMARKS)
def test_grades_equal_the_reference_item_by_item(benchmark):
    graded = reasoning.grade(benchmark, [i["model_output"] for i in ITEMS], [i["ground_truth"] for i in ITEMS],
                             [i["dataset"] for i in ITEMS])
    official = OFFICIAL[benchmark]
    assert len(official) == len(graded) == len(ITEMS)
    differ = [(n, ITEMS[n]["model_output"][-60:], (g.extracted, g.correct), (o["extracted"], o["correct"]))
              for n, (g, o) in enumerate(zip(graded, official))
              if (g.extracted, g.correct) != (o["extracted"], o["correct"])]
    assert not differ
    # the set has right and wrong answers in every sub-dataset
    for kind in ("gpqa", "mmlu_pro", "math500", "aime"):
        grades = {g.correct for g, i in zip(graded, ITEMS) if kind in i["dataset"]}
        assert grades == {True, False}, kind


def test_think_block_draft_is_not_the_answer():
    out = "<think>\nMaybe \\boxed{7}.\n</think>\nThe answer is \\boxed{\\frac{1}{2}}."
    [g] = reasoning.grade("deepseek-r1", [out], ["0.5"], ["math500"])
    assert g.extracted == "\\frac{1}{2}" and g.correct


def test_score_per_dataset_mean_and_checker_line():
    graded = [reasoning.Graded("aime25", 1, True)] * 8 + [reasoning.Graded("math500", "x", False)] * 2
    s = reasoning.score("gpt-oss-120b", graded, [10] * 10)
    # aime25 counts once for its 8 repeats: (8/8) / (8/8 + 2) in percent
    assert s.exact_match == pytest.approx(100 / 3)
    assert s.per_dataset == {"aime25": (8, 8), "math500": (0, 2)}
    s = reasoning.score("deepseek-r1", graded, [10, 20] * 5)
    assert s.exact_match == pytest.approx(80.0) and s.tokens_per_sample == 15.0
    assert s.checker_line() == "{'exact_match': 80.0, 'tokens_per_sample': 15.0, 'num-samples': 10}"
    assert "aime25" in s.table()


def test_code_needs_a_runner_and_uses_its_verdicts():
    outs = ["```python\nprint(1)\n```", "no code here", "```python\nprint(2)\n```"]
    with pytest.raises(HarnessError, match="code runner"):
        reasoning.grade("deepseek-r1", outs, ["q1", "q2", "q3"], ["livecodebench"] * 3)
    seen = []

    def runner(pairs):
        seen.extend(pairs)
        return [code == "print(1)" for code, _ in pairs]

    graded = reasoning.grade("deepseek-r1", outs, ["q1", "q2", "q3"], ["livecodebench"] * 3, run_code=runner)
    assert seen == [("print(1)", "q1"), ("print(2)", "q3")]
    assert [g.correct for g in graded] == [True, False, False]


def test_unknown_dataset_is_refused():
    with pytest.raises(HarnessError, match="no grader for dataset 'trivia'"):
        reasoning.grade("deepseek-r1", ["x"], ["y"], ["trivia"])
