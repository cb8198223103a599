"""Time to grade a full deepseek-r1 accuracy run's outputs by exact match, code execution apart.

    python benchmarks/reasoning_grading_speed.py            # 4,388 outputs of about 4,000 tokens

Writes nothing. The outputs are generated: a reasoning trace of about 16,000 characters (4,000
tokens at 4 characters a token) in a think block with draft answers, then a final answer, right
or wrong, in each sub-dataset's form. The mix of sub-datasets is an assumption, about the
reference set's (it does not ship here): MMLU-Pro 55%, MATH-500 12%, AIME 20%, GPQA 5%,
LiveCodeBench 8% (whose code is extracted but not run: run_code answers False at once).
MATH answers take fresh numbers each time (sympy caches what it simplified) and half of them need
sympy (equal or not only after simplification), the grader's slowest path.
"""
import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accuracy import reasoning  # noqa: E402

WORDS = ("so", "the", "sum", "of", "both", "terms", "is", "then", "we", "check", "again", "and", "x", "=", "2",
         "therefore", "wait", "let", "me", "reconsider", "\\frac{3}{4}", "+", "y^2", "(", ")", "which", "gives")
MIX = (("mmlu_pro", 0.55), ("math500", 0.12), ("aime", 0.20), ("gpqa", 0.05), ("livecodebench", 0.08))


def math_pair(rng: random.Random) -> tuple[str, str]:
    """(truth, boxed answer) with fresh numbers each time, so that sympy's cache does not help."""
    a, b = rng.randrange(2, 60), rng.randrange(2, 60)
    return rng.choice((
        (f"\\frac{{{a}}}{{{a + b}}}", f"\\boxed{{\\frac{{{a}}}{{{a + b}}}}}"),
        (f"{a}\\sqrt{{{b}}}", f"\\boxed{{\\sqrt{{{a * a * b}}}}}"),
        (f"(x+{a})^2", f"\\boxed{{x^2+{2 * a}x+{a * a + rng.randrange(2)}}}"),
        (str(a * b), f"\\boxed{{{a * b}}}"),
        (f"{a}\\pi", f"\\boxed{{{a}\\cdot\\pi}}"),
        (str(a), f"\\boxed{{\\frac{{{a * b}}}{{{b}}}}}")))


def trace(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def make(n: int, chars: int, seed: int):
    rng = random.Random(seed)
    outputs, truths, datasets = [], [], []
    names = [name for name, share in MIX for _ in range(round(share * 100))]
    for _ in range(n):
        ds = rng.choice(names)
        body = "<think>\n" + trace(rng, chars) + " maybe \\boxed{7}? ANSWER: B\n</think>\n\n"
        if ds in ("mmlu_pro", "gpqa"):
            truth = rng.choice("ABCD")
            answer, ds_name = f"ANSWER: {rng.choice('ABCD')}", ("mmlu_pro" if ds == "mmlu_pro" else "gpqa_diamond")
        elif ds == "math500":
            truth, answer = math_pair(rng)
            ds_name = ds
        elif ds == "aime":
            truth = str(rng.randrange(1000))
            answer, ds_name = f"\\boxed{{{rng.choice([truth, '17'])}}}", "aime1983"
        else:
            truth, answer, ds_name = f"q{rng.randrange(10**6)}", "```python\nprint(input())\n```", ds
        outputs.append(body + answer)
        truths.append(truth)
        datasets.append(ds_name)
    return outputs, truths, datasets


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--samples", type=int, default=4388)
    p.add_argument("--chars", type=int, default=16000, help="characters of each output (about 4 a token)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    outputs, truths, datasets = make(args.samples, args.chars, args.seed)
    start = time.perf_counter()
    graded = reasoning.grade("deepseek-r1", outputs, truths, datasets, run_code=lambda pairs: [False] * len(pairs))
    s = reasoning.score("deepseek-r1", graded, [args.chars // 4] * len(graded))
    took = time.perf_counter() - start
    print(s.table())
    print(f"graded {len(graded)} outputs of {args.chars} characters in {took:.1f} s "
          f"({1000 * took / len(graded):.2f} ms each), code execution apart")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
