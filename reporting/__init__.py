"""Over finished runs: the HTML report (report) and its matplotlib charts (charts), several
configurations run and compared side by side (compare), throughput-latency sweeps (sweep). Each
reads results.json and requests.csv; runs are made by calling main.py in a subprocess.

May import: common, inputs, harness.
"""
