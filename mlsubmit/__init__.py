"""MLPerf submissions (submission.py): the benchmarks of each round as data (registry), the
MLCommons directory layout and accuracy-log truncation (layout), the system description and measurements.json (system), the runs that make up a
submission with their commands and time estimates (runs), and the checker's rules that can be
applied offline (check).

May import: common, inputs, accuracy, harness.
"""
