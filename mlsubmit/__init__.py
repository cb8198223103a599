"""MLPerf submissions (submission.py): the benchmarks of each round as data (registry), what
will break the round's rules before any run (preflight), the MLCommons directory layout and
accuracy-log truncation (layout), the system description and measurements.json (system), the
runs that make up a submission with their commands and time estimates (runs), and the official
checker's rules (check).

May import: common, inputs, accuracy, harness.
"""
