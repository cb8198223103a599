"""Writes the reasoning demo sets (deepseek-r1.jsonl, gpt-oss-120b.jsonl): a few questions of each
sub-dataset, written for this project, in the references' columns. Run: python make_demo.py"""
import json
from pathlib import Path

MC = ("Answer the following multiple choice question. The last line of your response should be of "
      "the form 'ANSWER: $LETTER'.\n\n{q}\n\n{opts}")
MATH = "{q}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
CODE = ("Write a Python program that reads from standard input and writes to standard output.\n\n{q}\n\n"
        "Put the program in a ```python code block.")


def opts(choices):
    return "\n".join(f"{chr(65 + i)}) {c}" for i, c in enumerate(choices))


def rows(benchmark):
    aime, gpqa, lcb = ("aime25", "gpqa_diamond", "livecodebench_v6") if benchmark == "gpt-oss-120b" else \
        ("aime1983", "gpqa", "livecodebench")
    out = [
        (gpqa, MC.format(q="Which particle mediates the electromagnetic force?",
                         opts=opts(["gluon", "W boson", "photon", "graviton"])), "C", None),
        (gpqa, MC.format(q="What is the oxidation state of Mn in KMnO4?", opts=opts(["+2", "+4", "+6", "+7"])),
         "D", None),
        ("mmlu_pro", MC.format(q="Which planet has the shortest year?",
                               opts=opts(["Venus", "Mercury", "Earth", "Mars", "Jupiter", "Saturn", "Uranus",
                                          "Neptune", "Pluto", "Ceres"])), "B", None),
        ("mmlu_pro", MC.format(q="What is 12 squared?",
                               opts=opts(["124", "132", "144", "154", "164", "112", "121", "169", "196", "100"])),
         "C", None),
        ("math500", MATH.format(q="Simplify $\\frac{6}{8}$."), "\\frac{3}{4}", None),
        ("math500", MATH.format(q="Find the positive root of $x^2 = 2$."), "\\sqrt{2}", None),
        (aime, MATH.format(q="How many positive divisors does 360 have?"), "24", None),
        (aime, MATH.format(q="What is the remainder when $2^{10}$ is divided by 1000?"), "24", None),
        (lcb, CODE.format(q="Read two integers a and b on one line and print their sum."), "demo_sum",
         [{"input": "1 2\n", "output": "3\n"}, {"input": "-5 5\n", "output": "0\n"}]),
        (lcb, CODE.format(q="Read a line and print it reversed."), "demo_reverse",
         [{"input": "abc\n", "output": "cba\n"}, {"input": "héllo\n", "output": "olléh\n"}]),
    ]
    return [{"dataset": ds, "question": text.split("\n")[0], "text_input": text, "ground_truth": truth,
             "tests": json.dumps(tests) if tests else None} for ds, text, truth, tests in out]


for bench in ("deepseek-r1", "gpt-oss-120b"):
    path = Path(__file__).with_name(f"{bench}.jsonl")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(bench)))
    print(path.name)
