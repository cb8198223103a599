"""Scoring generated text: ROUGE-1/2/L/Lsum (rouge), offline sentence splitting for ROUGE-Lsum
(sentences), reading mlperf_log_accuracy.json (mlperf_log), and accuracy targets per model with
the submission checker's pass rule (targets); exact match of the reasoning benchmarks
(reasoning) with the MATH grader's answer equality (math_grade), and the sandbox that runs
model-written programs against their tests (sandbox).

May import: common.
"""
