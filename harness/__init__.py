"""The LoadGen-facing core of a run: the SUT core shared by both scenarios (core), per-request
records and their latency metrics (records), LoadGen's own logs (loadgen_logs), checks of
user.conf / audit.config lines (loadgen_conf), system metrics sampled during the run (sysmetrics),
results.json / requests.csv (results), and the run's folder and signal handling around LoadGen's
test (runner).

May import: common, inputs, backends (the interface in backends.base).
"""
