"""Writes reasoning_outputs.json: model outputs we wrote to compare our exact-match grades with
the reference graders' (correct, wrong, malformed, no answer, several answers, unicode, think
blocks, Harmony channels). Run: python tests/data/make_reasoning_outputs.py"""
import json
from pathlib import Path

THINK = "<think>\nLet me work through this. Maybe the answer is {draft}? No, let me re-check.\n</think>\n\n"
H_ANALYSIS = "<|channel|>analysis<|message|>We need to think. Perhaps {draft}.<|end|><|start|>assistant"
H_FINAL = "<|channel|>final<|message|>{final}<|return|>"

items = []


def add(dataset, truth, output):
    items.append({"dataset": dataset, "ground_truth": truth, "model_output": output})


# multiple choice: GPQA (A-D), MMLU-Pro (A-J)
for ds, truth in (("gpqa_diamond", "C"), ("mmlu_pro", "H")):
    add(ds, truth, THINK.format(draft="A") + f"The evidence points one way.\n\nANSWER: {truth}")
    add(ds, truth, THINK.format(draft=truth) + "ANSWER: B")
    add(ds, truth, f"Final Answer: ({truth})")
    add(ds, truth, f"answer = {truth.lower()}")
    add(ds, truth, "I am not sure which one it is.")
    add(ds, truth, "")
    add(ds, truth, f"ANSWER: A\nOn reflection, FINAL ANSWER: {truth}")
    add(ds, truth, f"ANSWER: {truth}\nWait. FINAL ANSWER: A")
    add(ds, truth, f"Réponse: l'option {truth} est correcte — ANSWER: {truth} ✓")
    add(ds, truth, f"['ANSWER: {truth}']")
    add(ds, truth, "ANSWER: Z")
    add(ds, truth, f"The options are A and {truth}; I pick {truth}.")
    add(ds, truth, f"**ANSWER: {truth}**")
    add(ds, truth, H_ANALYSIS.format(draft="A") + H_FINAL.format(final=f"**{truth}**"))
    add(ds, truth, H_ANALYSIS.format(draft=truth) + H_FINAL.format(final="The answer is B."))
    add(ds, truth, H_ANALYSIS.format(draft="B") + H_FINAL.format(final=f"Answer: {truth}"))
    add(ds, truth, H_ANALYSIS.format(draft=f"ANSWER: {truth}") + "<|channel|>final 明<|message|>so it is not clear")
    add(ds, truth, f"ANSWER:{truth}.")

# MATH-500: boxed answers, normalized and compared by the MATH grader
math_cases = [
    ("\\frac{1}{2}", ["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{\\dfrac12}", "\\boxed{2/4}",
                      "\\boxed{\\frac{2}{4}}", "\\boxed{\\frac{1}{3}}", "\\boxed{\\frac{1}{2}", "no box at all"]),
    ("10", ["\\boxed{10}", "\\boxed{10.0}", "\\boxed{10\\text{ cm}}", "\\boxed{x = 10}", "\\boxed{9.99999999}",
            "\\boxed{\\$10}", "\\boxed{10^\\circ}", "\\boxed{5+5}", "\\boxed{ten}", "\\boxed{}"]),
    ("(3, -1)", ["\\boxed{(3,-1)}", "\\boxed{\\left( 3, -1 \\right)}", "\\boxed{[3,-1]}", "\\boxed{(-1,3)}",
                 "\\boxed{3,-1}"]),
    ("2\\sqrt{2}", ["\\boxed{2\\sqrt{2}}", "\\boxed{\\sqrt{8}}", "\\boxed{2\\sqrt2}", "\\boxed{2.828}",
                    "\\boxed{\\sqrt{2}\\cdot 2}"]),
    ("\\pi", ["\\boxed{\\pi}", "\\boxed{π}", "\\boxed{3.14159}", "\\boxed{\\frac{2\\pi}{2}}"]),
    ("1,000,000", ["\\boxed{1000000}", "\\boxed{1,000,000}", "\\boxed{10^6}", "\\boxed{1 million}"]),
    ("\\text{Monday}", ["\\boxed{\\text{Monday}}", "\\boxed{monday}", "\\boxed{\\text{Tuesday}}"]),
    ("x^2+2x+1", ["\\boxed{(x+1)^2}", "\\boxed{x^2 + 2x + 1}", "\\boxed{x^{2}+2x+1}"]),
    ("5\\%", ["\\boxed{5\\%}", "\\boxed{5}", "\\boxed{0.05}"]),
    ("[-2, 3)", ["\\boxed{[-2,3)}", "\\boxed{(-2,3)}", "\\boxed{-2 \\le x < 3}"]),
    ("3 \\frac{1}{4}", ["\\boxed{3\\frac14}", "\\boxed{\\frac{13}{4}}", "\\boxed{3.25}"]),
]
for truth, answers in math_cases:
    for answer in answers:
        add("math500", truth, THINK.format(draft="\\boxed{7}") + "So the answer is " + answer + ".")
add("math500", "4", "\\boxed{3} first, then corrected: \\boxed{4}")
add("math500", "4", "\\boxed{4} first, then changed my mind: \\boxed{3}")
add("math500", "4", "")
add("math500", "4", "\\boxed{\\boxed{4}}")
add("math500", "4", H_ANALYSIS.format(draft="\\boxed{3}") + H_FINAL.format(final="\\boxed{4}"))
add("math500", "\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}")
add("math500", "\\frac{\\sqrt{3}}{2}", "\\boxed{\\sin 60^\\circ}")

# AIME: integers 0-999, boxed first, else "Answer: N"
for truth in ("42", "7", "0"):
    add("aime2024", truth, THINK.format(draft="\\boxed{100}") + f"\\boxed{{{truth}}}")
    add("aime2024", truth, f"Answer: {truth}")
    add("aime2024", truth, f"answer:   {int(truth):03d}")
    add("aime2024", truth, f"Answer: {truth}.5")
    add("aime2024", truth, f"\\boxed{{{truth}}} and then Answer: 999")
    add("aime2024", truth, "Answer: 1000")
    add("aime2024", truth, "\\boxed{1000}")
    add("aime2024", truth, "\\boxed{-5}")
    add("aime2024", truth, "The answer is forty-two.")
    add("aime2024", truth, f"\\boxed{{ {truth} }}")
    add("aime2024", truth, f"答案: Answer: {truth}")
    add("aime25", truth, H_ANALYSIS.format(draft="\\boxed{100}") + H_FINAL.format(final=f"\\boxed{{{truth}}}"))

Path(__file__).with_name("reasoning_outputs.json").write_text(json.dumps(items, ensure_ascii=False, indent=0) + "\n")
print(len(items), "outputs")
