"""Writes openorca_format_pandas2.0.3_numpy1.24.pkl: six rows in the processed OpenOrca columns,
pickled by the pandas/numpy generation that wrote the MLPerf reference's files (numpy.core.*,
pandas.core.frame.DataFrame, object-dtype strings). tests/test_tables.py reads it with today's pandas.

    pip install --target /tmp/oldpd pandas==2.0.3 numpy==1.24.4 python-dateutil pytz six
    PYTHONPATH=/tmp/oldpd python -s tests/data/make_openorca_format_pickle.py tests/data/openorca_format_pandas2.0.3_numpy1.24.pkl
"""
import sys

import pandas as pd

ORIGINS = ("cot", "flan", "niv", "t0")


def rows():
    return [{"id": f"{ORIGINS[i % 4]}.{i}", "system_prompt": "" if i % 2 else "You are helpful.", "question": f"q{i}",
             "output": f"answer {i}", "input": f"[INST] q{i} [/INST]", "tok_input": [1, 518, 25580 + i, 29962, 29871],
             "tok_output": [1, 1234 + i, 29889], "origin": ORIGINS[i % 4], "tok_input_length": 5,
             "tok_output_length": 3} for i in range(6)]


if __name__ == "__main__":
    print(pd.__version__)
    pd.DataFrame(rows()).to_pickle(sys.argv[1])
